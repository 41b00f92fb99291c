"""The llama.cpp build recipe: roles/llama_cpp_build/files/build-llama.sh and the Dockerfile that runs it.

The Dockerfile is rendered like ansible.builtin.template does (trim_blocks, the Ansible filters it uses); its RUN
lines are run by bash with the recipe replaced by a recorder. The recipe itself runs against a PATH of stand-in
tools (cmake, nvcc, nm, ... that record their arguments), so these tests need neither Docker nor a compiler.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import quote, to_bool

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/llama_cpp_build"
RECIPE = ROLE / "files/build-llama.sh"
GIB = 1024 * 1024  # kB in a GiB, as /proc/meminfo counts
# Real tools the recipe uses besides the ones each test stands in for.
SYSTEM_TOOLS = (
    "bash", "env", "awk", "grep", "sed", "sort", "cat", "mkdir", "install", "mktemp", "readlink", "dirname", "rm",
    "ln", "nproc", "chmod", "ls", "printf", "touch", "seq",
)  # fmt: skip


def render_dockerfile(**overrides: Any) -> str:
    env = jinja2.Environment(
        trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False
    )
    env.filters["bool"] = to_bool
    env.filters["quote"] = quote
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    variables = {
        **defaults,
        "_llama_cpp_build_ref": "b11312",
        "_llama_cpp_build_commit": "0c1e57098bba43ac29e6e3b677cdceebdd22334f",
        "_llama_cpp_build_flags_digest": "0123456789ab",
        **overrides,
    }
    return env.from_string((ROLE / "templates/Dockerfile.j2").read_text()).render(variables)


def run_instructions(dockerfile: str) -> list[str]:
    """The shell command of every RUN instruction (continuation lines joined, --mount options dropped)."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    commands = []
    for line in joined.splitlines():
        if line.startswith("RUN "):
            commands.append(re.sub(r"^RUN\s+(--mount=\S+\s+)*", "", line))
    return commands


def recorded_run(command: str, tmp_path: Path) -> list[str]:
    """Run one RUN command with bash, build-llama.sh replaced by a recorder; the recipe's argv."""
    record = tmp_path / "argv"
    recorder = tmp_path / "build-llama.sh"
    recorder.write_text(f'#!/bin/bash\nprintf "%s\\0" "$@" > {record}\n')
    recorder.chmod(0o755)
    subprocess.run(
        ["bash", "-o", "pipefail", "-c", command.replace("/usr/local/bin/build-llama.sh", str(recorder))], check=True
    )
    return record.read_text().split("\0")[:-1]


