"""Run the jetson_llm.fleet modules' main() against fake binaries and temporary trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.jetson_llm.fleet.plugins.modules import jetson_clocks, jetson_facts, nvpmodel
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
if sys.argv[1:] in (["-q"], ["-q", "--verbose"]):
    save()
    if state.get("warn"):
        print("NVPM WARN: fan mode is not set!")
    print("NV Power Mode: " + modes[str(state["current"])][0])
    print(state["current"])
    if sys.argv[2:]:  # what the hardware runs: the mode's cores online unless nvpmodel.service failed
        online = 4 if state.get("hw_cores") == 4 else modes[str(state["current"])][1]
        for core in range(8):
            conf = int(core < modes[str(state["current"])][1])
            print("NVPM VERB: PARAM CPU_ONLINE: ARG CORE_%d: PATH /sys/devices/system/cpu/cpu%d/online: "
                  "REAL_VAL: %d CONF_VAL: %d" % (core, core, int(core < online), conf))
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
        state.pop("hw_cores", None)
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
        return {"mode": mode, "conf": str(self.conf), "binary": str(self.path), "service": "", **extra}

    def calls(self) -> list[list[str]]:
        """nvpmodel's calls without the verbose queries that follow each plain one."""
        return [call for call in self.state["calls"] if call != ["-q", "--verbose"]]


# --- nvpmodel --------------------------------------------------------------------------------------


def test_nvpmodel_already_in_mode(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=0, warn=True)
    result = run_module(nvpmodel.main, fake.args("MAXN_SUPER"), capsys, monkeypatch)
    assert result["changed"] is False
    assert result["reboot_required"] is False
    assert result["previous"] == result["current"] == {"id": 0, "name": "MAXN_SUPER"}
    assert result["target"] == {"id": 0, "name": "MAXN_SUPER", "cpu_online": 8}
    assert result["modes"][1] == {"id": 1, "name": "10W", "cpu_online": 4}
    assert fake.state["calls"] == [["-q"], ["-q", "--verbose"]]
    assert result["applied"] is True and result["mismatches"] == []


def test_nvpmodel_live_switch(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=3)
    result = run_module(nvpmodel.main, fake.args("40W"), capsys, monkeypatch)
    assert result["changed"] is True
    assert result["reboot_required"] is False
    assert result["previous"] == {"id": 3, "name": "25W"}
    assert result["current"] == {"id": 4, "name": "40W"}
    assert fake.state["current"] == 4
    assert fake.calls() == [["-q"], ["-m", "4"], ["-q"]]
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
    assert fake.calls() == [["-q"]]
    assert fake.state["current"] == current


