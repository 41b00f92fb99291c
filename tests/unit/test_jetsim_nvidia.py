"""jetsim's NVIDIA container stack (tests/jetsim/rootfs): the nvidia-ctk and nvidia-container-runtime emulators and
the GPU device nodes jetsim-identity makes at boot.

The expected nvidia-ctk output is what the real 1.16.2 (JetPack 6) prints, read from its code: configure.go and
pkg/config/engine/docker (json.MarshalIndent(cfg, "", "    "), runtimes.<name> = {"path", "args": []}), option.go
(json.Decoder: a 0-byte file is `EOF`), logrus's text format on a pipe.
"""

from __future__ import annotations

import grp
import importlib.machinery
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTFS = REPO / "tests/jetsim/rootfs"
NVIDIA_CTK = ROOTFS / "usr/bin/nvidia-ctk"
RUNTIME = ROOTFS / "usr/bin/nvidia-container-runtime"
CSV_DIR = ROOTFS / "etc/nvidia-container-runtime/host-files-for-container.d"
# `nvidia-ctk runtime configure --runtime=docker --dry-run --set-as-default` on a missing daemon.json, JetPack 6.
REAL_DRY_RUN_OUTPUT = """{
    "default-runtime": "nvidia",
    "runtimes": {
        "nvidia": {
            "args": [],
            "path": "nvidia-container-runtime"
        }
    }
}
"""


def _load(path: Path, name: str) -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


runtime = _load(RUNTIME, "jetsim_nvidia_container_runtime")
variants = _load(REPO / "tests/jetsim/variants.py", "jetsim_variants_for_nvidia")


def ctk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NVIDIA_CTK), *args], capture_output=True, text=True, timeout=30, check=False)


def configure(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return ctk("runtime", "configure", "--runtime=docker", f"--config={config}", *flags)


# ------------------------------------------------------------------------------------------ nvidia-ctk


def test_dry_run_on_a_missing_file_prints_what_jetpack_6_prints(tmp_path: Path) -> None:
    proc = configure(tmp_path / "absent.json", "--dry-run", "--set-as-default")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == REAL_DRY_RUN_OUTPUT
    assert 'level=info msg="Config file does not exist; using empty config"' in proc.stderr
    assert not (tmp_path / "absent.json").exists()


def test_zero_byte_daemon_json_fails_with_eof_like_the_real_one(tmp_path: Path) -> None:
    (tmp_path / "daemon.json").write_text("")
    proc = configure(tmp_path / "daemon.json", "--dry-run")
    assert proc.returncode == 1 and proc.stdout == ""
    assert 'level=error msg="unable to load config for runtime docker: EOF"' in proc.stderr


def test_existing_keys_are_kept_and_default_left_alone_without_set_as_default(tmp_path: Path) -> None:
    config = {"default-runtime": "crun", "bip": "10.203.250.1/24", "runtimes": {"crun": {"path": "/usr/bin/crun"}},
              "labels": ["a<b&c>d"]}  # fmt: skip
    (tmp_path / "daemon.json").write_text(json.dumps(config))
    proc = configure(tmp_path / "daemon.json", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    nvidia = {"args": [], "path": "nvidia-container-runtime"}
    assert json.loads(proc.stdout) == {**config, "runtimes": {"crun": {"path": "/usr/bin/crun"}, "nvidia": nvidia}}
    assert '"a\\u003cb\\u0026c\\u003ed"' in proc.stdout  # Go's HTML escaping
    assert proc.stdout.index('"bip"') < proc.stdout.index('"default-runtime"') < proc.stdout.index('"labels"')


def test_without_dry_run_the_file_is_written_and_a_restart_recommended(tmp_path: Path) -> None:
    path = tmp_path / "docker/daemon.json"
    proc = configure(path, "--nvidia-set-as-default")
    assert proc.returncode == 0 and proc.stdout == ""
    assert path.read_text() == REAL_DRY_RUN_OUTPUT.rstrip("\n")  # Save writes no trailing newline
    assert f'msg="Wrote updated config to {path}"' in proc.stderr
    assert 'msg="It is recommended that docker daemon be restarted."' in proc.stderr


def test_version_and_unsupported_commands() -> None:
    assert ctk("--version").stdout.splitlines()[0] == "NVIDIA Container Toolkit CLI version 1.16.2"
    assert ctk("cdi", "generate").returncode == 1


# ------------------------------------------------------------------------------------------ runtime


def _spec(env: list[str]) -> dict[str, Any]:
    return {"process": {"env": ["PATH=/usr/bin", *env], "user": {"uid": 10001, "gid": 10001}}, "linux": {}}


@pytest.fixture
def mount_specs(tmp_path: Path) -> Path:
    """devices.csv listing a node that exists (/dev/null stands in for a GPU node) and one that does not."""
    (tmp_path / "devices.csv").write_text("dev, /dev/null\ndev, /dev/nvjetsim-absent\nlib, /usr/lib/libnvidia.so\n")
    (tmp_path / "extra.csv").write_text("dev, /dev/zero\n")  # not a base file: read only with csv-mounts=all
    return tmp_path


def test_devices_requested_like_the_toolkit() -> None:
    assert runtime.devices_requested({"NVIDIA_VISIBLE_DEVICES": "all"})
    assert runtime.devices_requested({"NVIDIA_VISIBLE_DEVICES": "0"})
    for env in ({}, {"NVIDIA_VISIBLE_DEVICES": ""}, {"NVIDIA_VISIBLE_DEVICES": "void"},
                {"CUDA_VERSION": "12.6", "NVIDIA_REQUIRE_CUDA": "cuda>=12.6"}):  # fmt: skip
        assert not runtime.devices_requested(env), env
    assert runtime.devices_requested({"CUDA_VERSION": "12.6"})  # a legacy image means "all"


def test_create_adds_the_host_nodes_with_their_owner_and_mode(mount_specs: Path) -> None:
    spec = _spec(["NVIDIA_VISIBLE_DEVICES=all"])
    assert runtime.modify(spec, str(mount_specs)) == ["/dev/null"]
    info = os.stat("/dev/null")
    assert spec["linux"]["devices"] == [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3,
                                         "fileMode": stat.S_IMODE(info.st_mode), "uid": 0, "gid": 0}]  # fmt: skip
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "type": "c", "major": 1, "minor": 3,
                                                      "access": "rwm"}]  # fmt: skip
    everything = _spec(["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_REQUIRE_JETPACK=csv-mounts=all"])
    assert runtime.modify(everything, str(mount_specs)) == ["/dev/null", "/dev/zero"]


