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

The CUDA build tier (``make test-cuda``, no GPU needed) adds one more, made from llama-build with ``docker build``:

- ``jetsim/llama-build-cuda:<CUDA>``: llama-build plus a CUDA toolkit laid out as /usr/local/cuda (bin/nvcc, nvvm,
  include, lib64, and a driver stub lib64/stubs/libcuda.so generated from cuda.h), assembled from NVIDIA's PyPI
  wheels; like JetPack's images it does not put nvcc on PATH.

Its runtime base is the plain ``jetsim/llama-runtime`` image, as ubuntu:22.04 is on a real fleet: the role's
Dockerfile takes the CUDA runtime libraries (cudart, cublas, cublasLt) from the builder's toolkit into a layer of
their own.

The CUDA is 13.0 Update 2, not JetPack 6.2's 12.6: PyPI's CUDA 12.x ``nvidia-cuda-nvcc-cu12`` wheels (12.6.68,
12.6.85, up to 12.9.86) carry only ptxas, libnvvm and headers: no nvcc driver, cicc, fatbinary, nvlink or
cudafe++, so nothing compiles with them; CUDA 13's split wheels (nvidia-cuda-nvcc, nvidia-nvvm, nvidia-cuda-crt)
are complete. 13.0 still compiles for sm_87 (Orin). The wheels are downloaded once into ``cache_dir``/cuda-wheels.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
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


# ------------------------------------------------------------------------------------------ the CUDA tier

CUDA_VERSION = "13.0.2"
# The wheels of PyPI's cuda-toolkit==13.0.2 meta-package (its extras nvcc, nvvm, crt, cccl, cudart, cublas).
CUDA_WHEELS: dict[str, str] = {
    "nvidia-cuda-nvcc": "13.0.88",
    "nvidia-nvvm": "13.0.88",
    "nvidia-cuda-crt": "13.0.88",
    "nvidia-cuda-cccl": "13.0.85",
    "nvidia-cuda-runtime": "13.0.96",
    "nvidia-cublas": "13.1.0.3",
}
CUDA_RECIPE_VERSION = 1
CUDA_IMAGES: dict[str, str] = {"llama-build-cuda": f"jetsim/llama-build-cuda:{CUDA_VERSION}"}
# What the role's runtime stage takes from this toolkit (its soname files; the wheels ship no further version).
RUNTIME_LIBRARIES = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13")

# The driver stub: every function cuda.h declares, returning CUDA_ERROR_STUB_LIBRARY (34) like NVIDIA's stub, under
# the driver's soname. Link against it; at run time the real driver (or, without a GPU, this stub) answers.
CUDA_BUILD_DOCKERFILE = f"""FROM {IMAGES["llama-build"]}
ADD cuda.tar /usr/local/
RUN set -eu; mkdir -p /usr/local/cuda/lib64/stubs; \\
    gcc -E -P -I/usr/local/cuda/include /usr/local/cuda/include/cuda.h \\
      | grep -oE '\\bcu[A-Z][A-Za-z0-9_]* *\\(' | tr -d ' (' | sort -u \\
      | awk '{{print "int " $1 "(void) {{ return 34; }}"}}' > /tmp/stub.c; \\
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o /usr/local/cuda/lib64/stubs/libcuda.so /tmp/stub.c; \\
    rm /tmp/stub.c; /usr/local/cuda/bin/nvcc --version; \\
    nm -D /usr/local/cuda/lib64/stubs/libcuda.so | grep -q ' T cuInit$'
LABEL io.jetson-llm-fleet.jetsim.cuda="{CUDA_VERSION}"
"""


def cuda_recipe_hash() -> str:
    recipe = {"wheels": CUDA_WHEELS, "v": CUDA_RECIPE_VERSION, "build": CUDA_BUILD_DOCKERFILE}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def cuda_wheels(cache_dir: Path) -> list[Path]:
    """The CUDA wheels, downloaded once (pip, from the package index) into cache_dir/cuda-wheels."""
    directory = Path(cache_dir) / "cuda-wheels"
    directory.mkdir(parents=True, exist_ok=True)
    wheels = []
    for name, version in CUDA_WHEELS.items():
        pattern = f"{name.replace('-', '_')}-{version}-*.whl"
        found = sorted(directory.glob(pattern))
        if not found:
            harness.log(f"pip download {name}=={version}")
            harness.sh(
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                "--dest", str(directory), f"{name}=={version}",
            )  # fmt: skip
            found = sorted(directory.glob(pattern))
        if not found:
            raise harness.JetsimError(f"pip download {name}=={version} left no {pattern} in {directory}")
        wheels.append(found[-1])
    return wheels


