"""Base images for building and running llama.cpp inside jetsim's emulated Jetsons (test fixture only).

A real Orin builds llama.cpp on a JetPack 6 CUDA devel image and runs it on an L4T runtime image. jetsim hosts are
x86_64/aarch64 containers without a GPU and without a way out to a registry, so they get two small Debian images
made here instead, imported under the names the role's variables then point at:

- ``jetsim/llama-build:bookworm``   (``llama_cpp_build_base_image``): a compiler, CMake, ccache and git, no CUDA;
- ``jetsim/llama-runtime:bookworm`` (``llama_cpp_build_runtime_image``): the libraries a static llama-server needs
  (libgomp, libstdc++) plus curl for a health check.

Each is a debootstrap ``minbase`` tarball, made the way ``harness.ensure_rootfs`` makes the host rootfs, cached under
``cache_dir`` by a hash of its recipe (suite, variant, package list, recipe version), so a changed recipe makes a new
tarball and an unchanged one is made once. Inside a host (whose dockerd is the host's own):
``docker import TARBALL jetsim/llama-build:bookworm`` (``import_command``), or ``ensure_images`` against any daemon.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

SUITE = harness.SUITE
VARIANT = "minbase"
RECIPE_VERSION = 2  # 2: documentation, manual pages and translations trimmed
TRIMMED = ("usr/share/man", "usr/share/info", "usr/share/locale")

RECIPES: dict[str, list[str]] = {
    "llama-build": ["build-essential", "cmake", "ccache", "git", "pkg-config", "ca-certificates", "libgomp1"],
    "llama-runtime": ["libgomp1", "libstdc++6", "curl", "ca-certificates"],
}
IMAGES: dict[str, str] = {name: f"jetsim/{name}:{SUITE}" for name in RECIPES}
# Image config that `docker import` cannot take from a tarball; applied with --change.
IMPORT_CHANGES = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8"]


def recipe_hash(name: str) -> str:
    recipe = {"name": name, "suite": SUITE, "variant": VARIANT, "include": sorted(RECIPES[name]), "v": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def tarball_path(name: str, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"{name}-{SUITE}-{recipe_hash(name)}.tar"


def build_base_tarball(name: str, cache_dir: Path) -> Path:
    """The debootstrap tarball for one recipe; made (minutes) only when the cache lacks it."""
    tarball = tarball_path(name, cache_dir)
    if tarball.exists():
        return tarball
    harness.ensure_system_packages()
    cache_dir = Path(cache_dir)
    work = cache_dir / f"{name}-{recipe_hash(name)}.work"
    harness._unmount_under(work)
    shutil.rmtree(work, ignore_errors=True)
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    harness.log(f"debootstrap {SUITE} for {name} (cached afterwards as {tarball.name})")
    started = time.monotonic()
    harness.sh(
        "debootstrap", f"--variant={VARIANT}", f"--include={','.join(RECIPES[name])}",
        f"--cache-dir={debs}", SUITE, str(work), harness._apt_mirror(),
    )  # fmt: skip
    # Leave no .debs or package lists behind: they would only make the image bigger.
    shutil.rmtree(work / "var/cache/apt/archives", ignore_errors=True)
    (work / "var/cache/apt/archives/partial").mkdir(parents=True)
    for lists in (work / "var/lib/apt/lists").glob("*_Packages"):
        lists.unlink()
    # Nobody reads documentation inside these images: about a third of the runtime image (copyright files stay).
    for directory in TRIMMED:
        shutil.rmtree(work / directory, ignore_errors=True)
        (work / directory).mkdir(parents=True)
    for package in (work / "usr/share/doc").iterdir():
        if package.is_symlink() or not package.is_dir():
            continue
        for path in package.iterdir():
            if path.name != "copyright":
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    partial = tarball.with_suffix(".partial")
    harness.sh("tar", "--numeric-owner", "-C", str(work), "-cf", str(partial), ".")
    partial.rename(tarball)
    shutil.rmtree(work, ignore_errors=True)
    harness.log(f"{name} rootfs ready in {time.monotonic() - started:.0f} s ({tarball.stat().st_size >> 20} MiB)")
    return tarball


def build_base_tarballs(cache_dir: Path) -> dict[str, Path]:
    """Both tarballs, name -> path (``llama-build``, ``llama-runtime``)."""
    return {name: build_base_tarball(name, Path(cache_dir)) for name in RECIPES}


def import_command(name: str, tarball: Path) -> list[str]:
    """argv (after ``docker``) that imports one tarball under its jetsim image name."""
    args = ["import"]
    for change in IMPORT_CHANGES:
        args += ["--change", change]
    return [*args, str(tarball), IMAGES[name]]


def ensure_images(docker: harness.Docker, cache_dir: Path) -> dict[str, str]:
    """Import both images into the daemon behind ``docker`` unless it has them; name -> image reference."""
    tarballs = build_base_tarballs(cache_dir)
    for name, tarball in tarballs.items():
        if not docker.ok("image", "inspect", IMAGES[name]):
            harness.log(f"importing {tarball.name} as {IMAGES[name]}")
            docker(*import_command(name, tarball))
    return dict(IMAGES)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else harness.CACHE
    for recipe, path in build_base_tarballs(target).items():
        print(f"{recipe}\t{IMAGES[recipe]}\t{path}\t{path.stat().st_size}")