def test_no_devices_asked_for_no_change(mount_specs: Path) -> None:
    spec = _spec(["NVIDIA_VISIBLE_DEVICES=void"])
    assert runtime.modify(spec, str(mount_specs)) == [] and spec["linux"] == {}


def test_create_is_found_like_the_toolkit_finds_it() -> None:
    shim = ["--root", "/var/run/docker/runtime-runc/moby", "--log", "/run/x/log.json", "--log-format", "json"]
    assert runtime.has_create([*shim, "create", "--bundle", "/run/b", "abc"])
    assert runtime.bundle_dir([*shim, "create", "--bundle", "/run/b", "abc"]) == "/run/b"
    assert runtime.bundle_dir(["create", "-b=/run/c", "abc"]) == "/run/c"
    assert not runtime.has_create([*shim, "start", "abc"]) and not runtime.has_create(["--bundle", "create", "x"])


def test_runtime_edits_config_json_then_execs_runc(tmp_path: Path, mount_specs: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(_spec(["NVIDIA_VISIBLE_DEVICES=all"])))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "runc").write_text(f'#!/bin/sh\necho "runc $*" > {tmp_path}/runc.args\n')
    (bin_dir / "runc").chmod(0o755)
    toml = tmp_path / "config.toml"
    toml.write_text(f'[nvidia-container-runtime.modes.csv]\nmount-spec-path = "{mount_specs}"\n')
    code = (f"import sys; sys.argv = ['nvidia-container-runtime', 'create', '--bundle', {str(bundle)!r}, 'id1']; "
            f"exec(open({str(RUNTIME)!r}).read().replace({runtime.CONFIG_TOML!r}, {str(toml)!r}))")  # fmt: skip
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runc.args").read_text().strip() == f"runc create --bundle {bundle} id1"
    assert [device["path"] for device in json.loads((bundle / "config.json").read_text())["linux"]["devices"]] == [
        "/dev/null"
    ]


def test_image_csv_lists_every_node_jetsim_makes() -> None:
    listed = runtime.device_paths([str(CSV_DIR / "devices.csv")])
    assert set(variants.GPU_DEVICE_NODES) <= set(listed)
    assert "/dev/nvmap" in listed and len(listed) > len(variants.GPU_DEVICE_NODES)  # some absent on jetsim


# ------------------------------------------------------------------------------------------ device nodes


def test_identity_makes_gpu_nodes_root_video_0660(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    identity = ROOTFS / "usr/local/sbin/jetsim-identity"
    host = variants.host_config("orin-nx-16-super", "jetson-1")
    (tmp_path / "etc/jetsim").mkdir(parents=True)
    (tmp_path / "etc/jetsim/host.json").write_text(json.dumps(host))
    (tmp_path / "dev/nvmap").parent.mkdir(parents=True)
    (tmp_path / "dev/nvmap").write_text("stale regular file")
    env = {**os.environ, "JETSIM_ROOT": str(tmp_path)}
    for _ in range(2):  # the second boot finds them in place
        proc = subprocess.run([sys.executable, str(identity)], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    video = grp.getgrnam("video").gr_gid
    for path in variants.GPU_DEVICE_NODES:
        info = os.lstat(tmp_path / path.lstrip("/"))
        assert stat.S_ISCHR(info.st_mode) and (os.major(info.st_rdev), os.minor(info.st_rdev)) == (1, 3), path
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o660, 0, video), path
    summary = json.loads((tmp_path / "run/jetsim/identity.json").read_text())
    assert summary["devices"] == len(variants.GPU_DEVICE_NODES)
