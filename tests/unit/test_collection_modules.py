"""Run the jetson_llm.fleet modules' main() against fake binaries and temporary trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.jetson_llm.fleet.plugins.modules import jetson_facts, nvpmodel
from module_runner import run_module

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS_DIR = REPO_ROOT / "collections"
MODULES_DIR = COLLECTIONS_DIR / "ansible_collections/jetson_llm/fleet/plugins/modules"

# (id, name, online cores) as on an Orin NX 16GB with the super DTB.
SUPER_MODES = [(0, "MAXN_SUPER", 8), (1, "10W", 4), (2, "15W", 4), (3, "25W", 8), (4, "40W", 8)]

FAKE_NVPMODEL = '''#!{python}
"""Fake nvpmodel: state in {state}."""
import json, sys, time
STATE = {state!r}
with open(STATE) as fh:
    state = json.load(fh)
state["calls"].append(sys.argv[1:])
modes = state["modes"]

def save():
    with open(STATE, "w") as fh:
        json.dump(state, fh)

if state.get("hang"):
    save()
    time.sleep(30)
if sys.argv[1:] == ["-q"]:
    save()
    if state.get("warn"):
        print("NVPM WARN: fan mode is not set!")
    print("NV Power Mode: " + modes[str(state["current"])][0])
    print(state["current"])
    sys.exit(0)
if len(sys.argv) == 3 and sys.argv[1] == "-m":
    target = sys.argv[2]
    if target not in modes:
        save()
        print("NVPM ERROR: Invalid mode", target)
        sys.exit(1)
    if modes[target][1] != modes[str(state["current"])][1]:
        print("NVPM WARN: Reboot required for changing to this power mode: " + target)
        print("NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:", flush=True)
        answer = sys.stdin.readline()
        state["answers"].append(answer)
        if answer.strip().lower() != "yes":
            save()
            print("NVPM ERROR: optMask is 1, no request for power mode")
            sys.exit(255)
        state["rebooted"] = True
    if not state.get("stuck"):
        state["current"] = int(target)
    save()
    sys.exit(0)
save()
sys.exit(2)
'''

SUPER_CONF_TEXT = (
    "# fake p3767-0000 super table\n"
    "< PARAM TYPE=FILE NAME=CPU_ONLINE >\n"
    + "".join(f"CORE_{i} /sys/devices/system/cpu/cpu{i}/online\n" for i in range(8))
    + "< PARAM TYPE=CLOCK NAME=GPU >\n"
    "MAX_FREQ /sys/devices/platform/gpu.0/devfreq/17000000.gpu/max_freq\n"
    + "".join(
        f"< POWER_MODEL ID={mid} NAME={name} >\n"
        + "".join(f"CPU_ONLINE CORE_{i} {int(i < cores)}\n" for i in range(8))
        + "GPU MAX_FREQ -1\n"
        for mid, name, cores in SUPER_MODES
    )
    + "< PM_CONFIG DEFAULT=2 >\n"
)


class FakeNvpmodel:
    def __init__(self, tmp_path: Path, current: int, **flags: Any) -> None:
        self.bin_dir = tmp_path / "bin"
        self.bin_dir.mkdir(exist_ok=True)
        self.path = self.bin_dir / "nvpmodel"
        self.state_path = tmp_path / "nvpmodel-state.json"
        modes = {str(mid): [name, cores] for mid, name, cores in SUPER_MODES}
        state = {"current": current, "modes": modes, "calls": [], "answers": [], **flags}
        self.state_path.write_text(json.dumps(state))
        self.path.write_text(FAKE_NVPMODEL.format(python=sys.executable, state=str(self.state_path)))
        self.path.chmod(0o755)
        self.conf = tmp_path / "nvpmodel.conf"
        self.conf.write_text(SUPER_CONF_TEXT)

    @property
    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.state_path.read_text())
        return result

    def args(self, mode: str, **extra: Any) -> dict[str, Any]:
        return {"mode": mode, "conf": str(self.conf), "binary": str(self.path), **extra}


# --- nvpmodel --------------------------------------------------------------------------------------


def test_nvpmodel_already_in_mode(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=0, warn=True)
    result = run_module(nvpmodel.main, fake.args("MAXN_SUPER"), capsys, monkeypatch)
    assert result["changed"] is False
    assert result["reboot_required"] is False
    assert result["previous"] == result["current"] == {"id": 0, "name": "MAXN_SUPER"}
    assert result["target"] == {"id": 0, "name": "MAXN_SUPER", "cpu_online": 8}
    assert result["modes"][1] == {"id": 1, "name": "10W", "cpu_online": 4}
    assert fake.state["calls"] == [["-q"]]


def test_nvpmodel_live_switch(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=3)
    result = run_module(nvpmodel.main, fake.args("40W"), capsys, monkeypatch)
    assert result["changed"] is True
    assert result["reboot_required"] is False
    assert result["previous"] == {"id": 3, "name": "25W"}
    assert result["current"] == {"id": 4, "name": "40W"}
    assert fake.state["current"] == 4
    assert fake.state["calls"] == [["-q"], ["-m", "4"], ["-q"]]
    assert fake.state["answers"] == []


def test_nvpmodel_reboot_needed_is_declined(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=2)  # 15W: 4 cores -> MAXN_SUPER: 8 cores
    result = run_module(nvpmodel.main, fake.args("MAXN_SUPER"), capsys, monkeypatch)
    assert result["changed"] is False
    assert result["reboot_required"] is True
    assert result.get("failed") is not True
    assert result["current"] == {"id": 2, "name": "15W"}
    assert "Reboot required" in result["stdout"]
    state = fake.state
    assert state["current"] == 2
    assert state["answers"] == ["no\n"]
    assert "rebooted" not in state


def test_nvpmodel_unknown_mode(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=2)
    result = run_module(nvpmodel.main, fake.args("MAXN"), capsys, monkeypatch)
    assert result["failed"] is True
    msg = result["msg"]
    assert "'MAXN'" in msg
    assert str(fake.conf) in msg
    assert "MAXN_SUPER (0), 10W (1), 15W (2), 25W (3), 40W (4)" in msg
    assert "jetson_power_mode" in msg
    assert result["available_modes"][0] == "MAXN_SUPER (0)"
    assert fake.state["calls"] == []


def test_nvpmodel_unknown_mode_names_symlink_target(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvpmodel(tmp_path, current=2)
    link = tmp_path / "nvpmodel-link.conf"
    link.symlink_to(fake.conf)
    result = run_module(nvpmodel.main, fake.args("7W", conf=str(link)), capsys, monkeypatch)
    assert result["failed"] is True
    assert f"{link} (-> {fake.conf})" in result["msg"]


@pytest.mark.parametrize(("current", "mode", "reboot"), [(2, "MAXN_SUPER", True), (3, "40W", False)])
def test_nvpmodel_check_mode(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, current: int, mode: str, reboot: bool
) -> None:
    fake = FakeNvpmodel(tmp_path, current=current)
    result = run_module(nvpmodel.main, fake.args(mode, _ansible_check_mode=True), capsys, monkeypatch)
    assert result["changed"] is True
    assert result["reboot_required"] is reboot
    assert fake.state["calls"] == [["-q"]]
    assert fake.state["current"] == current


def test_nvpmodel_switch_does_not_take(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=3, stuck=True)
    result = run_module(nvpmodel.main, fake.args("40W"), capsys, monkeypatch)
    assert result["failed"] is True
    assert "still reports 25W (3)" in result["msg"]


def test_nvpmodel_timeout(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=3, hang=True)
    result = run_module(nvpmodel.main, fake.args("40W", timeout=1), capsys, monkeypatch)
    assert result["failed"] is True
    assert "did not finish within 1 s" in result["msg"]


def test_nvpmodel_binary_from_path(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=1)
    renamed = fake.bin_dir / "fake-nvpmodel-for-test"
    fake.path.rename(renamed)
    monkeypatch.setenv("PATH", f"{fake.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    result = run_module(nvpmodel.main, fake.args("15W", binary=renamed.name), capsys, monkeypatch)
    assert result["changed"] is True
    assert fake.state["current"] == 2


def test_nvpmodel_missing_conf(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=1)
    result = run_module(nvpmodel.main, fake.args("15W", conf=str(tmp_path / "absent.conf")), capsys, monkeypatch)
    assert result["failed"] is True
    assert "cannot read nvpmodel configuration" in result["msg"]


def test_nvpmodel_as_script(tmp_path: Path) -> None:
    """The module file runs standalone with collections/ on PYTHONPATH (ansible's debug entry point)."""
    fake = FakeNvpmodel(tmp_path, current=1)
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": fake.args("15W")}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(COLLECTIONS_DIR), *sys.path])}
    proc = subprocess.run(
        [sys.executable, str(MODULES_DIR / "nvpmodel.py"), str(args_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["changed"] is True
    assert result["current"] == {"id": 2, "name": "15W"}


# --- jetson_facts ----------------------------------------------------------------------------------

SUPER_COMPATIBLE = b"nvidia,p3768-0000+p3767-0000-super\x00nvidia,p3767-0000\x00nvidia,tegra234\x00"
RELEASE = (
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
    "DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n"
)


def make_jetson_tree(root: Path) -> dict[str, Any]:
    (root / "etc/nvpmodel").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(RELEASE)
    real_conf = root / "etc/nvpmodel/nvpmodel_p3767_0000_super.conf"
    real_conf.write_text(SUPER_CONF_TEXT)
    (root / "etc/nvpmodel.conf").symlink_to("nvpmodel/nvpmodel_p3767_0000_super.conf")
    dt = root / "proc/device-tree"
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super\x00")
    (dt / "compatible").write_bytes(b"nvidia,p3768-0000+p3767-0000-super\x00nvidia,p3767-0000\x00nvidia,tegra234\x00")
    cuda = root / "usr/local/cuda-12.6"
    cuda.mkdir(parents=True)
    (cuda / "version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}))
    (root / "usr/local/cuda").symlink_to("cuda-12.6")
    (root / "opt").mkdir()
    return {
        "release_file": str(root / "etc/nv_tegra_release"),
        "device_tree_dir": str(dt),
        "cuda_dir": str(root / "usr/local/cuda"),
        "nvpmodel_conf": str(root / "etc/nvpmodel.conf"),
        "disk_paths": [str(root / "opt/llama.cpp/models"), str(root / "opt")],
    }


def isolated_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripts: dict[str, str]) -> None:
    """PATH holding only the given fake executables (name -> shell body)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_facts_jetson_tree(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    args = make_jetson_tree(tmp_path / "root")
    isolated_path(tmp_path, monkeypatch, {"docker": "exit 0", "nvidia-ctk": "exit 0"})
    result = run_module(jetson_facts.main, args, capsys, monkeypatch)
    assert result["changed"] is False
    facts = result["jetson"]
    assert facts["is_jetson"] is True
    assert facts["l4t"]["version"] == "36.4.3"
    assert facts["l4t"]["source"] == "nv_tegra_release"
    assert facts["l4t"]["date"] == "Wed Jan  8 01:49:37 UTC 2025"
    assert facts["jetpack"] == "6.2"
    assert facts["cuda"] == "12.6.68"
    assert facts["model"] == "NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super"
    assert facts["compatible"][1] == "nvidia,p3767-0000"
    assert (facts["module"], facts["module_name"], facts["carrier"], facts["soc"], facts["super"]) == (
        "p3767-0000",
        "Orin NX 16GB",
        "p3768-0000",
        "tegra234",
        True,
    )
    assert facts["nvpmodel"]["default"] == 2
    assert [m["name"] for m in facts["nvpmodel"]["modes"]] == [name for _, name, _ in SUPER_MODES]
    assert facts["nvpmodel"]["conf_path"] == str(tmp_path / "root/etc/nvpmodel/nvpmodel_p3767_0000_super.conf")
    models_dir, opt = args["disk_paths"]
    assert facts["disk_checked_path"] == {models_dir: opt, opt: opt}
    assert isinstance(facts["disk_free_mb"][models_dir], int)
    assert facts["disk_free_mb"][models_dir] == facts["disk_free_mb"][opt]
    assert facts["docker"]["present"] is True and facts["docker"]["nvidia_ctk"] is True
    assert isinstance(facts["memtotal_mb"], int) and facts["memtotal_mb"] > 0
    assert facts["architecture"]


def test_facts_empty_tree(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    isolated_path(tmp_path, monkeypatch, {})
    args = {
        "release_file": str(empty / "nv_tegra_release"),
        "device_tree_dir": str(empty / "device-tree"),
        "cuda_dir": str(empty / "cuda"),
        "nvpmodel_conf": str(empty / "nvpmodel.conf"),
        "disk_paths": [str(empty / "does/not/exist")],
    }
    result = run_module(jetson_facts.main, args, capsys, monkeypatch)
    assert result.get("failed") is not True
    facts = result["jetson"]
    assert facts["is_jetson"] is False
    for key in ("l4t", "jetpack", "cuda", "nvpmodel", "model", "module", "module_name", "carrier", "soc"):
        assert facts[key] is None, key
    assert facts["compatible"] == []
    assert facts["super"] is False
    assert facts["disk_checked_path"] == {str(empty / "does/not/exist"): str(empty)}
    assert facts["docker"]["present"] is False
    assert facts["docker"]["nvidia_ctk"] is False


def test_facts_dpkg_fallback(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    args = make_jetson_tree(tmp_path / "root")
    Path(args["release_file"]).write_text("garbage\n")
    Path(args["nvpmodel_conf"]).resolve().write_text("not an nvpmodel conf\n")
    dpkg = '[ "$3" = nvidia-l4t-core ] && printf %s 36.4.0-20240912212859 && exit 0\nexit 1'
    isolated_path(tmp_path, monkeypatch, {"dpkg-query": dpkg})
    result = run_module(jetson_facts.main, args, capsys, monkeypatch)
    facts = result["jetson"]
    assert facts["l4t"]["source"] == "dpkg"
    assert facts["l4t"]["version"] == "36.4.0"
    assert facts["l4t"]["package_version"] == "36.4.0-20240912212859"
    assert facts["jetpack"] == "6.1"
    assert facts["is_jetson"] is True
    assert facts["nvpmodel"] is None
    # ansible-core 2.19 serializes warnings as structured events: look at the JSON text.
    assert "cannot parse" in json.dumps(result.get("warnings", []))


def test_facts_tegra_compatible_only(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    dt = tmp_path / "dt"
    dt.mkdir()
    (dt / "compatible").write_bytes(b"nvidia,p3767-0003\x00nvidia,tegra234\x00")
    isolated_path(tmp_path, monkeypatch, {})
    args = {"release_file": str(tmp_path / "none"), "device_tree_dir": str(dt), "cuda_dir": str(tmp_path)}
    facts = run_module(jetson_facts.main, args, capsys, monkeypatch)["jetson"]
    assert facts["is_jetson"] is True
    assert facts["l4t"] is None
    assert facts["module_name"] == "Orin Nano 8GB"