def tool_path(tmp_path: Path, stubs: dict[str, str], real: tuple[str, ...] = SYSTEM_TOOLS) -> str:
    """A PATH holding only the given stand-ins (name -> bash body) and links to the real tools named."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name in real:
        found = shutil.which(name)
        assert found, name
        (bindir / name).symlink_to(found)
    for name, body in stubs.items():
        (bindir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bindir / name).chmod(0o755)
    return str(bindir)


def recipe(path: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("bash") or "bash", str(RECIPE), *args],
        capture_output=True, text=True,
        env={"PATH": path, "HOME": os.environ.get("HOME", "/root"), "CUDA_HOME": "/nonexistent", **env},
    )  # fmt: skip


BUILD_TOOLS = {name: "exit 0" for name in ("cmake", "make", "gcc", "g++", "readelf", "nm")}


# --------------------------------------------------------------------------------------------- the Dockerfile


def test_a_cuda_architecture_list_reaches_the_recipe_as_one_argument(tmp_path: Path) -> None:
    """17.18: `-DCMAKE_CUDA_ARCHITECTURES=72;87` unquoted in a RUN line ends the command at the `;`."""
    dockerfile = render_dockerfile(llama_cpp_build_cuda=True, llama_cpp_build_cuda_architectures="72;87")

    words = [
        token
        for command in run_instructions(dockerfile)
        for token in shlex.shlex(command, posix=True, punctuation_chars=True)
    ]
    assert any(word.endswith("72;87") for word in words), "the list is split by the shell"
    build = next(command for command in run_instructions(dockerfile) if "--src /src" in command)
    argv = recorded_run(build, tmp_path)
    assert argv[argv.index("--cuda-archs") + 1] == "72;87"
    assert argv[argv.index("--backend") + 1] == "cuda"


def test_cmake_flags_and_targets_keep_their_spaces(tmp_path: Path) -> None:
    flags = ["-DGGML_CUDA_FA_ALL_QUANTS=ON", "-DCMAKE_C_FLAGS=-O2 -g"]
    dockerfile = render_dockerfile(llama_cpp_build_cuda=False, llama_cpp_build_cmake_flags=flags)
    build = next(command for command in run_instructions(dockerfile) if "--src /src" in command)

    argv = recorded_run(build, tmp_path)

    assert [argv[i + 1] for i, word in enumerate(argv) if word == "--cmake-flag"] == flags
    assert argv[argv.index("--targets") + 1] == "llama-server llama-bench"
    assert argv[argv.index("--backend") + 1] == "cpu" and "--cuda-archs" not in argv
    assert argv[argv.index("--ref") + 1] == "b11312"


@pytest.mark.parametrize("cuda", [False, True], ids=["cpu", "cuda"])
def test_the_image_build_never_installs_packages(cuda: bool) -> None:
    """17.18: the build runs with --network=none: an apt step there cannot work."""
    dockerfile = render_dockerfile(llama_cpp_build_cuda=cuda)
    commands = " ".join(run_instructions(dockerfile))
    assert not re.search(r"\b(apt-get|apt|dpkg|pip)\b", commands), commands
    assert "build-llama.sh --check-tools" in commands  # the tools are checked, by name, before the source is copied
    assert dockerfile.index("--check-tools") < dockerfile.index("COPY src/")


def test_the_recipe_is_part_of_the_image_identity() -> None:
    preflight = (ROLE / "tasks/preflight.yml").read_text()
    assert "files/build-llama.sh" in preflight  # a recipe change gives a new tag, never a stale image


# --------------------------------------------------------------------------------------------- the tool check


def test_git_and_ccache_are_optional(tmp_path: Path) -> None:
    """17.18: the old check required git and ccache, which the build can do without."""
    path = tool_path(tmp_path, BUILD_TOOLS)

    result = recipe(path, "--check-tools", "--backend", "cpu")

    assert result.returncode == 0, result.stderr
    assert "optional tools absent: git" in result.stderr and "ccache" in result.stderr


def test_a_missing_tool_is_named_with_the_image_to_fix_and_nothing_is_installed(tmp_path: Path) -> None:
    calls = tmp_path / "apt-called"
    tools = {name: body for name, body in BUILD_TOOLS.items() if name not in ("cmake", "nm")}
    path = tool_path(tmp_path, {**tools, "apt-get": f"touch {calls}", "git": "exit 0", "ccache": "exit 0"})

    result = recipe(path, "--check-tools", "--backend", "cuda", "--base-image", "nvcr.io/nvidia/l4t-jetpack:r36.4.0")

    assert result.returncode == 3
    assert "missing build tools: cmake nm nvcc" in result.stderr
    assert "packages: cmake binutils cuda-nvcc" in result.stderr
    assert "nvcr.io/nvidia/l4t-jetpack:r36.4.0" in result.stderr and "installs nothing" in result.stderr
    assert not calls.exists()


def test_nvcc_is_found_in_the_cuda_home_off_path(tmp_path: Path) -> None:
    """JetPack images keep nvcc in /usr/local/cuda/bin, off PATH: found there (CUDA_HOME, default /usr/local/cuda)."""
    path = tool_path(tmp_path, BUILD_TOOLS)
    assert recipe(path, "--check-tools", "--backend", "cuda").returncode == 3
    nvcc = tmp_path / "cuda/bin/nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/bash\n")
    nvcc.chmod(0o755)
    result = recipe(path, "--check-tools", "--backend", "cuda", CUDA_HOME=str(tmp_path / "cuda"))
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------- the jobs


def meminfo(tmp_path: Path, total_gib: float, available_gib: float | None) -> Path:
    path = tmp_path / "meminfo"
    lines = [f"MemTotal: {int(total_gib * GIB)} kB", f"MemFree: {int((available_gib or 1) * GIB * 0.5)} kB"]
    if available_gib is not None:
        lines.append(f"MemAvailable: {int(available_gib * GIB)} kB")
    lines.append(f"Cached: {int((available_gib or 1) * GIB * 0.4)} kB")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("backend", "available_gib", "cpus", "expected"),
    [
        ("cuda", 13.5, 8, 4),  # idle Orin NX 16GB (15.3 GiB): 4 nvcc jobs, about 12 GiB at peak
        ("cuda", 9.0, 8, 2),  # the same board serving a 3B model
        ("cuda", 2.0, 8, 1),  # never 0
        ("cpu", 13.5, 8, 8),  # the C++ compiler needs far less: capped by the CPUs
        ("cpu", 4.0, 8, 3),
        ("cpu", 22.0, 2, 2),  # this 2-core machine
    ],
)
def test_jobs_follow_the_free_memory(
    tmp_path: Path, backend: str, available_gib: float, cpus: int, expected: int
) -> None:
    """17.18: RAM // 2.5 GiB gave an Orin NX 16GB 6 nvcc jobs (about 15 GiB) while its comment said 4."""
    info = meminfo(tmp_path, 15.3, available_gib)

    result = recipe(
        tool_path(tmp_path, {}), "--print-jobs", "--backend", backend,
        LLAMA_BUILD_MEMINFO=str(info), LLAMA_BUILD_NPROC=str(cpus),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == expected
    if backend == "cuda":  # what the jobs may take at peak fits in what is free
        assert int(result.stdout) * 3 + 1 <= max(available_gib, 4)
    assert f"MemAvailable {int(available_gib * 1024)} MiB" in result.stderr


def test_jobs_without_memavailable_and_when_asked_for(tmp_path: Path) -> None:
    info = meminfo(tmp_path, 15.3, None)  # a pre-3.14 kernel: free + cached
    path = tool_path(tmp_path, {})
    env = {"LLAMA_BUILD_MEMINFO": str(info), "LLAMA_BUILD_NPROC": "8"}
    assert recipe(path, "--print-jobs", "--backend", "cuda", **env).stdout.strip() == "1"  # 0.9 GiB free
    assert recipe(path, "--print-jobs", "--backend", "cuda", "--jobs", "5", **env).stdout.strip() == "5"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cuda-archs", "87; rm -rf /"], "--cuda-archs must be a CMake list"),
        (["--cuda-archs", "sm_87"], "--cuda-archs must be a CMake list"),
        (["--backend", "gpu"], "--backend must be cpu or cuda"),
        (["--jobs", "-1"], "--jobs must be a whole number"),
        (["--frobnicate"], "unknown argument '--frobnicate'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path, args: list[str], message: str) -> None:
    result = recipe(tool_path(tmp_path, BUILD_TOOLS), *args)
    assert result.returncode == 2 and message in result.stderr


# --------------------------------------------------------------------------------------------- a whole run


def fake_toolchain(tmp_path: Path, *, cuda_symbols: bool, ccache: bool) -> tuple[str, Path]:
    """Stand-ins for a compile: cmake records its argv and writes a cache/binary, nm lists the backends."""
    log = tmp_path / "cmake-argv"
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "lib64/stubs").mkdir(parents=True)
    (cuda / "lib64/stubs/libcuda.so").write_text("stub")
    (cuda / "bin/nvcc").write_text("#!/bin/bash\necho 'Cuda compilation tools, release 12.6, V12.6.68'\n")
    (cuda / "bin/nvcc").chmod(0o755)
    server = (
        '#!/bin/bash\necho "version: 0.5.0-dev (build 11312, commit 0c1e57098)"\n'
        'echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"\nls "${LD_LIBRARY_PATH%%:*}"\n'
    )
    cmake = f"""
printf '%s\\0' "$@" >> {log}; printf '\\n' >> {log}
if [[ "$1" == -S ]]; then
    build="$4"; mkdir -p "$build"
    cuda=OFF; for a in "$@"; do [[ "$a" == -DGGML_CUDA=ON ]] && cuda=ON; done
    printf 'GGML_CUDA:BOOL=%s\\nCMAKE_BUILD_TYPE:STRING=Release\\nCMAKE_CUDA_ARCHITECTURES:STRING=87\\n' "$cuda" \\
        > "$build/CMakeCache.txt"
else
    mkdir -p "$2/bin"
    for t in llama-server llama-bench; do printf '%s' {shlex.quote(server)} > "$2/bin/$t"; chmod +x "$2/bin/$t"; done
fi
"""
    symbols = "echo '0000 T ggml_backend_cpu_reg'" + ("; echo '0000 T ggml_backend_cuda_reg'" if cuda_symbols else "")
    stubs = {
        **BUILD_TOOLS,
        "cmake": cmake,
        "nm": symbols,
        "readelf": "echo ' 0x1 (NEEDED) Shared library: [libcudart.so.12]'",
        # More after the driver's line than a pipe holds: `ldd | grep -q` under pipefail then fails (SIGPIPE).
        "ldd": "echo '  libcuda.so.1 => not found'; for i in $(seq 20000); do echo \"  libx$i.so => x\"; done",
        "nvcc": f'exec {cuda}/bin/nvcc "$@"',  # on PATH; the stub is looked up in CUDA_HOME
    }
    if ccache:
        stubs["ccache"] = f'echo ccache "$@" CCACHE_DIR=$CCACHE_DIR >> {tmp_path / "ccache-calls"}'
    return tool_path(tmp_path, stubs), log


def cmake_calls(log: Path) -> list[list[str]]:
    return [line.split("\0") for line in log.read_text().split("\0\n") if line]


def test_a_cuda_build_configures_verifies_and_records(tmp_path: Path) -> None:
    path, log = fake_toolchain(tmp_path, cuda_symbols=True, ccache=False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text("project(llama.cpp)\n")
    out = tmp_path / "out"

    result = recipe(
        path, "--src", str(src), "--build", str(tmp_path / "build"), "--out", str(out), "--backend", "cuda",
        "--cuda-archs", "72;87", "--jobs", "3", "--ref", "b11312", "--commit", "0c1e57098bba43ac",
        "--cmake-flag", "-DGGML_CUDA_FA_ALL_QUANTS=ON", CUDA_HOME=str(tmp_path / "cuda"),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr + result.stdout
    configure, build = cmake_calls(log)
    assert "-DCMAKE_CUDA_ARCHITECTURES=72;87" in configure
    assert {"-DGGML_CUDA=ON", "-DGGML_CCACHE=OFF", "-DLLAMA_BUILD_NUMBER=11312"} <= set(configure)
    assert "-DGGML_CUDA_FA_ALL_QUANTS=ON" in configure
    assert "-DLLAMA_BUILD_COMMIT=0c1e57098" in configure
    assert build[:2] == ["--build", str(tmp_path / "build")] and build[build.index("-j") + 1] == "3"
    assert build[build.index("--target") + 1 :] == ["llama-server", "llama-bench"]
    info = (out / "share/build-info.txt").read_text()
    assert "(build 11312, commit 0c1e57098)" in info and "libcuda.so.1" in info  # --version ran against the stub
    config = (out / "share/build-config.txt").read_text()
    assert "backend: cuda" in config and "GGML_CUDA:BOOL=ON" in config and "needed: libcudart.so.12" in config
    assert (out / "bin/llama-bench").exists()


def test_a_cuda_build_without_the_cuda_backend_fails(tmp_path: Path) -> None:
    """nvcc present but the binary has no CUDA backend: never a CPU build labelled cuda."""
    path, _ = fake_toolchain(tmp_path, cuda_symbols=False, ccache=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text("\n")

    result = recipe(
        path, "--src", str(src), "--build", str(tmp_path / "b"), "--out", str(tmp_path / "o"), "--backend", "cuda",
        "--ccache-dir", str(tmp_path / "cc"),
    )  # fmt: skip

    assert result.returncode == 2 and "ggml_backend_cuda_reg missing" in result.stderr
    assert f"CCACHE_DIR={tmp_path / 'cc'}" in (tmp_path / "ccache-calls").read_text()  # the cache dir is used


def test_a_cpu_build_with_the_cuda_backend_fails(tmp_path: Path) -> None:
    path, _ = fake_toolchain(tmp_path, cuda_symbols=True, ccache=False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text("\n")

    result = recipe(path, "--src", str(src), "--build", str(tmp_path / "b"), "--out", str(tmp_path / "o"))

    assert result.returncode == 2 and "labelled cpu" in result.stderr


# --------------------------------------------------------------------------------------------- the GPU check


def test_the_gpu_checks_backend_check_passes_a_gpu_log_and_fails_a_hidden_gpu(tmp_path: Path) -> None:
    """tests/gpu/check.sh's verdicts, on b11312's own log lines (the server started with and without the GPU)."""
    gpu = tmp_path / "gpu.log"
    gpu.write_text(
        "ggml_cuda_init: found 1 CUDA devices (Total VRAM: 143167 MiB):\n"
        "  Device 0: NVIDIA H200, compute capability 9.0, VMM: yes, VRAM: 143167 MiB\n"
        "llama_model_load_from_file_impl: using device CUDA0 (NVIDIA H200) (0000:00:05.0) - 142000 MiB free\n"
        "load_tensors: offloading output layer to GPU\n"
        "load_tensors: offloading 4 repeating layers to GPU\n"
        "load_tensors: offloaded 5/5 layers to GPU\n"
    )
    hidden = tmp_path / "cpu.log"
    hidden.write_text(
        "ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected\n"
        "warning: no usable GPU found, --gpu-layers option will be ignored\n"
    )
    check = [sys.executable, str(REPO / "tests/gpu/backend_check.py")]

    passed = subprocess.run([*check, str(gpu)], capture_output=True, text=True)
    refused = subprocess.run([*check, str(hidden)], capture_output=True, text=True)

    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert '"gpu_layers": 5' in passed.stdout
    assert refused.returncode == 1 and '"cause": "no GPU visible"' in refused.stdout


def test_the_gpu_check_script_parses_and_documents_itself() -> None:
    script = REPO / "tests/gpu/check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "roles/llama_cpp_build/files/build-llama.sh" in text  # the product's recipe, not a copy
    assert "CUDA_VISIBLE_DEVICES=" in text and "timeout" in text


# --------------------------------------------------------------------------------------------- the runtime layers


def runtime_stage(dockerfile: str) -> list[str]:
    """The instructions (continuation lines joined, comments dropped) after the runtime stage's FROM."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    lines = [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("FROM ") and line.endswith(" AS runtime"))
    return lines[start:]


@pytest.mark.parametrize("cuda", [False, True], ids=["cpu", "cuda"])
def test_the_runtime_layers_go_base_then_libraries_then_llama_cpp(cuda: bool) -> None:
    """Issue 12.2: a llama.cpp upgrade must move only its own layer: what changes least comes first."""
    stage = runtime_stage(render_dockerfile(llama_cpp_build_cuda=cuda))

    assert stage[0] == "FROM ubuntu:22.04 AS runtime"  # the default base: L4T R36's userland, no CUDA in it
    layers = [line for line in stage if line.split()[0] in ("COPY", "RUN", "ADD")]
    assert layers[0] == "COPY --from=builder /runtime-libs/ /", layers  # right above the base, one layer
    binaries = next(i for i, line in enumerate(layers) if "/out/bin/" in line)
    assert binaries > 0 and all("/runtime-libs" not in line for line in layers[1:]), layers
    # Nothing of the toolkit but what --collect-libs picks: no COPY of /usr/local/cuda or of the builder's root.
    copies = [line for line in layers if line.startswith("COPY")]
    assert not [line for line in copies if re.search(r"/usr/local/cuda|--from=builder / ", line)], copies
    env = next(line for line in stage if line.startswith("ENV LD_LIBRARY_PATH="))
    assert ("/usr/local/cuda/lib64" in env) is cuda, env


def test_the_runtime_libraries_are_collected_before_the_source_enters() -> None:
    """A RUN after COPY src/ reruns for every ref: the libraries' layer would then differ per release."""
    dockerfile = render_dockerfile(llama_cpp_build_cuda=True)
    collect = next(command for command in run_instructions(dockerfile) if "--collect-libs" in command)
    assert "--backend cuda" in collect
    assert dockerfile.index("--collect-libs") < dockerfile.index("COPY src/")


def shared_library(path: Path, soname: str) -> None:
    source = path.parent / "empty.c"
    source.write_text("int placeholder(void) { return 0; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(path), str(source)], check=True)
    source.unlink()


def jetpack_toolkit(tmp_path: Path) -> Path:
    """A toolkit laid out like JetPack 6's: lib64 -> targets/aarch64-linux/lib, versioned files, soname links."""
    home = tmp_path / "cuda"
    lib = home / "targets/aarch64-linux/lib"
    lib.mkdir(parents=True)
    (home / "bin").mkdir()
    (home / "bin/nvcc").write_text("#!/bin/sh\n")
    (home / "lib64").symlink_to("targets/aarch64-linux/lib")
    for name, version in (("libcudart", "12.6.68"), ("libcublas", "12.6.4.1"), ("libcublasLt", "12.6.4.1"),
                          ("libnvrtc", "12.6.85"), ("libcufft", "11.2.6.59")):  # fmt: skip
        major = version.split(".")[0]
        shared_library(lib / f"{name}.so.{version}", f"{name}.so.{major}")
        (lib / f"{name}.so.{major}").symlink_to(f"{name}.so.{version}")
        (lib / f"{name}.so").symlink_to(f"{name}.so.{major}")
    return home


def collected(directory: Path) -> dict[str, tuple[str, int, int, bytes | str]]:
    """path -> (kind, mode, mtime, content or link target) of everything under directory."""
    found: dict[str, tuple[str, int, int, bytes | str]] = {}
    for path in sorted(directory.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            found[str(path.relative_to(directory))] = ("link", 0, int(info.st_mtime), os.readlink(path))
        elif path.is_dir():
            found[str(path.relative_to(directory))] = ("dir", info.st_mode & 0o7777, int(info.st_mtime), "")
        else:
            found[str(path.relative_to(directory))] = (
                "file",
                info.st_mode & 0o7777,
                int(info.st_mtime),
                path.read_bytes(),
            )
    return found


@pytest.mark.skipif(not shutil.which("gcc") or not shutil.which("readelf"), reason="needs gcc and readelf")
def test_collect_libs_takes_only_the_runtime_libraries_with_their_soname_links(tmp_path: Path) -> None:
    home = jetpack_toolkit(tmp_path)
    out = tmp_path / "runtime-libs"

    proc = recipe(os.environ["PATH"], "--collect-libs", str(out), "--backend", "cuda", CUDA_HOME=str(home))

    assert proc.returncode == 0, proc.stderr
    lib64 = out / "usr/local/cuda/lib64"
    assert sorted(p.name for p in lib64.iterdir()) == sorted(
        ["libcudart.so.12", "libcudart.so.12.6.68", "libcublas.so.12", "libcublas.so.12.6.4.1",
         "libcublasLt.so.12", "libcublasLt.so.12.6.4.1"]
    )  # fmt: skip
    assert os.readlink(lib64 / "libcublas.so.12") == "libcublas.so.12.6.4.1"  # the loader finds it by its soname
    assert (out / "usr/local/lib/llama.cpp/libgomp.so.1").is_file()
    assert not list(out.rglob("nvcc")) and not list(out.rglob("libnvrtc*"))  # no toolkit, no other library


@pytest.mark.skipif(not shutil.which("gcc") or not shutil.which("readelf"), reason="needs gcc and readelf")
def test_collect_libs_gives_the_same_bytes_and_times_on_every_run(tmp_path: Path) -> None:
    """The layer made from the collection is byte-identical across builds only if nothing in it depends on when."""
    home = jetpack_toolkit(tmp_path)
    runs = []
    for index in range(2):
        out = tmp_path / f"run{index}"
        os.utime(home / "targets/aarch64-linux/lib/libcudart.so.12.6.68", (1e9 + index, 1e9 + index))
        proc = recipe(os.environ["PATH"], "--collect-libs", str(out), "--backend", "cuda", CUDA_HOME=str(home))
        assert proc.returncode == 0, proc.stderr
        runs.append(collected(out))
    assert runs[0] == runs[1]
    assert {mtime for _, _, mtime, _ in runs[0].values()} == {946684800}  # 2000-01-01 UTC, whatever the source says
    assert {mode for kind, mode, _, _ in runs[0].values() if kind == "file"} == {0o644}


def test_collect_libs_without_the_toolkit_names_what_is_missing(tmp_path: Path) -> None:
    proc = recipe(os.environ["PATH"], "--collect-libs", str(tmp_path / "out"), "--backend", "cuda",
                  CUDA_HOME=str(tmp_path / "none"))  # fmt: skip
    assert proc.returncode == 2
    assert "no libcudart.so.<major> in" in proc.stderr and "is the CUDA toolkit complete?" in proc.stderr
