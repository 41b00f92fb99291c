"""Unit tests of the jetsim emulators (tests/jetsim/rootfs): jetsim-identity, nvpmodel, jetson_clocks,
tegrastats. Each runs as a subprocess against a temporary root (JETSIM_ROOT); nothing outside it is touched.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTFS = REPO / "tests/jetsim/rootfs"
TOOLS = {
    "identity": ROOTFS / "usr/local/sbin/jetsim-identity",
    "init": ROOTFS / "usr/local/sbin/jetsim-init",
    "nvpmodel": ROOTFS / "usr/sbin/nvpmodel",
    "nvfancontrol": ROOTFS / "usr/sbin/nvfancontrol",
    "jetson_clocks": ROOTFS / "usr/bin/jetson_clocks",
    "tegrastats": ROOTFS / "usr/bin/tegrastats",
}
_spec = importlib.util.spec_from_file_location("jetsim_variants_for_emulators", REPO / "tests/jetsim/variants.py")
assert _spec and _spec.loader
variants = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = variants
_spec.loader.exec_module(variants)

REBOOT_PROMPT = [
    "NVPM WARN: Reboot required for changing to this power mode: 0",
    "NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:",
]
DECLINED = "NVPM ERROR: optMask is 1, no request for power mode"
TEGRASTATS_LINE = re.compile(
    r"^\d\d-\d\d-\d{4} \d\d:\d\d:\d\d RAM (?P<used>\d+)/(?P<total>\d+)MB \(lfb \d+x4MB\) "
    r"SWAP \d+/\d+MB \(cached \d+MB\) CPU \[(?P<cpus>(?:\d+%@\d+|off)(?:,(?:\d+%@\d+|off))*)\] "
    r"EMC_FREQ \d+%@(?P<emc>\d+) GR3D_FREQ \d+%@\[(?P<gpu>\d+)\] "
    r"NVENC off NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE \d+ "
    r"(?:\w+@-?\d+(?:\.\d+)?C ){6}"
    r"VDD_IN \d+mW/\d+mW VDD_CPU_GPU_CV \d+mW/\d+mW VDD_SOC \d+mW/\d+mW$"
)
# The real R36 format: two spaces after `cpuN:`.
SHOW_CPU = re.compile(r"^cpu(\d+):  Online=1 Governor=\w+ MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", re.M)


class Host:
    """One emulated Jetson laid out under a temporary directory."""

    def __init__(self, base: Path, variant: str, power_mode: str | None) -> None:
        self.root = base / "root"
        self.config = variants.host_config(variant, "jetson-1", power_mode)
        host_json = self.root / "etc/jetsim/host.json"
        host_json.parent.mkdir(parents=True, exist_ok=True)
        host_json.write_text(json.dumps(self.config, indent=2))
        self.reboot_log = base / "reboots.log"
        recorder = base / "record_reboot.py"
        recorder.write_text(
            "import pathlib, sys\n"
            "log = pathlib.Path(sys.argv[1])\n"
            "log.write_text((log.read_text() if log.exists() else '') + ' '.join(sys.argv[2:]) + '\\n')\n"
        )
        self.env = {
            **os.environ,
            "JETSIM_ROOT": str(self.root),
            "JETSIM_FAKE_UID": "0",
            "JETSIM_REBOOT_CMD": shlex.join([sys.executable, str(recorder), str(self.reboot_log), "reboot"]),
            "JETSIM_NVPMODEL_PROMPT_TIMEOUT": "5",
            "HOME": "/root",
        }
        self.env.pop("JETSIM_TEGRASTATS_COUNT", None)

    def run(
        self, tool: str, *args: str, input: str | None = None, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        if input is None and "stdin" not in kw:
            kw["stdin"] = subprocess.DEVNULL
        return subprocess.run(
            [sys.executable, str(TOOLS[tool]), *args],
            input=input,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=30,
            **kw,
        )

    def ok(self, tool: str, *args: str, **kw: Any) -> str:
        proc = self.run(tool, *args, **kw)
        assert proc.returncode == 0, f"{tool} {args}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def boot(self) -> None:
        """What systemd does at boot: jetsim-identity, then nvpmodel.service."""
        self.ok("identity")
        self.ok("nvpmodel", "-f", "/etc/nvpmodel.conf")

    def power_cycle(self) -> None:
        shutil.rmtree(self.root / "run")  # /run is a tmpfs
        self.boot()

    def query(self) -> list[str]:
        return self.ok("nvpmodel", "-q").splitlines()

    def status(self) -> str:
        return (self.root / "var/lib/nvpmodel/status").read_text().strip()

    def clocks(self) -> dict[str, Any]:
        return dict(json.loads((self.root / "run/jetsim/clocks.json").read_text()))

    def reboots(self) -> list[str]:
        return self.reboot_log.read_text().splitlines() if self.reboot_log.exists() else []

    def read(self, path: str) -> bytes:
        return (self.root / path.lstrip("/")).read_bytes()


@pytest.fixture(scope="session")
def booted_root(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str | None], Path]:
    """A freshly booted root per (variant, power mode), made once by really running the boot steps;
    tests get a copy (cheaper than booting again: every tool run is a Python start)."""
    cache: dict[tuple[str, str | None], Path] = {}

    def get(variant: str, power_mode: str | None) -> Path:
        if (variant, power_mode) not in cache:
            host = Host(tmp_path_factory.mktemp("booted"), variant, power_mode)
            host.boot()
            cache[variant, power_mode] = host.root
        return cache[variant, power_mode]

    return get


@pytest.fixture
def make_host(tmp_path: Path, booted_root: Callable[[str, str | None], Path]) -> Callable[..., Host]:
    counter = itertools.count()

    def make(variant: str = "orin-nx-16-super", power_mode: str | None = None, boot: bool = True) -> Host:
        base = tmp_path / f"host{next(counter)}"
        base.mkdir()
        if boot:
            shutil.copytree(booted_root(variant, power_mode), base / "root", symlinks=True)
        return Host(base, variant, power_mode)

    return make


# ------------------------------------------------------------------------------------------ identity


def test_tools_are_executable_python3_scripts() -> None:
    for path in TOOLS.values():
        assert os.access(path, os.X_OK), path
        assert path.read_text().startswith("#!/usr/bin/python3\n"), path


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs /usr/bin/python3")
def test_shebang_runs(make_host: Callable[..., Host]) -> None:
    host = make_host()
    proc = subprocess.run([str(TOOLS["nvpmodel"]), "-q"], env=host.env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["NV Power Mode: 40W", "4"]


def test_identity_lays_out_jetson_files(make_host: Callable[..., Host]) -> None:
    host = make_host()
    release = host.read("/etc/nv_tegra_release").decode()
    assert release.splitlines()[0] == (
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
        "DATE: Wed Jan  8 01:49:37 UTC 2025"
    )
    assert os.readlink(host.root / "etc/nvpmodel.conf") == "/etc/nvpmodel/nvpmodel_p3767_0000_super.conf"
    base = "/sys/firmware/devicetree/base"
    assert host.read(f"{base}/model") == b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super\0"
    assert host.read(f"{base}/compatible") == (
        b"nvidia,p3768-0000+p3767-0000-super\0nvidia,p3767-0000\0nvidia,tegra234\0"
    )
    meminfo = host.read("/proc/meminfo").decode()
    assert re.search(r"^MemTotal:\s+16031744 kB$", meminfo, re.M)
    assert re.search(r"^MemAvailable:\s+\d+ kB$", meminfo, re.M)
    cuda = json.loads(host.read("/usr/local/cuda-12.6/version.json"))
    assert cuda["cuda"]["version"] == "12.6.68"
    assert host.status() == "pmode:0004 fmode:quiet"


def test_identity_dpkg_stanza_is_idempotent(make_host: Callable[..., Host]) -> None:
    host = make_host(boot=False)
    status = host.root / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    other = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b2\n"
    stale = "Package: nvidia-l4t-core\nStatus: install ok installed\nArchitecture: arm64\nVersion: 35.1.0-1\n"
    status.write_text(f"{other}\n{stale}\n")
    host.ok("identity")
    host.ok("identity")
    text = status.read_text()
    assert text.count("Package: nvidia-l4t-core") == 1
    assert "Version: 36.4.3-20250107174145" in text and "35.1.0-1" not in text
    assert text.startswith(other)
    assert (host.root / "var/lib/dpkg/info/nvidia-l4t-core.list").read_text() == "/etc/nv_tegra_release\n"
    if shutil.which("dpkg-query"):
        out = subprocess.run(
            ["dpkg-query", f"--admindir={status.parent}", "-W", "-f=${Version}", "nvidia-l4t-core"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out == "36.4.3-20250107174145"


def test_boot_id_is_stable_within_a_boot_and_changes_on_reboot(make_host: Callable[..., Host]) -> None:
    host = make_host()
    first = host.read("/proc/sys/kernel/random/boot_id").decode()
    assert re.fullmatch(r"[0-9a-f-]{36}\n", first) and uuid.UUID(first.strip())
    host.ok("identity")  # re-run in the same boot
    assert host.read("/proc/sys/kernel/random/boot_id").decode() == first
    host.power_cycle()
    second = host.read("/proc/sys/kernel/random/boot_id").decode()
    assert second != first
    summary = json.loads(host.read("/run/jetsim/identity.json"))
    assert summary["boot_count"] == 2 and summary["boot_id"] == second.strip()
    assert summary["mounted"] is False


def test_identity_without_host_json_does_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "JETSIM_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(TOOLS["identity"])], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "nothing to do" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_init_applies_identity_then_execs_systemd(make_host: Callable[..., Host]) -> None:
    host = make_host(boot=False)
    fake_init = shlex.join([sys.executable, "-c", "import sys; print('init', *sys.argv[1:])"])
    proc = host.run("init", "--log-level=info", env={"JETSIM_INIT": fake_init})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "init --log-level=info\n"
    assert host.read("/etc/nv_tegra_release").startswith(b"# R36 (release), REVISION: 4.3,")
    boot_id = host.read("/proc/sys/kernel/random/boot_id")
    host.ok("identity")  # what jetsim-identity.service then does during the same boot
    assert host.read("/proc/sys/kernel/random/boot_id") == boot_id


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="needs ssh-keygen")
def test_identity_generates_missing_ssh_host_keys(make_host: Callable[..., Host]) -> None:
    host = make_host(boot=False)
    ssh = host.root / "etc/ssh"
    ssh.mkdir(parents=True)
    (ssh / "ssh_host_rsa_key").write_text("kept\n")  # present keys are kept (and RSA is slow to make)
    host.ok("identity")
    key = ssh / "ssh_host_ed25519_key.pub"
    assert key.read_text().startswith("ssh-ed25519 ")
    assert (ssh / "ssh_host_ecdsa_key").exists()
    assert (ssh / "ssh_host_rsa_key").read_text() == "kept\n"
    before = key.read_text()
    host.ok("identity")
    assert key.read_text() == before


def test_initial_power_mode_is_written_only_on_first_boot(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="25W")
    assert host.status() == "pmode:0003 fmode:quiet"
    host.ok("nvpmodel", "-m", "4")
    host.power_cycle()
    assert host.status() == "pmode:0004 fmode:quiet"


# ------------------------------------------------------------------------------------------ nvpmodel


def test_query_prints_name_then_id(make_host: Callable[..., Host]) -> None:
    assert make_host().query() == ["NV Power Mode: 40W", "4"]
    assert make_host(variant="orin-nx-16").query() == ["NV Power Mode: 15W", "2"]


def test_query_warns_about_missing_fan_mode_on_vendor_table(make_host: Callable[..., Host]) -> None:
    host = make_host(variant="maxn-id3")
    assert host.query() == ["NVPM WARN: fan mode is not set!", "NV Power Mode: 15W", "0"]
    conf = host.read(host.config["nvpmodel"]["conf"]).decode()
    assert "< POWER_MODEL ID=3 NAME=MAXN_SUPER >" in conf


def test_live_switch_25w_to_maxn_super(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="25W")
    proc = host.run("nvpmodel", "-m", "0")
    assert proc.returncode == 0, proc.stdout
    assert "Reboot required" not in proc.stdout
    assert host.query() == ["NV Power Mode: MAXN_SUPER", "0"]
    assert host.status() == "pmode:0000 fmode:quiet"
    clocks = host.clocks()
    assert clocks["mode_id"] == 0 and clocks["mode_name"] == "MAXN_SUPER"
    assert clocks["online_cpus"] == list(range(8))
    assert clocks["cpus"][0]["max_khz"] == 1984000  # -1 in the table: hardware maximum
    assert clocks["gpu"]["max_hz"] == 1173000000
    assert host.reboots() == []


def test_same_mode_applies(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="15W")
    proc = host.run("nvpmodel", "-m", "2")
    assert proc.returncode == 0 and proc.stdout == ""
    assert host.clocks()["updated_by"] == "nvpmodel -m 2"


@pytest.mark.parametrize("answer", ["no\n", "", "y\n", "NO\n"])
def test_core_count_change_declined(make_host: Callable[..., Host], answer: str) -> None:
    host = make_host(power_mode="15W")
    before = host.clocks()
    proc = host.run("nvpmodel", "-m", "0", input=answer) if answer else host.run("nvpmodel", "-m", "0")
    assert proc.returncode != 0
    assert proc.stdout.splitlines() == [*REBOOT_PROMPT, DECLINED]
    assert host.status() == "pmode:0002 fmode:quiet"
    assert host.query() == ["NV Power Mode: 15W", "2"]
    assert host.clocks() == before
    assert host.reboots() == []


def test_core_count_change_without_an_answer_times_out(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="15W")
    read_end, write_end = os.pipe()  # stdin stays open and silent: a real device would hang here
    try:
        proc = host.run("nvpmodel", "-m", "0", stdin=read_end, env={"JETSIM_NVPMODEL_PROMPT_TIMEOUT": "0.2"})
    finally:
        os.close(read_end)
        os.close(write_end)
    assert proc.returncode != 0 and DECLINED in proc.stdout
    assert host.status() == "pmode:0002 fmode:quiet"


@pytest.mark.parametrize("answer", ["YES\n", "yes\n"])
def test_core_count_change_confirmed_persists_and_reboots(make_host: Callable[..., Host], answer: str) -> None:
    host = make_host(power_mode="15W")
    proc = host.run("nvpmodel", "-m", "0", input=answer)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines() == [*REBOOT_PROMPT, "NVPM WARN: rebooting"]
    assert host.reboots() == ["reboot"]
    assert host.status() == "pmode:0000 fmode:quiet"
    assert host.clocks()["mode_id"] == 2  # still running the old mode until the reboot happens
    host.power_cycle()
    assert host.query() == ["NV Power Mode: MAXN_SUPER", "0"]
    assert host.clocks()["mode_id"] == 0 and len(host.clocks()["online_cpus"]) == 8


def test_failing_reboot_command_is_an_error(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="15W")
    proc = host.run("nvpmodel", "-m", "3", input="YES\n", env={"JETSIM_REBOOT_CMD": "false"})
    assert proc.returncode != 0 and "reboot command failed" in proc.stdout


def test_unknown_mode_id_is_rejected(make_host: Callable[..., Host]) -> None:
    host = make_host()
    for bad in ("5", "MAXN_SUPER"):
        proc = host.run("nvpmodel", "-m", bad)
        assert proc.returncode != 0 and "NVPM ERROR" in proc.stdout
    assert host.status() == "pmode:0004 fmode:quiet"


def test_mode_change_needs_root(make_host: Callable[..., Host]) -> None:
    host = make_host()
    proc = host.run("nvpmodel", "-m", "0", env={"JETSIM_FAKE_UID": "1000"})
    assert proc.returncode != 0 and "NVPM ERROR" in proc.stdout
    assert host.status() == "pmode:0004 fmode:quiet"
    assert host.run("nvpmodel", "-q", env={"JETSIM_FAKE_UID": "1000"}).returncode == 0


def test_boot_applies_persisted_mode(make_host: Callable[..., Host]) -> None:
    host = make_host(boot=False)
    status = host.root / "var/lib/nvpmodel/status"
    status.parent.mkdir(parents=True)
    status.write_text("pmode:0001 fmode:quiet\n")
    host.boot()
    clocks = host.clocks()
    assert (clocks["mode_id"], clocks["mode_name"], clocks["online_cpus"]) == (1, "10W", [0, 1, 2, 3])
    assert clocks["emc"]["max_hz"] == 2133000000
    assert clocks["cpus"][0]["max_khz"] == 1190400
    assert clocks["updated_by"] == "nvpmodel -f"


def test_boot_falls_back_to_table_default(make_host: Callable[..., Host]) -> None:
    host = make_host(boot=False)
    status = host.root / "var/lib/nvpmodel/status"
    status.parent.mkdir(parents=True)
    status.write_text("pmode:0009 fmode:quiet\n")  # a mode this table does not have
    host.boot()
    assert host.clocks()["mode_id"] == 4
    assert host.status() == "pmode:0004 fmode:quiet"


def test_vendor_table_resolves_maxn_super_by_id_3(make_host: Callable[..., Host]) -> None:
    host = make_host(variant="maxn-id3", power_mode="25W")
    assert host.run("nvpmodel", "-m", "3").returncode == 0
    assert host.query()[-2:] == ["NV Power Mode: MAXN_SUPER", "3"]
    assert host.status() == "pmode:0003"


def test_print_modes(make_host: Callable[..., Host]) -> None:
    out = make_host().ok("nvpmodel", "-p", "--verbose")
    assert "NVPM VERB: POWER_MODEL: ID=0 NAME=MAXN_SUPER" in out
    assert "NVPM VERB: PM_CONFIG: DEFAULT=4" in out


# ------------------------------------------------------------------------------------------ jetson_clocks


def show_cpus(out: str) -> list[tuple[int, int, int, int]]:
    return [tuple(int(v) for v in m) for m in SHOW_CPU.findall(out)]  # type: ignore[misc]


def test_jetson_clocks_pins_and_shows(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="15W")
    before = host.ok("jetson_clocks", "--show")
    assert before.startswith(
        "SOC family:tegra234  Machine:NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super\n"
        "Online CPUs: 0-3\n"
    )
    assert all(low < high for _, low, high, _ in show_cpus(before))
    assert "cpu4:  Online=0" in before and before.rstrip().endswith("NV Power Mode: 15W")
    assert "\nActive GPU TPCs: 2\n" in before  # 15W gates TPCs (TPC_PG_MASK 252)
    assert "FreqOverride=0" in before
    host.ok("jetson_clocks")
    after = host.ok("jetson_clocks", "--show")
    cpus = show_cpus(after)
    assert [c[0] for c in cpus] == [0, 1, 2, 3]
    assert all(low == high == cur == 1420800 for _, low, high, cur in cpus)
    gpu = re.search(r"^GPU MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)$", after, re.M)
    emc = re.search(r"^EMC MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+) FreqOverride=1$", after, re.M)
    assert gpu and len({*gpu.groups()}) == 1 and gpu.group(1) == "612000000"
    assert emc and len({*emc.groups()}) == 1
    clocks = host.clocks()
    assert clocks["pinned"] is True and clocks["fan_max"] is False and clocks["mode_id"] == 2


def test_jetson_clocks_is_undone_by_reboot_and_by_mode_change(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="25W")
    host.ok("jetson_clocks")
    host.power_cycle()
    assert host.clocks()["pinned"] is False
    host.ok("jetson_clocks")
    host.ok("nvpmodel", "-m", "0")
    assert host.clocks()["pinned"] is False


def test_jetson_clocks_store_and_restore(make_host: Callable[..., Host]) -> None:
    host = make_host()
    unpinned = host.clocks()
    host.ok("jetson_clocks", "--store")
    stored = host.root / "root/l4t_dfs.conf"
    assert "/sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq:729600" in stored.read_text().splitlines()
    host.ok("jetson_clocks")
    assert host.clocks()["pinned"] is True
    host.ok("jetson_clocks", "--restore")
    restored = host.clocks()
    assert restored["pinned"] is False
    for key in ("cpus", "gpu", "emc", "online_cpus", "fan_pwm"):
        assert restored[key] == unpinned[key], key
    show = host.ok("jetson_clocks", "--show")
    assert all(low < high for _, low, high, _ in show_cpus(show))


def test_jetson_clocks_store_to_explicit_file(make_host: Callable[..., Host], tmp_path: Path) -> None:
    host = make_host()
    target = tmp_path / "saved.conf"
    host.ok("jetson_clocks", "--store", str(target))
    assert target.exists()
    host.ok("jetson_clocks")
    host.ok("jetson_clocks", "--restore", str(target))
    assert host.clocks()["pinned"] is False


def test_jetson_clocks_restore_without_file_fails(make_host: Callable[..., Host], tmp_path: Path) -> None:
    host = make_host()
    proc = host.run("jetson_clocks", "--restore", str(tmp_path / "missing.conf"))
    assert proc.returncode != 0 and "not found" in proc.stdout
    assert host.run("jetson_clocks", "--restore").returncode != 0


def test_jetson_clocks_fan(make_host: Callable[..., Host]) -> None:
    host = make_host()
    host.ok("jetson_clocks", "--fan")
    clocks = host.clocks()
    assert clocks["fan_max"] is True and clocks["pinned"] is True and clocks["fan_pwm"] == 255
    # R36.4's jetson_clocks names the kernel as the fan's controller whatever runs (the real line).
    assert "\nFAN Dynamic Speed Control=kernel hwmon2_pwm1=255\n" in host.ok("jetson_clocks", "--show")


def start_nvfancontrol(host: Host) -> subprocess.Popen[str]:
    """nvfancontrol.service: the daemon in the background, its first tick done when its pid file exists."""
    daemon = subprocess.Popen(
        [sys.executable, str(TOOLS["nvfancontrol"])],
        env={**host.env, "JETSIM_NVFANCONTROL_INTERVAL": "60"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pidfile = host.root / "run/jetsim/nvfancontrol.pid"
    for _ in range(600):  # the daemon writes the pid file right after starting (bounded wait, no fixed sleep)
        if pidfile.exists() and pidfile.read_text().strip() == str(daemon.pid):
            break
        assert daemon.poll() is None, daemon.communicate()[0]
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.01)"], check=True)
    return daemon


def test_r36_5_fan_lines_follow_nvfancontrol(make_host: Callable[..., Host]) -> None:
    host = make_host("r36.5")
    daemon = start_nvfancontrol(host)
    try:
        show = host.ok("jetson_clocks", "--show")
        assert (
            "\nFAN Dynamic Speed Control=nvfancontrol hwmon2_pwm1=77\n"
            "FAN Dynamic Speed Control=nvfancontrol hwmon2_pwm1_enable=1\n" in show
        )
        host.ok("jetson_clocks", "--fan")  # stops nvfancontrol first, as the real script does
        assert daemon.wait(timeout=10) != 0  # SIGTERM
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    show = host.ok("jetson_clocks", "--show")
    assert (
        "\nFAN Dynamic Speed Control=disabled hwmon2_pwm1=255\n"
        "FAN Dynamic Speed Control=disabled hwmon2_pwm1_enable=1\n" in show
    )


def test_nvfancontrol_takes_the_fan_back_when_it_starts_after_jetson_clocks(make_host: Callable[..., Host]) -> None:
    host = make_host()
    host.ok("jetson_clocks", "--fan")
    host.ok("nvfancontrol", env={"JETSIM_NVFANCONTROL_TICKS": "1"})  # one pass of its control loop
    clocks = host.clocks()
    assert clocks["fan_pwm"] == 77 and clocks["fan_max"] is False
    assert clocks["pinned"] is True  # the clocks are not nvfancontrol's
    assert not (host.root / "run/jetsim/nvfancontrol.pid").exists()


# ------------------------------------------------------------------------------------------ L4T's nvpmodel quirks


def mismatches(host: Host) -> list[str]:
    from ansible_collections.jetson_llm.fleet.plugins.module_utils import jetson

    verbose = host.ok("nvpmodel", "-q", "--verbose")
    entries = jetson.parse_nvpmodel_verbose(verbose)
    assert entries, verbose
    return jetson.nvpmodel_mismatches(entries)


def test_verbose_query_matches_the_table_after_boot_switch_and_pinning(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="25W")
    assert mismatches(host) == []
    host.ok("jetson_clocks")
    assert mismatches(host) == []
    host.ok("nvpmodel", "-m", "4")
    assert mismatches(host) == []
    assert "CONF_VAL: 9223372036854775807" in host.ok("nvpmodel", "-q", "--verbose")  # -1 printed as LONG_MAX


def test_failed_nvpmodel_service_leaves_a_status_the_hardware_does_not_run(make_host: Callable[..., Host]) -> None:
    host = make_host("nvpmodel-fails", power_mode="25W", boot=False)
    host.ok("identity")
    host.ok("nvfancontrol", env={"JETSIM_NVFANCONTROL_TICKS": "1"})  # at boot it may start first
    proc = host.run("nvpmodel", "-f", "/etc/nvpmodel.conf")  # what nvpmodel.service runs at boot
    assert proc.returncode == 234, proc.stdout
    assert "DO YOU WANT TO REBOOT NOW?" in proc.stdout
    assert host.query() == ["NV Power Mode: 25W", "3"]  # the status file still names the mode
    found = mismatches(host)  # the kernel's boot state: full cpufreq ranges, GPU uncapped
    assert "CPU_A78_0 MIN_FREQ is 115200, the mode sets 729600" in found
    assert "CPU_A78_0 MAX_FREQ is 1984000, the mode caps it at 1497600" in found
    assert "GPU MAX_FREQ is 1173000000, the mode caps it at 816000000" in found
    host.ok("nvpmodel", "-m", "3")  # applying the mode again works live (same cores, same masks)
    assert mismatches(host) == []
    assert host.run("nvpmodel", "-f", "/etc/nvpmodel.conf").returncode == 0  # a second run of the unit succeeds


def test_a_gpu_power_gating_mask_change_asks_for_a_reboot(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="25W")
    conf = host.root / host.config["nvpmodel"]["conf"].lstrip("/")
    text = conf.read_text()
    block = text.index("< POWER_MODEL ID=4 NAME=40W >")
    conf.write_text(text[:block] + text[block:].replace("TPC_PG_MASK 240", "TPC_PG_MASK 248", 1))
    proc = host.run("nvpmodel", "-m", "4", input="no\n")  # 25W -> 40W: both 8 cores, another TPC mask
    assert proc.stdout.splitlines()[:2] == [
        "NVPM WARN: Reboot required for changing to this power mode: 4",
        "NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:",
    ]
    assert proc.returncode != 0 and host.query() == ["NV Power Mode: 25W", "3"]


def test_jetson_clocks_needs_root(make_host: Callable[..., Host]) -> None:
    host = make_host()
    proc = host.run("jetson_clocks", env={"JETSIM_FAKE_UID": "1000"})
    assert proc.returncode != 0 and "as a root user" in proc.stdout
    assert host.clocks()["pinned"] is False


# ------------------------------------------------------------------------------------------ tegrastats


def test_tegrastats_line_format(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="15W")
    out = host.ok("tegrastats", "--interval", "1", env={"JETSIM_TEGRASTATS_COUNT": "2"})
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        match = TEGRASTATS_LINE.match(line)
        assert match, line
        assert int(match["total"]) == 16031744 // 1024
        assert 0 < int(match["used"]) < int(match["total"])
        cpus = match["cpus"].split(",")
        assert len(cpus) == 8 and cpus[4:] == ["off"] * 4 and all("%@" in c for c in cpus[:4])


def test_tegrastats_reflects_pinned_clocks(make_host: Callable[..., Host]) -> None:
    host = make_host(power_mode="MAXN_SUPER")
    host.ok("jetson_clocks")
    line = host.ok("tegrastats", env={"JETSIM_TEGRASTATS_COUNT": "1"})
    match = TEGRASTATS_LINE.match(line.strip())
    assert match, line
    assert all(c.endswith("@1984") for c in match["cpus"].split(","))
    assert (match["gpu"], match["emc"]) == ("1173", "3199")


def test_tegrastats_logfile(make_host: Callable[..., Host], tmp_path: Path) -> None:
    host = make_host()
    log = tmp_path / "stats.log"
    out = host.ok("tegrastats", "--logfile", str(log), env={"JETSIM_TEGRASTATS_COUNT": "1"})
    assert out == ""
    assert TEGRASTATS_LINE.match(log.read_text().strip())


def test_tegrastats_stops_on_sigterm(make_host: Callable[..., Host]) -> None:
    host = make_host()
    proc = subprocess.Popen(
        [sys.executable, str(TOOLS["tegrastats"]), "--interval", "20"],
        env=host.env,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert TEGRASTATS_LINE.match(proc.stdout.readline().strip())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_tegrastats_start_and_stop(make_host: Callable[..., Host], tmp_path: Path) -> None:
    host = make_host()
    log = tmp_path / "daemon.log"
    host.ok("tegrastats", "--start", "--interval", "50", "--logfile", str(log))
    pid_file = host.root / "run/jetsim/tegrastats.pid"
    pid = int(pid_file.read_text())
    try:
        assert TEGRASTATS_LINE.match(log.read_text().splitlines()[0])
        assert Path(f"/proc/{pid}").exists()
        assert "already running" in host.ok("tegrastats", "--start", "--logfile", str(log))
    finally:
        host.ok("tegrastats", "--stop")
    assert not pid_file.exists()
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
