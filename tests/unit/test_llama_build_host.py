"""The build-host preflight (roles/llama_cpp_build/tasks/build_host.yml), run on localhost with a fake docker.

The fake answers `docker version` with the client version of the scenario, `docker buildx version` as a host with or
without the plugin, and `docker info` with a data root in the test's tmp_path; the free memory comes from a
meminfo file of the scenario. Each scenario is one ansible-playbook run: the message a user would read is checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_DOCKER = """#!/bin/bash
case "$1 $2" in
  "version --format") echo "$FAKE_CLIENT $FAKE_CLIENT" ;;
  "buildx version") [ -n "$FAKE_BUILDX" ] && echo "github.com/docker/buildx 0.21.3" && exit 0
                    echo "docker: unknown command: docker buildx" >&2; exit 1 ;;
  "info --format") echo "$FAKE_ROOT" ;;
  *) echo "fake docker: unexpected $*" >&2; exit 2 ;;
esac
"""


def preflight(tmp_path: Path, client: str, *, buildx: bool, available_gib: float = 12, **variables: object) -> str:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(FAKE_DOCKER)
    (bindir / "docker").chmod(0o755)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       16031472 kB\nMemAvailable:   {int(available_gib * 1024 * 1024)} kB\n")
    root = tmp_path / "docker-root"
    root.mkdir()
    extra = "".join(f"        {key}: {value!r}\n" for key, value in variables.items())
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role:\n        name: llama_cpp_build\n        tasks_from: build_host\n"
        f"      vars:\n        _llama_cpp_build_host_meminfo: {meminfo}\n{extra}"
    )
    env = {
        **os.environ,
        "PATH": f"{bindir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "FAKE_CLIENT": client,
        "FAKE_BUILDX": "1" if buildx else "",
        "FAKE_ROOT": str(root),
    }
    proc = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return f"rc={proc.returncode}\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize(
    ("client", "buildx"),
    [("20.10.24+dfsg1", False), ("28.2.2", True), ("26.1.3", True)],
    ids=["docker-20.10-builtin-buildkit", "docker-28-with-buildx", "docker-26-with-buildx"],
)
def test_a_build_host_with_buildkit_passes(tmp_path: Path, client: str, buildx: bool) -> None:
    out = preflight(tmp_path, client, buildx=buildx, llama_cpp_build_min_free_mb=1)
    assert out.startswith("rc=0"), out


def test_docker_23_or_later_without_buildx_fails_naming_the_package(tmp_path: Path) -> None:
    """Docker 23+ without the plugin: `DOCKER_BUILDKIT=1 docker build` fails late; the preflight fails first."""
    out = preflight(tmp_path, "28.2.2", buildx=False, llama_cpp_build_min_free_mb=1)
    assert out.startswith("rc=2"), out
    assert "localhost: Docker 28.2.2 builds with BuildKit only through the buildx plugin" in out, out
    assert "docker-buildx" in out and "docker-buildx-plugin" in out, out


def test_too_little_disk_on_the_data_root_fails_with_path_and_sizes(tmp_path: Path) -> None:
    out = preflight(tmp_path, "20.10.24", buildx=False, llama_cpp_build_min_free_mb=1 << 40)
    assert out.startswith("rc=2"), out
    assert f"free on Docker's data root {tmp_path / 'docker-root'}, the build needs {1 << 40} MiB" in out, out
    assert "llama_cpp_build_min_free_mb" in out


def test_a_cuda_build_needs_memory_for_one_nvcc_job(tmp_path: Path) -> None:
    out = preflight(tmp_path, "20.10.24", buildx=False, available_gib=2, llama_cpp_build_min_free_mb=1)
    assert out.startswith("rc=2"), out
    assert "localhost: 2048 MiB available (MemAvailable), one nvcc compile job needs 4096 MiB" in out, out
    # The same memory is enough for a CPU build's C++ job.
    again = tmp_path / "cpu"
    again.mkdir()
    cpu = preflight(again, "20.10.24", buildx=False, available_gib=2.5, llama_cpp_build_min_free_mb=1,
                    llama_cpp_build_cuda=False)  # fmt: skip
    assert cpu.startswith("rc=0"), cpu