def test_nvpmodel_status_names_the_mode_but_the_hardware_runs_another(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The status file says 25W (8 cores), but nvpmodel.service failed at boot and 4 cores are online: the
    # "already in mode" shortcut would report ok; the module applies the mode again.
    fake = FakeNvpmodel(tmp_path, current=3, hw_cores=4)
    result = run_module(nvpmodel.main, fake.args("25W"), capsys, monkeypatch)
    assert result["changed"] is True
    assert result["applied"] is False
    assert result["mismatches"][:1] == ["CPU_ONLINE CORE_4 is 0, the mode sets 1"]
    assert fake.calls() == [["-q"], ["-m", "3"], ["-q"]]


def test_nvpmodel_check_mode_predicts_the_repair(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvpmodel(tmp_path, current=3, hw_cores=4)
    result = run_module(nvpmodel.main, fake.args("25W", _ansible_check_mode=True), capsys, monkeypatch)
    assert result["changed"] is True
    assert result["reboot_required"] is True  # bringing cores online again: nvpmodel asks for a reboot
    assert fake.calls() == [["-q"]]


def test_nvpmodel_failed_service_is_not_the_mode_set(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvpmodel(tmp_path, current=0)
    systemctl = fake.bin_dir / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.log\nexit 0\n')  # is-failed: yes
    systemctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    result = run_module(nvpmodel.main, fake.args("MAXN_SUPER", service="nvpmodel.service"), capsys, monkeypatch)
    assert result["service_failed"] is True
    assert result["changed"] is True
    assert fake.calls() == [["-q"], ["-m", "0"], ["-q"]]
    assert (tmp_path / "systemctl.log").read_text() == "is-failed --quiet nvpmodel.service\n"


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


# --- jetson_clocks ---------------------------------------------------------------------------------

# jetson_clocks --show of an Orin NX 16GB on R36.4 (the real format) after nvpmodel ran (floors reset) and after
# jetson_clocks pinned them.
SHOW_UNPINNED = (
    "SOC family:tegra234  Machine:NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super\n"
    "Online CPUs: 0-7\n"
    "cpu0:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=729600 IdleStates: WFI=1 c7=1\n"
    "GPU MinFreq=306000000 MaxFreq=1173000000 CurrentFreq=306000000\n"
    "Active GPU TPCs: 8\n"
    "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride=0\n"
    "FAN Dynamic Speed Control=kernel hwmon0_pwm1=88\n"
    "NV Power Mode: MAXN_SUPER\n"
)
SHOW_PINNED = (
    SHOW_UNPINNED.replace("MinFreq=729600", "MinFreq=1984000")
    .replace("MinFreq=306000000", "MinFreq=1173000000")
    .replace("FreqOverride=0", "FreqOverride=1")
)

FAKE_JETSON_CLOCKS = """#!{python}
import json, sys
STATE = {state!r}
state = json.load(open(STATE))
state["calls"].append(sys.argv[1:])
json.dump(state, open(STATE, "w"))
if sys.argv[1:] == ["--show"]:
    show = {pinned!r} if state["pinned"] else {unpinned!r}
    if state["fan"]:
        show = show.replace("pwm1=88", "pwm1=255")
    print(show, end="")
    sys.exit(0)
if not state.get("broken"):
    state["pinned"] = True
    state["fan"] = state["fan"] or "--fan" in sys.argv
json.dump(state, open(STATE, "w"))
"""


class FakeClocks:
    def __init__(self, tmp_path: Path, pinned: bool, fan: bool = False, **flags: Any) -> None:
        self.path = tmp_path / "jetson_clocks"
        self.state_path = tmp_path / "clocks-state.json"
        self.state_path.write_text(json.dumps({"pinned": pinned, "fan": fan, "calls": [], **flags}))
        self.path.write_text(
            FAKE_JETSON_CLOCKS.format(
                python=sys.executable, state=str(self.state_path), pinned=SHOW_PINNED, unpinned=SHOW_UNPINNED
            )
        )
        self.path.chmod(0o755)

    @property
    def calls(self) -> list[list[str]]:
        calls: list[list[str]] = json.loads(self.state_path.read_text())["calls"]
        return calls


def test_clocks_already_pinned(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClocks(tmp_path, pinned=True)
    result = run_module(jetson_clocks.main, {"binary": str(fake.path)}, capsys, monkeypatch)
    assert (result["changed"], result["pinned"], result["problems"]) == (False, True, [])
    assert fake.calls == [["--show"]]


def test_clocks_repinned_after_nvpmodel_reset_them(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClocks(tmp_path, pinned=False)
    result = run_module(jetson_clocks.main, {"binary": str(fake.path)}, capsys, monkeypatch)
    assert (result["changed"], result["pinned"]) == (True, True)
    assert result["problems"][0] == "cpu0 MinFreq=729600 MaxFreq=1984000"
    assert fake.calls == [["--show"], [], ["--show"]]


def test_clocks_check_mode_reports_and_runs_nothing(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClocks(tmp_path, pinned=False)
    result = run_module(
        jetson_clocks.main, {"binary": str(fake.path), "_ansible_check_mode": True}, capsys, monkeypatch
    )
    assert (result["changed"], result["pinned"]) == (True, False)
    assert fake.calls == [["--show"]]


def test_clocks_fan_not_at_full_speed_is_repinned_with_fan(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClocks(tmp_path, pinned=True)
    result = run_module(jetson_clocks.main, {"binary": str(fake.path), "fan": True}, capsys, monkeypatch)
    assert result["changed"] is True
    assert result["problems"] == ["hwmon0_pwm1=88"]
    assert fake.calls == [["--show"], ["--fan"], ["--show"]]


def test_clocks_still_unpinned_fails_naming_what(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClocks(tmp_path, pinned=False, broken=True)
    result = run_module(jetson_clocks.main, {"binary": str(fake.path)}, capsys, monkeypatch)
    assert result["failed"] is True
    assert "still not pinned: cpu0 MinFreq=729600 MaxFreq=1984000" in result["msg"]


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
    args["docker_daemon_json"] = str(tmp_path / "no-daemon.json")
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


def test_facts_measure_dockers_real_data_root(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The common Jetson setup: Docker moved to an NVMe/SSD with data-root. The literal /var/lib/docker (on the
    # eMMC) must not be what the preflight measures for Docker's images.
    ssd = tmp_path / "ssd"
    (ssd / "docker").mkdir(parents=True)
    literal = tmp_path / "emmc/var/lib/docker"
    literal.mkdir(parents=True)
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"data-root": str(ssd / "docker"), "runtimes": {"nvidia": {}}}))
    isolated_path(tmp_path, monkeypatch, {"docker": "exit 1"})  # installed, daemon not running
    args = {
        "release_file": str(tmp_path / "none"),
        "device_tree_dir": str(tmp_path / "none"),
        "disk_paths": [str(literal), str(literal / "overlay2"), str(tmp_path / "opt/llm")],
        "docker_root": str(literal),
        "docker_daemon_json": str(daemon_json),
    }
    facts = run_module(jetson_facts.main, args, capsys, monkeypatch)["jetson"]
    assert facts["docker"]["data_root"] == str(ssd / "docker")
    assert facts["docker"]["data_root_source"] == "daemon.json"
    assert facts["disk_checked_path"] == {
        str(literal): str(ssd / "docker"),
        str(literal / "overlay2"): str(ssd / "docker"),  # not created yet: its parent on the SSD
        str(tmp_path / "opt/llm"): str(tmp_path),
    }


def test_facts_running_daemon_wins_over_daemon_json(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = tmp_path / "nvme/docker"
    running.mkdir(parents=True)
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text('{"data-root": "/edited/but/not/restarted"}')
    info = f'[ "$1 $2 $3" = "info --format {{{{.DockerRootDir}}}}" ] && echo {running} && exit 0\nexit 1'
    isolated_path(tmp_path, monkeypatch, {"docker": info})
    args = {
        "release_file": str(tmp_path / "none"),
        "device_tree_dir": str(tmp_path / "none"),
        "disk_paths": ["/var/lib/docker"],
        "docker_daemon_json": str(daemon_json),
    }
    facts = run_module(jetson_facts.main, args, capsys, monkeypatch)["jetson"]
    assert (facts["docker"]["data_root"], facts["docker"]["data_root_source"]) == (str(running), "docker info")
    assert facts["disk_checked_path"] == {"/var/lib/docker": str(running)}


def test_facts_cuda_driver_and_tables(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    args = make_jetson_tree(tmp_path / "root")
    (tmp_path / "root/etc/nvpmodel/nvpmodel_p3767_0000.conf").write_text(SUPER_CONF_TEXT)
    isolated_path(tmp_path, monkeypatch, {})
    facts = run_module(jetson_facts.main, {**args, "docker_daemon_json": str(tmp_path / "none")}, capsys, monkeypatch)
    assert facts["jetson"]["cuda_driver"] == "12.6"
    assert facts["jetson"]["nvpmodel"]["tables"] == [
        str(tmp_path / "root/etc/nvpmodel/nvpmodel_p3767_0000.conf"),
        str(tmp_path / "root/etc/nvpmodel/nvpmodel_p3767_0000_super.conf"),
    ]
