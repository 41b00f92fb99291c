"""Unit tests of tests/jetsim/variants.py: the Jetson identities jetsim hosts take on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jetsim_emu as emu
import pytest
import variants

REPO = Path(__file__).resolve().parents[2]


R36_4_3_LINE = (
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"
)


def conf_text(config: dict) -> str:
    return str(config["files"][config["nvpmodel"]["conf"]]["content"])


def test_required_variants_exist() -> None:
    assert {"orin-nx-16-super", "orin-nx-16", "orin-nx-8-super", "r35", "maxn-id3"} <= set(variants.VARIANTS)
    assert variants.DEFAULT_VARIANT == "orin-nx-16-super"


@pytest.mark.parametrize("name", sorted(variants.VARIANTS))
def test_host_config_is_json_and_self_consistent(name: str) -> None:
    config = variants.host_config(name, "jetson-7")
    assert json.loads(json.dumps(config)) == config
    assert config["variant"] == name and config["hostname"] == "jetson-7"
    assert config["symlinks"]["/etc/nvpmodel.conf"] == config["nvpmodel"]["conf"]
    assert config["nvpmodel"]["conf"] in config["files"]
    assert config["power_mode"]["id"] == config["nvpmodel"]["default_id"]
    for spec in config["files"].values():
        assert re.fullmatch(r"0[0-7]{3}", spec["mode"])
    meminfo = dict(line.split(":", 1) for line in config["meminfo_text"].splitlines())
    assert int(meminfo["MemTotal"].split()[0]) == config["meminfo"]["MemTotal"]
    assert 0 < config["meminfo"]["MemAvailable"] < config["meminfo"]["MemTotal"]


def test_r36_4_3_release_file_is_exact() -> None:
    config = variants.host_config("orin-nx-16-super", "h")
    assert config["files"]["/etc/nv_tegra_release"]["content"].splitlines() == [
        R36_4_3_LINE,
        "# KERNEL_VARIANT: oot",
        "TARGET_USERSPACE_LIB_DIR=nvidia",
        "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia",
    ]
    assert config["dpkg"]["version"] == "36.4.3-20250107174145"
    assert "Package: nvidia-l4t-core\n" in config["dpkg"]["stanza"]
    assert "Architecture: arm64\n" in config["dpkg"]["stanza"]
    assert "Version: 36.4.3-20250107174145\n" in config["dpkg"]["stanza"]
    assert "Depends" not in config["dpkg"]["stanza"]


def test_r35_release_line_parses_like_jetson_containers() -> None:
    config = variants.host_config("r35", "h")
    first = config["files"]["/etc/nv_tegra_release"]["content"].splitlines()[0]
    match = re.match(r"# R(\d+) \(release\), REVISION: ([\d.]+),.* BOARD: t186ref, EABI: aarch64, DATE: ", first)
    assert match and match.groups() == ("35", "5.0")
    assert config["dpkg"]["version"].startswith("35.5.0-")
    version_json = json.loads(config["files"]["/usr/local/cuda-11.4/version.json"]["content"])
    assert version_json["cuda"]["version"].startswith("11.4.")


def test_cuda_version_json_and_links() -> None:
    config = variants.host_config("orin-nx-16-super", "h")
    version_json = json.loads(config["files"]["/usr/local/cuda-12.6/version.json"]["content"])
    assert version_json["cuda"] == {"name": "CUDA SDK", "version": "12.6.68"}
    assert config["symlinks"]["/usr/local/cuda"] == "/etc/alternatives/cuda"
    assert config["symlinks"]["/etc/alternatives/cuda"] == "/usr/local/cuda-12.6"


@pytest.mark.parametrize(
    ("name", "model", "compatible"),
    [
        (
            "orin-nx-16-super",
            "NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super",
            ["nvidia,p3768-0000+p3767-0000-super", "nvidia,p3767-0000", "nvidia,tegra234"],
        ),
        (
            "orin-nx-16",
            "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
            ["nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"],
        ),
        (
            "orin-nx-8-super",
            "NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super",
            ["nvidia,p3768-0000+p3767-0001-super", "nvidia,p3767-0001", "nvidia,tegra234"],
        ),
    ],
)
def test_device_tree_strings(name: str, model: str, compatible: list[str]) -> None:
    tree = variants.host_config(name, "h")["device_tree"]
    assert tree["model"] == model
    assert tree["compatible"] == compatible
    assert tree["dir"] == "/sys/firmware/devicetree/base"


def test_memory_sizes() -> None:
    gib = 1024 * 1024
    assert 15.0 < variants.host_config("orin-nx-16-super", "h")["meminfo"]["MemTotal"] / gib < 15.5
    assert 7.2 < variants.host_config("orin-nx-8-super", "h")["meminfo"]["MemTotal"] / gib < 7.6


@pytest.mark.parametrize(
    ("name", "table"),
    [
        ("orin-nx-16-super", {0: "MAXN_SUPER", 1: "10W", 2: "15W", 3: "25W", 4: "40W"}),
        ("orin-nx-16", {0: "MAXN", 1: "10W", 2: "15W", 3: "25W"}),
        ("r35", {0: "MAXN", 1: "10W", 2: "15W", 3: "25W"}),
        ("maxn-id3", {0: "15W", 1: "25W", 2: "40W", 3: "MAXN_SUPER", 4: "10W"}),
    ],
)
def test_nvpmodel_tables_parse_in_the_real_format(name: str, table: dict[int, str]) -> None:
    config = variants.host_config(name, "h")
    conf = emu.parse_conf(conf_text(config))
    assert {m.id: m.name for m in conf.modes} == table
    assert conf.default == config["nvpmodel"]["default_id"]
    cores = config["hardware"]["cpu_cores"]
    for mode in conf.modes:
        expected = 4 if mode.name in ("10W", "15W") else cores
        assert len(emu.online_cpus(mode, cores)) == expected, mode.name
        assert sum(1 for p, _, _ in mode.settings if p == "CPU_ONLINE") == cores


def test_nvpmodel_conf_layout() -> None:
    text = conf_text(variants.host_config("orin-nx-16-super", "h"))
    meaningful = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert meaningful[-1] == "< PM_CONFIG DEFAULT=4 >"
    assert "< PARAM TYPE=FILE NAME=CPU_ONLINE >" in meaningful
    assert "CORE_7 /sys/devices/system/cpu/cpu7/online" in meaningful
    assert "< PARAM TYPE=CLOCK NAME=CPU_A78_0 >" in meaningful
    assert "< PARAM TYPE=CLOCK NAME=GPU >" in meaningful
    assert "< PARAM TYPE=CLOCK NAME=EMC >" in meaningful
    assert "< POWER_MODEL ID=0 NAME=MAXN_SUPER >" in meaningful
    block = text.split("< POWER_MODEL ID=2 NAME=15W >")[1].split("< POWER_MODEL")[0]
    assert "CPU_ONLINE CORE_4 0" in block and "CPU_ONLINE CORE_3 1" in block
    assert "CPU_A78_0 MAX_FREQ 1420800" in block and "CPU_A78_4 MAX_FREQ" not in block
    assert re.search(r"^GPU MAX_FREQ \d{9}$", block, re.M)
    assert re.search(r"^EMC MAX_FREQ -?\d+$", block, re.M)


def test_non_super_table_uses_cluster_clocks() -> None:
    text = conf_text(variants.host_config("orin-nx-16", "h"))
    assert "< PARAM TYPE=CLOCK NAME=CPU_A78_1 >" in text
    assert "< PARAM TYPE=CLOCK NAME=CPU_A78_2 >" not in text
    assert "MAX_FREQ /sys/devices/system/cpu/cpu4/cpufreq/scaling_max_freq" in text


def test_orin_nx_8gb_has_six_cores() -> None:
    config = variants.host_config("orin-nx-8-super", "h")
    assert config["hardware"]["cpu_cores"] == 6
    assert config["module"] == "p3767-0001"
    assert "CORE_6" not in conf_text(config)


def test_power_mode_by_name() -> None:
    assert variants.host_config("orin-nx-16-super", "h", "15W")["power_mode"] == {"id": 2, "name": "15W"}
    assert variants.host_config("maxn-id3", "h", "MAXN_SUPER")["power_mode"] == {
        "id": 3,
        "name": "MAXN_SUPER",
    }
    assert variants.host_config("maxn-id3", "h")["power_mode"] == {"id": 0, "name": "15W"}


def test_unknown_variant_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown jetsim variant 'orin-agx'.*orin-nx-16-super.*maxn-id3"):
        variants.host_config("orin-agx", "h")


def test_unknown_power_mode_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown power mode 'MAXN_SUPER'.*MAXN, 10W, 15W, 25W"):
        variants.host_config("orin-nx-16", "h", "MAXN_SUPER")


def test_serial_number_is_per_host_and_stable() -> None:
    first = variants.host_config("orin-nx-16-super", "jetson-1")["device_tree"]["serial_number"]
    assert first == variants.host_config("orin-nx-16-super", "jetson-1")["device_tree"]["serial_number"]
    assert first != variants.host_config("orin-nx-16-super", "jetson-2")["device_tree"]["serial_number"]
    assert re.fullmatch(r"\d{13}", first)


def test_real_board_case_variants() -> None:
    r36_3 = variants.host_config("r36.3", "h")
    assert r36_3["files"]["/etc/nv_tegra_release"]["content"].startswith(
        "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic"
    )
    assert (r36_3["cuda"]["short"], r36_3["l4t"]["jetpack"]) == ("12.2", "6.0")
    stale = variants.host_config("stale-table", "h")
    assert stale["device_tree"]["compatible"][0].endswith("-super")
    assert stale["symlinks"]["/etc/nvpmodel.conf"] == "/etc/nvpmodel/nvpmodel_p3767_0000.conf"
    assert "MAXN_SUPER" not in {mode["name"] for mode in stale["nvpmodel"]["modes"]}
    assert variants.host_config("nvpmodel-fails", "h")["nvpmodel"]["boot_fault"] is True
    assert variants.host_config("orin-nx-16-super", "h")["nvpmodel"]["boot_fault"] is False
    assert variants.expected_failed_units("nvpmodel-fails") == {"nvpmodel.service"}
    assert variants.expected_failed_units("orin-nx-16-super") == set()
