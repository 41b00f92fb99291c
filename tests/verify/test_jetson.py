"""Per-host checks of what jetson_preflight asserts and jetson_power configures.

See conftest.py for how to run them and where the expected values come from.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

CLOCKS_UNIT = "jetson-clocks.service"
CLOCKS_UNIT_PATH = "/etc/systemd/system/jetson-clocks.service"
RELEASE_RE = re.compile(r"^#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<minor>\d+)(?:\.(?P<patch>\d+))?")
DPKG_VERSION_RE = re.compile(r"^(?:\d+:)?(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?")
MODULE_RE = re.compile(r"p\d{4}-\d{4}")
POWER_MODE_RE = re.compile(r"NV Power Mode\s*:\s*(?P<name>\S+)")
CPU_RE = re.compile(r"^cpu(?P<cpu>\d+):\s+Online=(?P<online>\d).*?MinFreq=(?P<min>\d+)\s+MaxFreq=(?P<max>\d+)", re.M)


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in str(text).split("."))


def l4t_version(host: Any, release_file: str) -> tuple[int, ...]:
    """L4T version from the release file's first line, else from the nvidia-l4t-core package."""
    release = host.file(release_file)
    if release.exists:
        match = RELEASE_RE.match(release.content_string.lstrip())
        assert match, f"{release_file}: unexpected first line {release.content_string.splitlines()[:1]}"
    else:
        package = host.run("dpkg-query -W -f='${Version}' nvidia-l4t-core")
        assert package.rc == 0, f"no {release_file} and no nvidia-l4t-core package"
        match = DPKG_VERSION_RE.match(package.stdout.strip())
        assert match, f"nvidia-l4t-core version {package.stdout!r}"
    return (int(match["major"]), int(match["minor"]), int(match["patch"] or 0))


def test_l4t_release_supported(host: Any, settings: Any) -> None:
    found = l4t_version(host, settings["jetson_preflight_release_file"])
    low, high = settings["jetson_preflight_l4t_min"], settings["jetson_preflight_l4t_max"]
    assert version(low) <= found < version(high), f"L4T {found} outside {low} <= L4T < {high}"


def test_board_module_allowed(host: Any, settings: Any) -> None:
    path = f"{settings['jetson_preflight_device_tree_dir'].rstrip('/')}/compatible"
    compatible = host.file(path)
    assert compatible.exists, f"{path} is missing"
    entries = [entry.decode("ascii", "replace") for entry in compatible.content.split(b"\0") if entry]
    modules = {module for entry in entries for module in MODULE_RE.findall(entry)}
    allowed = set(settings["jetson_preflight_allowed_modules"])
    assert modules & allowed, f"compatible {entries}: no module from {sorted(allowed)}"


def test_power_mode(host: Any, settings: Any) -> None:
    with host.sudo():
        query = host.run(f"{settings['jetson_power_nvpmodel_binary']} -q")
    assert query.rc == 0, query.stderr
    match = POWER_MODE_RE.search(query.stdout + query.stderr)
    assert match, f"nvpmodel -q printed no power mode: {query.stdout!r}"
    assert match["name"].casefold() == str(settings["jetson_power_mode"]).casefold()


@pytest.fixture
def clocks_enabled(host: Any, settings: Any) -> bool:
    enabled = bool(settings["jetson_power_clocks_enabled"])
    if not enabled:
        assert not host.file(CLOCKS_UNIT_PATH).exists, "jetson_power_clocks_enabled is false but the unit exists"
    return enabled


def test_clocks_service_enabled(host: Any, clocks_enabled: bool) -> None:
    if not clocks_enabled:
        pytest.skip("jetson_power_clocks_enabled is false (the unit is absent)")
    assert host.service(CLOCKS_UNIT).is_enabled


def test_clocks_service_last_run_succeeded(host: Any, clocks_enabled: bool) -> None:
    if not clocks_enabled:
        pytest.skip("jetson_power_clocks_enabled is false (the unit is absent)")
    show = host.check_output(f"systemctl show -p Result,ActiveState {CLOCKS_UNIT}")
    state = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    assert state == {"ActiveState": "active", "Result": "success"}


def test_clocks_service_fan_option(host: Any, settings: Any, clocks_enabled: bool) -> None:
    if not clocks_enabled:
        pytest.skip("jetson_power_clocks_enabled is false (the unit is absent)")
    exec_start = host.check_output(f"systemctl show -p ExecStart {CLOCKS_UNIT}")
    assert settings["jetson_power_clocks_binary"] in exec_start
    assert ("--fan" in exec_start) == bool(settings["jetson_power_clocks_fan_max"])


def test_cpu_clocks_pinned(host: Any, settings: Any, clocks_enabled: bool) -> None:
    if not clocks_enabled:
        pytest.skip("jetson_power_clocks_enabled is false: clocks are not pinned at boot")
    with host.sudo():
        show = host.run(f"{settings['jetson_power_clocks_binary']} --show")
    assert show.rc == 0, show.stderr
    online = [cpu for cpu in CPU_RE.finditer(show.stdout) if cpu["online"] == "1"]
    assert online, f"jetson_clocks --show lists no online CPU: {show.stdout!r}"
    unpinned = {f"cpu{cpu['cpu']}": (cpu["min"], cpu["max"]) for cpu in online if cpu["min"] != cpu["max"]}
    assert not unpinned, f"MinFreq != MaxFreq: {unpinned}"
