"""Power mode, clocks and preflight on jetsim hosts that behave like L4T R36 where the real board is unkind.

jetson-2 (the fleet's default variant) for the clocks and the fan; jetson-3 is recreated as the variants
(r36.3, stale-table, nvpmodel-fails) and left for test_20, which recreates it.
"""

from __future__ import annotations

import json

import pytest
from ansible_collections.jetson_llm.fleet.plugins.module_utils import jetson
from conftest import Fleet, PlayResult, service

pytestmark = pytest.mark.jetsim
POWER = ("site.yml", "--tags", "power")


def module(name: str):  # type: ignore[no-untyped-def]
    return lambda event: event["action"].endswith(f"fleet.{name}")


def _ok(result: PlayResult) -> None:
    assert result.rc == 0, result.output[-6000:]


def show(fleet: Fleet, host: str) -> str:
    return fleet.exec(host, "jetson_clocks", "--show")


def test_clocks_are_pinned_again_whenever_nvpmodel_ran(fleet: Fleet) -> None:
    _ok(fleet.playbook(*POWER, "--limit", "jetson-2"))
    assert jetson.jetson_clocks_unpinned(show(fleet, "jetson-2")) == []
    # L4T's nvpmodel.service is a oneshot without RemainAfterExit: inactive after it ran, so it runs again.
    assert fleet.exec("jetson-2", "systemctl", "is-active", "nvpmodel.service", check=False).strip() == "inactive"

    fleet.exec("jetson-2", "systemctl", "restart", "nvpmodel.service")
    assert jetson.jetson_clocks_unpinned(show(fleet, "jetson-2")) == []  # the drop-in pinned them again

    fleet.exec("jetson-2", "nvpmodel", "-f", "/etc/nvpmodel.conf")  # by hand, as jtop does: no unit involved
    assert jetson.jetson_clocks_unpinned(show(fleet, "jetson-2")) != []
    assert fleet.exec("jetson-2", "systemctl", "is-active", "jetson-clocks.service").strip() == "active"

    again = fleet.playbook(*POWER, "--limit", "jetson-2")

    _ok(again)
    assert again.ran(module("jetson_clocks")) == {"jetson-2": "changed"}
    assert jetson.jetson_clocks_unpinned(show(fleet, "jetson-2")) == []


def test_fan_stays_at_full_speed_across_boots(fleet: Fleet) -> None:
    result = fleet.playbook(*POWER, "--limit", "jetson-2", "-e", "jetson_power_clocks_fan_max=true")

    _ok(result)
    assert jetson.jetson_clocks_fan_not_max(show(fleet, "jetson-2")) == []
    # nvfancontrol, enabled by default on R36, would take the fan back at the next boot.
    assert fleet.exec("jetson-2", "systemctl", "is-enabled", "nvfancontrol", check=False).strip() == "disabled"
    fleet.reboot("jetson-2")
    assert fleet.exec("jetson-2", "systemctl", "is-active", "nvfancontrol", check=False).strip() == "inactive"
    after_boot = show(fleet, "jetson-2")
    assert jetson.jetson_clocks_fan_not_max(after_boot) == [] and jetson.jetson_clocks_unpinned(after_boot) == []

    back = fleet.playbook(*POWER, "--limit", "jetson-2")  # fan_max false again: L4T's default fan control

    _ok(back)
    assert fleet.exec("jetson-2", "systemctl", "is-active", "nvfancontrol").strip() == "active"
    assert fleet.exec("jetson-2", "systemctl", "is-enabled", "nvfancontrol").strip() == "enabled"