def _extract_wheel(wheel: Path, root: Path) -> None:
    """The wheel's nvidia/cu13/... files under root/ (bin, include, lib -> lib64, nvvm), modes kept."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            parts = Path(info.filename).parts
            if len(parts) < 4 or parts[:2] != ("nvidia", "cu13") or info.is_dir() or parts[-1] == "__init__.py":
                continue
            relative = Path("lib64", *parts[3:]) if parts[2] == "lib" else Path(*parts[2:])
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(mode or (0o755 if parts[2] == "bin" or "/bin/" in info.filename else 0o644))


def cuda_tree_tarball(cache_dir: Path) -> Path:
    """cuda/ (the toolkit as /usr/local/cuda lays it out) packed as a tar under cache_dir; made once."""
    cache_dir = Path(cache_dir)
    tarball = cache_dir / f"cuda-{CUDA_VERSION}-{cuda_recipe_hash()}.tar"
    if tarball.exists():
        return tarball
    wheels = cuda_wheels(cache_dir)
    work = cache_dir / f"cuda-{cuda_recipe_hash()}.work"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "cuda"
    for wheel in wheels:
        _extract_wheel(wheel, root)
    for library in sorted((root / "lib64").glob("lib*.so.*")):  # libcudart.so -> libcudart.so.13, for the linker
        plain = library.with_name(library.name.split(".so.")[0] + ".so")
        if not plain.exists():
            plain.symlink_to(library.name)
    (root / "lib").symlink_to("lib64")
    for tool in (root / "bin").iterdir():
        if tool.is_file():
            tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    missing = [
        p
        for p in ("bin/nvcc", "nvvm/bin/cicc", "include/cuda_runtime.h", "lib64/libcublas.so")
        if not (root / p).exists()
    ]
    if missing:
        raise harness.JetsimError(f"the CUDA wheels lack {missing}: not a toolkit that compiles")
    partial = tarball.with_suffix(".partial")
    with tarfile.open(partial, "w") as archive:
        archive.add(root, arcname="cuda")
    partial.rename(tarball)
    shutil.rmtree(work, ignore_errors=True)
    harness.log(f"CUDA {CUDA_VERSION} tree ready: {tarball.name} ({tarball.stat().st_size >> 20} MiB)")
    return tarball


def _docker_build(docker: harness.Docker, tag: str, dockerfile: str, context: Path) -> None:
    (context / "Dockerfile").write_text(dockerfile)
    proc = subprocess.run(
        ["docker", "build", "--network=none", "--tag", tag, str(context)],
        capture_output=True, text=True, env=docker.env,
    )  # fmt: skip
    if proc.returncode != 0:
        raise harness.JetsimError(f"docker build {tag} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")


def ensure_cuda_images(docker: harness.Docker, cache_dir: Path) -> dict[str, str]:
    """The CUDA tier's builder base in the daemon behind ``docker`` (made when absent), with the plain bases."""
    cache_dir = Path(cache_dir)
    ensure_images(docker, cache_dir)
    label = '{{ index .Config.Labels "io.jetson-llm-fleet.jetsim.cuda-recipe" }}'
    wanted = cuda_recipe_hash()
    for name, dockerfile in (("llama-build-cuda", CUDA_BUILD_DOCKERFILE),):
        tag = CUDA_IMAGES[name]
        if docker.ok("image", "inspect", tag) and docker("image", "inspect", "--format", label, tag).strip() == wanted:
            continue
        context = cache_dir / f"{name}.context"
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        if name == "llama-build-cuda":
            (context / "cuda.tar").hardlink_to(cuda_tree_tarball(cache_dir))
        harness.log(f"building {tag}")
        _docker_build(docker, tag, dockerfile + f'LABEL io.jetson-llm-fleet.jetsim.cuda-recipe="{wanted}"\n', context)
        shutil.rmtree(context, ignore_errors=True)
    return {**CUDA_IMAGES, "llama-runtime": IMAGES["llama-runtime"]}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else harness.CACHE
    for recipe, path in build_base_tarballs(target).items():
        print(f"{recipe}\t{IMAGES[recipe]}\t{path}\t{path.stat().st_size}")
