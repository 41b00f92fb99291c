"""Per-host checks of what jetson_preflight asserts and jetson_power configures.

See conftest.py for how to run them and where the expected values come from.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from ansible_collections.jetson_llm.fleet.plugins.module_utils import jetson

CLOCKS_UNIT = "jetson-clocks.service"
CLOCKS_UNIT_PATH = "/etc/systemd/system/jetson-clocks.service"
RELEASE_RE = re.compile(r"^#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<minor>\d+)(?:\.(?P<patch>\d+))?")
DPKG_VERSION_RE = re.compile(r"^(?:\d+:)?(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?")
MODULE_RE = re.compile(r"p\d{4}-\d{4}")
POWER_MODE_RE = re.compile(r"NV Power Mode\s*:\s*(?P<name>\S+)")


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
    """The status file names the mode AND the hardware runs it (nvpmodel -q --verbose: REAL_VAL against CONF_VAL)."""
    with host.sudo():
        query = host.run(f"{settings['jetson_power_nvpmodel_binary']} -q --verbose")
    assert query.rc == 0, query.stderr
    match = POWER_MODE_RE.search(query.stdout + query.stderr)
    assert match, f"nvpmodel -q printed no power mode: {query.stdout!r}"
    assert match["name"].casefold() == str(settings["jetson_power_mode"]).casefold()
    assert jetson.nvpmodel_mismatches(jetson.parse_nvpmodel_verbose(query.stdout)) == []


def test_nvpmodel_service_did_not_fail(host: Any, settings: Any) -> None:
    unit = settings["jetson_power_nvpmodel_service"]
    state = host.run(f"systemctl is-failed {unit}").stdout.strip()
    assert state != "failed", f"{unit} failed: the board may not run the mode its status file names"


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


def test_clocks_repinned_after_every_nvpmodel_run(host: Any, settings: Any, clocks_enabled: bool) -> None:
    if not clocks_enabled:
        pytest.skip("jetson_power_clocks_enabled is false (no drop-in)")
    unit = settings["jetson_power_nvpmodel_service"]
    post = host.check_output(f"systemctl show -p ExecStartPost {unit}")
    assert settings["jetson_power_clocks_binary"] in post, f"{unit} does not re-pin the clocks: {post}"


def test_clocks_service_fan_option(host: Any, settings: Any, clocks_enabled: bool) -> None:
    if not clocks_enabled:
        pytest.skip("jetson_power_clocks_enabled is false (the unit is absent)")
    exec_start = host.check_output(f"systemctl show -p ExecStart {CLOCKS_UNIT}")
    assert settings["jetson_power_clocks_binary"] in exec_start
    assert ("--fan" in exec_start) == bool(settings["jetson_power_clocks_fan_max"])


def clocks_show(host: Any, settings: Any) -> str:
    with host.sudo():
        show = host.run(f"{settings['jetson_power_clocks_binary']} --show")
    assert show.rc == 0, show.stderr
    return str(show.stdout)


def test_clocks_pinned(host: Any, settings: Any, clocks_enabled: bool) -> None:
    """What runs, not what the unit says: every online CPU and the GPU at MinFreq == MaxFreq, the EMC locked."""
    if not clocks_enabled:
        pytest.skip("jetson_power_clocks_enabled is false: clocks are not pinned at boot")
    assert jetson.jetson_clocks_unpinned(clocks_show(host, settings)) == []


def test_fan_at_full_speed(host: Any, settings: Any, clocks_enabled: bool) -> None:
    if not (clocks_enabled and settings["jetson_power_clocks_fan_max"]):
        pytest.skip("jetson_power_clocks_fan_max is false")
    assert jetson.jetson_clocks_fan_not_max(clocks_show(host, settings)) == []
    unit = settings["jetson_power_nvfancontrol_service"]
    assert host.run(f"systemctl is-active {unit}").stdout.strip() != "active", f"{unit} would take the fan back"