def test_cuda_images_need_an_l4t_whose_driver_runs_them(fleet: Fleet) -> None:
    fleet.recreate("jetson-3", variant="r36.3")  # JetPack 6.0: CUDA 12.2 driver

    # The product default: CUDA images (jetsim's inventory builds for the CPU). jetson-2 runs 36.4.3.
    result = fleet.playbook(
        "playbooks/preflight.yml", "--limit", "jetson-2,jetson-3", "-e", "llama_cpp_build_cuda=true"
    )

    assert result.recap["jetson-3"]["failed"] == 1 and result.recap["jetson-3"]["changed"] == 0
    assert result.recap["jetson-2"]["failed"] == 0
    for text in ("jetson-3: L4T 36.3.0", "CUDA 12.2 driver", "carry CUDA 12.6", "flash JetPack 6.1 or newer"):
        assert text in result.output, result.output[-3000:]
    cpu_build = fleet.playbook("playbooks/preflight.yml", "--limit", "jetson-3")  # CPU images: no CUDA to match
    assert "CUDA 12.2 driver" not in cpu_build.output


def test_power_mode_missing_from_a_stale_table_is_refused_before_any_change(fleet: Fleet) -> None:
    fleet.recreate("jetson-3", variant="stale-table")  # super DTB, /etc/nvpmodel.conf -> the non-super table

    result = fleet.playbook(*POWER, "--limit", "jetson-3")

    assert result.rc != 0 and result.recap["jetson-3"]["changed"] == 0
    for text in (
        "power mode MAXN_SUPER (jetson_power_mode) is not in the nvpmodel table the board uses",
        "/etc/nvpmodel/nvpmodel_p3767_0000.conf",
        "the link is stale",
        "sudo ln -sf /etc/nvpmodel/nvpmodel_p3767_0000_super.conf /etc/nvpmodel.conf",
    ):
        assert text in result.output, result.output[-3000:]
    assert not fleet.exists("jetson-3", "/etc/systemd/system/jetson-clocks.service")


def test_failed_nvpmodel_service_is_not_taken_for_the_mode(fleet: Fleet) -> None:
    fleet.recreate("jetson-3", variant="nvpmodel-fails", power_mode="MAXN_SUPER")
    assert fleet.exec("jetson-3", "systemctl", "is-failed", "nvpmodel.service", check=False).strip() == "failed"
    assert fleet.power_mode("jetson-3") == "MAXN_SUPER"  # what the status file says

    result = fleet.playbook(*POWER, "--limit", "jetson-3")

    _ok(result)
    applied = [event["status"] for event in result.events if module("nvpmodel")(event)]
    assert applied[0] == "changed", applied  # applied again, though `nvpmodel -q` named the mode
    assert result.ran(service("nvpmodel.service", "restarted")) == {"jetson-3": "changed"}
    assert fleet.exec("jetson-3", "systemctl", "is-failed", "nvpmodel.service", check=False).strip() != "failed"
    verbose = fleet.exec("jetson-3", "nvpmodel", "-q", "--verbose")
    assert jetson.nvpmodel_mismatches(jetson.parse_nvpmodel_verbose(verbose)) == []


def test_docker_disk_check_measures_dockers_data_root(fleet: Fleet) -> None:
    # Docker moved to a (here: small) SSD with data-root, the common Jetson setup.
    original = fleet.exec("jetson-3", "cat", "/etc/docker/daemon.json")
    moved = {**json.loads(original), "data-root": "/mnt/ssd/docker"}
    fleet.exec("jetson-3", "sh", "-c", "mkdir -p /mnt/ssd && mount -t tmpfs -o size=64m tmpfs /mnt/ssd")
    try:
        fleet.exec("jetson-3", "tee", "/etc/docker/daemon.json", input=json.dumps(moved))
        fleet.exec("jetson-3", "systemctl", "restart", "docker")

        result = fleet.playbook("playbooks/preflight.yml", "--limit", "jetson-3")

        assert result.recap["jetson-3"]["failed"] == 1, result.output[-3000:]
        assert "for /var/lib/docker (measured on /mnt/ssd/docker)" in result.output, result.output[-3000:]
    finally:
        fleet.exec("jetson-3", "tee", "/etc/docker/daemon.json", input=original)
        fleet.exec("jetson-3", "systemctl", "restart", "docker", check=False)
        fleet.exec("jetson-3", "umount", "/mnt/ssd", check=False)
