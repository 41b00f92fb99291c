"""The CUDA build tier (``make test-cuda``): the CUDA branch of llama_cpp_build compiled and checked, no GPU needed.

The role runs unchanged with ``llama_cpp_build_cuda: true`` and ``llama_cpp_build_cuda_architectures: "87"`` on
this machine as the build host (connection local; Docker is jetsim's daemon), on the CUDA builder/runtime bases of
tests/jetsim/llama_images.py. This machine is x86_64 and the boards are aarch64: the image built here is an x86
image whose device code is compiled for sm_87. That proves the CUDA branch configures, compiles, links and verifies;
the aarch64 image comes from a Jetson build host (or a GPU machine, tests/gpu/check.sh).

Not part of ``make test``: a cold CUDA compile on 2 cores is long. The compile runs at nice 19 (the machine is
shared). ccache lives in the BuildKit cache mount of jetsim's daemon, whose data root is in the cache dir
(~/.cache/jetson-llm-fleet/jetsim/docker), so a later run is warm. Times go to ~/.cache/jetson-llm-fleet/cuda-tier/
times.json and are printed.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests/jetsim"), str(REPO / "tests/fixtures")]

import harness  # noqa: E402
import llama_images  # noqa: E402
import llama_src  # noqa: E402

WORK = harness.CACHE.parent / "cuda-tier"
IMAGE_REPO = "jetson-llm-fleet/llama-server"
HITS = re.compile(r"^\s*(?:#\d+ [\d.]+ )?\s*Hits:\s+(\d+)\s*/\s*(\d+)", re.M)  # ccache --show-stats, in BuildKit lines
TIMES: dict[str, float] = {}
BUILT: dict[str, str] = {}  # "cold" / "warm" -> image tag
GIB = 1 << 30


@dataclass
class Tier:
    docker: harness.Docker
    inventory: Path
    variables: Path


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _renice_builds(stop: threading.Event) -> None:
    """Keep the CUDA compile (build-llama.sh --backend cuda, run by dockerd, not by us) and its children at nice 19."""
    while not stop.wait(2):
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"build-llama.sh") for a in argv) and b"cuda" in argv and b"--src" in argv:
                for pid in _descendants(int(cmdline.parent.name)):
                    try:
                        if os.getpriority(os.PRIO_PROCESS, pid) < 19:
                            os.setpriority(os.PRIO_PROCESS, pid, 19)
                    except OSError:
                        pass


@pytest.fixture(scope="module")
def tier() -> Iterator[Tier]:
    docker = harness.ensure_daemon()
    started = time.monotonic()
    with harness.cache_lock():
        images = llama_images.ensure_cuda_images(docker, harness.CACHE)
    TIMES["cuda bases (wheels, toolkit tree, two images)"] = round(time.monotonic() - started, 1)
    mirror = llama_src.ensure_llama_cpp_mirror(harness.CACHE.parent / "llama-src")
    WORK.mkdir(parents=True, exist_ok=True)
    variables = {
        "llama_cpp_build_repo_url": str(mirror.repo),
        "llama_cpp_build_ref": mirror.tag,
        "llama_cpp_build_cuda": True,
        "llama_cpp_build_cuda_architectures": "87",
        "llama_cpp_build_base_image": images["llama-build-cuda"],
        "llama_cpp_build_runtime_image": images["llama-runtime"],  # plain: the CUDA libraries come from the builder
        "llama_cpp_build_verify_runtime": "",  # no NVIDIA runtime, no driver: the version recorded via the stub
        "llama_cpp_build_dir": str(WORK / "build"),
        "llama_cpp_build_controller_cache_dir": str(WORK / "llama.cpp"),
    }
    (WORK / "vars.json").write_text(json.dumps(variables, indent=2))
    inventory = WORK / "inventory.yml"
    inventory.write_text(
        "cuda_builder:\n  hosts:\n    cuda-builder:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    stop = threading.Event()
    renicer = threading.Thread(target=_renice_builds, args=(stop,), daemon=True)
    renicer.start()
    # `jetsim down` stops jetsim's private dockerd when no container of any fleet is left, which would cut a build
    # that runs for an hour: a placeholder container of the fleet "cuda-tier" keeps the daemon up meanwhile.
    holder = f"jetsim-cuda-tier-{os.getpid()}"
    docker("run", "-d", "--rm", "--name", holder, "--label", "jetsim.fleet=cuda-tier", "--network=none",
           llama_images.IMAGES["llama-runtime"], "sleep", "infinity")  # fmt: skip
    try:
        yield Tier(docker, inventory, WORK / "vars.json")
    finally:
        stop.set()
        renicer.join()
        docker("rm", "-f", holder, check=False)
        times = {**json.loads((WORK / "times.json").read_text()), **TIMES} if (WORK / "times.json").exists() else TIMES
        (WORK / "times.json").write_text(json.dumps(times, indent=2) + "\n")
        print("\nCUDA tier times (s):", json.dumps(TIMES, indent=2))


def docker_client_dir() -> str:
    """A directory whose `docker` can build with BuildKit: Docker 23+ clients need the buildx plugin for it, the
    20.10 client (Debian's docker.io, as on jetsim hosts) has it built in."""
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0:
        return ""
    bindir = WORK / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    if not (bindir / "docker").exists() and Path("/usr/bin/docker").exists():
        (bindir / "docker").symlink_to("/usr/bin/docker")
    return f"{bindir}:"


def build(tier: Tier, label: str, *extra: str) -> str:
    path = f"{docker_client_dir()}{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "DOCKER_HOST": tier.docker.host, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "PATH": path}  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(
        ["nice", "-n", "19", "ansible-playbook", "-v", "-i", str(tier.inventory), "tests/cuda/build.yml",
         "-e", f"@{tier.variables}", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=3 * 3600,
    )  # fmt: skip
    TIMES[label] = round(time.monotonic() - started, 1)
    (WORK / f"{label.split()[0]}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
    return proc.stdout


def newest_image(tier: Tier) -> str:
    out = tier.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO)
    return out.splitlines()[0]


def test_cold_cuda_build_through_the_role(tier: Tier, tmp_path: Path) -> None:
    base = llama_images.CUDA_IMAGES["llama-build-cuda"]
    # Like JetPack's images the base has nvcc only in /usr/local/cuda/bin: the Dockerfile must find it.
    assert not tier.docker.ok("run", "--rm", "--network=none", base, "sh", "-c", "command -v nvcc")

    build(tier, "cold build (role, CUDA, sm_87)")

    image = BUILT["cold"] = newest_image(tier)
    labels = json.loads(tier.docker("image", "inspect", "--format", "{{json .Config.Labels}}", image))
    assert labels["io.jetson-llm-fleet.backend"] == "cuda"
    recorded = tier.docker(
        "run", "--rm", "--network=none", "--entrypoint", "cat", image,
        "/usr/local/share/llama.cpp/build-config.txt", "/usr/local/share/llama.cpp/build-info.txt",
    )  # fmt: skip
    assert "backend: cuda" in recorded and "GGML_CUDA:BOOL=ON" in recorded, recorded
    assert re.search(r"^CMAKE_CUDA_ARCHITECTURES:\w+=87$", recorded, re.M), recorded
    assert re.search(r"^CMAKE_CUDA_COMPILER:\w+=/usr/local/cuda/bin/nvcc$", recorded, re.M), recorded  # nvcc found
    assert "needed: libcuda.so.1" in recorded and "needed: libcublas.so.13" in recorded, recorded
    assert "(build 11312, commit 0c1e57098)" in recorded, recorded  # --version ran at build time, through the stub
    # The binary carries the CUDA backend (read here with the host's nm, since the runtime image has none).
    container = tier.docker("create", image).strip()
    try:
        tier.docker("cp", f"{container}:/usr/local/bin/llama-server", str(tmp_path / "llama-server"))
    finally:
        tier.docker("rm", container)
    symbols = subprocess.run(["nm", str(tmp_path / "llama-server")], capture_output=True, text=True, check=True)
    assert re.search(r" T ggml_backend_cuda_reg$", symbols.stdout, re.M)
    # The runtime stage's ldd check: everything but the driver resolves in the runtime image.
    ldd = tier.docker("run", "--rm", "--network=none", "--entrypoint", "ldd", image, "/usr/local/bin/llama-server")
    assert [line.split()[0] for line in ldd.splitlines() if "not found" in line] == ["libcuda.so.1"], ldd
    sizes = tier.docker("image", "inspect", "--format", "{{.Size}}", image).strip()
    TIMES["image bytes (CUDA, x86 tier)"] = float(sizes)


def test_warm_rebuild_comes_from_ccache(tier: Tier) -> None:
    # A flag CMake ignores: a new image tag, the same objects: the ccache in the daemon's cache mount serves them.
    nonce = json.dumps({"llama_cpp_build_cmake_flags": [f"-DJETSIM_TEST_NONCE={uuid.uuid4().hex[:8]}"]})

    output = build(tier, "warm rebuild (new flags digest, ccache)", "-e", nonce)
    BUILT["warm"] = newest_image(tier)
    assert BUILT["warm"] != BUILT.get("cold"), "the new flags made no new image"

    hits = [(int(a), int(b)) for a, b in HITS.findall(output.replace("\\n", "\n"))]
    assert hits, "no ccache statistics in the build output"
    hit, total = hits[-1]
    assert total > 100 and hit / total > 0.9, hits


def saved_layers(tier: Tier, image: str, directory: Path) -> list[dict[str, object]]:
    """The image's layers, base first: diff id, files, bytes on disk and gzip bytes (what a registry would move)."""
    archive = directory / "image.tar"
    tier.docker("save", "--output", str(archive), image)
    layers = []
    with tarfile.open(archive) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        diff_ids = json.load(saved.extractfile(manifest["Config"]))["rootfs"]["diff_ids"]  # type: ignore[arg-type]
        for name, diff_id in zip(manifest["Layers"], diff_ids, strict=True):
            member = saved.getmember(name)
            while member.issym() or member.islnk():  # Docker 25+ saves OCI layouts with links to blobs/
                member = saved.getmember(
                    str(Path(name).parent / member.linkname) if member.issym() else member.linkname
                )
            source = saved.extractfile(member)
            assert source is not None
            counter = _Counter()
            with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6, mtime=0) as packed:
                shutil.copyfileobj(source, packed, 1 << 20)
            source = saved.extractfile(member)
            with tarfile.open(fileobj=source) as layer:
                files = [m.name.lstrip("./") for m in layer.getmembers() if not m.isdir()]
            layers.append({"diff_id": diff_id, "files": files, "bytes": member.size, "gzip": counter.count})
    archive.unlink()
    return layers


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def test_layers_base_then_cuda_libraries_then_llama_cpp(tier: Tier, tmp_path: Path) -> None:
    """Issue 12.2: a slim runtime image whose llama.cpp upgrade moves only its own layers."""
    if "cold" not in BUILT or "warm" not in BUILT:
        pytest.skip("needs both builds")
    base = json.loads(
        tier.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", llama_images.IMAGES["llama-runtime"])
    )
    old, new = (saved_layers(tier, BUILT[key], tmp_path) for key in ("cold", "warm"))

    assert [layer["diff_id"] for layer in new[: len(base)]] == base  # 1. the plain base userland, untouched
    cuda = [i for i, layer in enumerate(new) if any("usr/local/cuda/" in f for f in layer["files"])]  # type: ignore[attr-defined]
    binaries = [i for i, layer in enumerate(new) if "usr/local/bin/llama-server" in layer["files"]]  # type: ignore[operator]
    assert cuda == [len(base)], "the CUDA libraries are not one layer right above the base"
    assert binaries and binaries[0] > cuda[0], "the llama.cpp binaries are not above the CUDA libraries"
    libraries = sorted(Path(f).name for f in new[cuda[0]]["files"] if "usr/local/cuda/" in f)  # type: ignore[attr-defined]
    assert libraries == sorted(llama_images.RUNTIME_LIBRARIES), libraries  # cudart, cublas, cublasLt: nothing else
    # The same layer, byte for byte, in a build with other flags: a device that has it does not fetch it again.
    assert new[cuda[0]]["diff_id"] == old[cuda[0]]["diff_id"]
    everything = [f for layer in new for f in layer["files"]]  # type: ignore[attr-defined]
    toolkit = [
        f
        for f in everything
        if re.search(r"(^|/)(nvcc|cicc|ptxas|cuda_runtime\.h|libcudnn\S*|libnvinfer\S*|libnvrtc\S*)$", f)
    ]
    assert not toolkit, toolkit  # no toolkit, no cuDNN, no TensorRT in the runtime image
    on_disk = int(tier.docker("image", "inspect", "--format", "{{.Size}}", BUILT["warm"]).strip())
    first = sum(int(layer["gzip"]) for layer in new)  # type: ignore[call-overload]
    # What this rebuild moved (only the layers whose bytes changed; an unchanged compile can leave the binaries
    # identical) and what any llama.cpp upgrade moves at most: every layer above the CUDA libraries.
    moved = sum(int(layer["gzip"]) for layer in new if layer["diff_id"] not in {o["diff_id"] for o in old})  # type: ignore[call-overload]
    upgrade = sum(int(layer["gzip"]) for layer in new[cuda[0] + 1 :])  # type: ignore[call-overload]
    sizes = {
        "image bytes on disk (CUDA)": on_disk,
        "layers (gzip bytes, base first)": [int(layer["gzip"]) for layer in new],  # type: ignore[call-overload]
        "layers (tar bytes, base first)": [int(layer["bytes"]) for layer in new],  # type: ignore[call-overload]
        "first install, bytes moved (gzip)": first,
        "this rebuild (new flags), bytes moved (gzip)": moved,
        "llama.cpp upgrade, bytes moved at most (gzip, layers above the CUDA libraries)": upgrade,
    }
    print("\nCUDA image sizes:", json.dumps(sizes, indent=2))
    (WORK / "sizes.json").write_text(json.dumps(sizes, indent=2) + "\n")
    assert on_disk < GIB, sizes
    assert upgrade < 100 * 1000 * 1000, sizes


@pytest.fixture(scope="module", autouse=True)
def _needs_root_and_tools() -> None:
    if os.geteuid() != 0 or not shutil.which("nice"):
        pytest.skip("the CUDA tier needs root (jetsim's dockerd)")
