"""Unit tests for jetson_llm.fleet module_utils.jetson and the filter plugin."""

from __future__ import annotations

from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.jetson_llm.fleet.plugins.filter.jetson import FilterModule
from ansible_collections.jetson_llm.fleet.plugins.module_utils import jetson

R36_4_3 = (
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
    "DATE: Wed Jan  8 01:49:37 UTC 2025\n"
    "# KERNEL_VARIANT: oot\n"
    "TARGET_USERSPACE_LIB_DIR=nvidia\n"
    "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
)
R35_4_1 = (
    "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Aug  1 19:57:35 UTC 2023\n"
)
R36_4_NO_PATCH = (
    "# R36 (release), REVISION: 4, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n"
)


def _cpu_online(count: int, total: int = 8) -> str:
    return "".join(f"CPU_ONLINE CORE_{i} {1 if i < count else 0}\n" for i in range(total))


_PARAMS = (
    "# NVPMODEL CONFIG FILE FOR P3767-0000 (Orin NX 16GB)\n"
    "#\n"
    "< PARAM TYPE=FILE NAME=CPU_ONLINE >\n"
    + "".join(f"CORE_{i} /sys/devices/system/cpu/cpu{i}/online\n" for i in range(8))
    + "\n< PARAM TYPE=FILE NAME=TPC_POWER_GATING >\n"
    "TPC_PG_MASK /sys/devices/platform/gpu.0/tpc_pg_mask\n"
    "\n< PARAM TYPE=FILE NAME=GPU_POWER_CONTROL_ENABLE >\n"
    "GPU_PWR_CNTL_EN /sys/devices/platform/gpu.0/power/control\n"
    "\n< PARAM TYPE=FILE NAME=GPU_POWER_CONTROL_DISABLE >\n"
    "GPU_PWR_CNTL_DIS /sys/devices/platform/gpu.0/power/control\n"
    "\n<  PARAM   TYPE=CLOCK   NAME=CPU_A78_0  >\n"
    "FREQ_TABLE /sys/devices/system/cpu/cpu0/cpufreq/scaling_available_frequencies\n"
    "MAX_FREQ /sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq\n"
    "MIN_FREQ /sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq\n"
    "\n< PARAM TYPE=CLOCK NAME=CPU_A78_1 >\n"
    "MAX_FREQ /sys/devices/system/cpu/cpu4/cpufreq/scaling_max_freq\n"
    "MIN_FREQ /sys/devices/system/cpu/cpu4/cpufreq/scaling_min_freq\n"
    "\n< PARAM TYPE=CLOCK NAME=GPU >\n"
    "FREQ_TABLE /sys/devices/platform/gpu.0/devfreq/17000000.gpu/available_frequencies\n"
    "MAX_FREQ /sys/devices/platform/gpu.0/devfreq/17000000.gpu/max_freq\n"
    "MIN_FREQ /sys/devices/platform/gpu.0/devfreq/17000000.gpu/min_freq\n"
    "\n< PARAM TYPE=CLOCK NAME=EMC >\n"
    "MAX_FREQ /sys/kernel/nvpmodel_emc_cap/emc_iso_cap\n"
    "\n< PARAM TYPE=CLOCK NAME=DLA0_CORE >\n"
    "MAX_FREQ /sys/kernel/debug/bpmp/debug/clk/dla0_core/max_rate\n"
    "\n< PARAM TYPE=CLOCK NAME=PVA0_AXI >\n"
    "MAX_FREQ /sys/kernel/debug/bpmp/debug/clk/pva0_axi/max_rate\n"
    "\n< FAN_CONFIG SOMETHING=new >\n"
    "UNKNOWN_LINE that a future JetPack might add\n"
)


def _mode(mode_id: int, name: str, cores: int, cpu_max: str, gpu_max: str, emc: str) -> str:
    return (
        f"\n< POWER_MODEL ID={mode_id} NAME={name} >\n" + _cpu_online(cores) + "TPC_POWER_GATING TPC_PG_MASK 0\n"
        "GPU_POWER_CONTROL_ENABLE GPU_PWR_CNTL_EN on\n"
        "CPU_A78_0 MIN_FREQ 729600\n"
        f"CPU_A78_0 MAX_FREQ {cpu_max}\n"
        "CPU_A78_1 MIN_FREQ 729600\n"
        f"CPU_A78_1 MAX_FREQ {cpu_max}   # trailing comment\n"
        "GPU MIN_FREQ 0\n"
        f"GPU MAX_FREQ {gpu_max}\n"
        "GPU_POWER_CONTROL_DISABLE GPU_PWR_CNTL_DIS auto\n"
        f"EMC MAX_FREQ {emc}\n"
        "DLA0_CORE MAX_FREQ -1\n"
        "PVA0_AXI MAX_FREQ -1\n"
    )


ORIN_NX_SUPER_CONF = (
    _PARAMS
    + _mode(0, "MAXN_SUPER", 8, "-1", "-1", "0")
    + _mode(1, "10W", 4, "1497600", "510000000", "2133000000")
    + _mode(2, "15W", 4, "1497600", "714000000", "3199000000")
    + _mode(3, "25W", 8, "1728000", "918000000", "3199000000")
    + _mode(4, "40W", 8, "1984000", "1173000000", "0")
    + "\n# mandatory section to configure the default mode\n< PM_CONFIG DEFAULT=2 >\n"
)

ORIN_NX_CONF = (
    _PARAMS
    + _mode(0, "MAXN", 8, "-1", "-1", "0")
    + _mode(1, "10W", 4, "1497600", "510000000", "2133000000")
    + _mode(2, "15W", 4, "1497600", "714000000", "3199000000")
    + _mode(3, "25W", 8, "1728000", "918000000", "3199000000")
    + "< PM_CONFIG DEFAULT=2 >\n"
)

VENDOR_CONF = (
    "< POWER_MODEL ID=0 NAME=15W >\n"
    + _cpu_online(6, 6)
    + "< POWER_MODEL ID=1 NAME=25W >\n"
    + _cpu_online(6, 6)
    + "< POWER_MODEL ID=2 NAME=7W >\n"
    + _cpu_online(4, 6)
    + "< POWER_MODEL ID=3 NAME=MAXN_SUPER >\n"
    + _cpu_online(6, 6)
    + "< POWER_MODEL ID=4 NAME=VENDOR_QUIET >\n"
    "GPU MAX_FREQ 306000000\n"
    "< PM_CONFIG DEFAULT=1 >\n"
)

QUERY = "NV Power Mode: MAXN_SUPER\n0\n"
QUERY_WARN = "NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n2\n"


# --- nv_tegra_release / dpkg / jetpack -------------------------------------------------------------


def test_release_r36_4_3() -> None:
    assert jetson.parse_nv_tegra_release(R36_4_3) == {
        "version": "36.4.3",
        "major": 36,
        "minor": 4,
        "patch": 3,
        "gcid": "38968081",
        "board": "generic",
        "eabi": "aarch64",
        "date": "Wed Jan  8 01:49:37 UTC 2025",
    }


def test_release_r35() -> None:
    parsed = jetson.parse_nv_tegra_release(R35_4_1)
    assert parsed is not None
    assert (parsed["version"], parsed["board"], parsed["date"]) == (
        "35.4.1",
        "t186ref",
        "Tue Aug  1 19:57:35 UTC 2023",
    )


def test_release_without_patch_is_patch_zero() -> None:
    parsed = jetson.parse_nv_tegra_release(R36_4_NO_PATCH)
    assert parsed is not None
    assert (parsed["version"], parsed["major"], parsed["minor"], parsed["patch"]) == ("36.4.0", 36, 4, 0)


def test_release_minimal_line_has_none_fields() -> None:
    parsed = jetson.parse_nv_tegra_release("# R36 (release), REVISION: 3.0\n")
    assert parsed is not None
    assert parsed["version"] == "36.3.0"
    assert parsed["gcid"] is None and parsed["date"] is None


@pytest.mark.parametrize(
    "text",
    [None, "", "\n\n", "garbage\x00\xff", "R36.4.3", "# KERNEL_VARIANT: oot\n", "# R36 (beta), REVISION: x"],
)
def test_release_garbage(text: str | None) -> None:
    assert jetson.parse_nv_tegra_release(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("36.4.3-20250107174145", "36.4.3"),
        ("36.4.0-20240912212859\n", "36.4.0"),
        ("35.4.1-20230801124926", "35.4.1"),
        ("36.4-20240912212859", "36.4.0"),
        ("1:36.4.3-20250107174145", "36.4.3"),
        ("", None),
        (None, None),
        ("not-a-version", None),
        ("36", None),
    ],
)
def test_dpkg_version(text: str | None, expected: str | None) -> None:
    assert jetson.parse_l4t_dpkg_version(text) == expected


# NVIDIA's JetPack / Jetson Linux archive: JetPack 6.2.2 = 36.5, 6.2.1 = 36.4.4 (36.4.7 is its security update),
# 6.2 = 36.4.3, 6.1 = 36.4, 6.0 = 36.3, 6.0 DP = 36.2, 5.1.5 = 35.6.1. A patch release the table lacks maps to the
# line of the nearest release below it in the same major.minor, never to nothing.
@pytest.mark.parametrize(
    ("l4t", "jetpack"),
    [
        ("36.5.0", "6.2.2"),
        ("36.5.2", "6.2.x"),
        ("36.4.7", "6.2.1"),
        ("36.4.4", "6.2.1"),
        ("36.4.5", "6.2.x"),
        ("36.4.3", "6.2"),
        ("36.4.2", "6.1.x"),
        ("36.4.0", "6.1"),
        ("36.4", "6.1"),
        ("R36.4.3", "6.2"),
        ("36.3.0", "6.0"),
        ("36.3.1", "6.0.x"),
        ("36.2.0", "6.0 DP"),
        ("35.6.2", "5.1.x"),
        ("35.6.1", "5.1.5"),
        ("35.6.0", "5.1.4"),
        ("35.5.0", "5.1.3"),
        ("35.4.1", "5.1.2"),
        ("35.3.1", "5.1.1"),
        ("35.2.1", "5.1"),
        ("35.1.0", "5.0.2"),
        ("36.6.0", None),
        ("34.1.0", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_jetpack_for_l4t(l4t: str | None, jetpack: str | None) -> None:
    assert jetson.jetpack_for_l4t(l4t) == jetpack


# --- device tree -----------------------------------------------------------------------------------

MODEL = "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"
MODEL_SUPER = MODEL + " Super"
SUPER_COMPATIBLE = b"nvidia,p3768-0000+p3767-0000-super\x00nvidia,p3767-0000\x00nvidia,tegra234\x00"


def test_dt_strings() -> None:
    assert jetson.parse_dt_strings(SUPER_COMPATIBLE) == [
        "nvidia,p3768-0000+p3767-0000-super",
        "nvidia,p3767-0000",
        "nvidia,tegra234",
    ]
    assert jetson.parse_dt_strings(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00") == [
        "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"
    ]
    assert jetson.parse_dt_strings(b"no-terminator") == ["no-terminator"]
    assert jetson.parse_dt_strings(b"") == []
    assert jetson.parse_dt_strings(None) == []
    assert jetson.parse_dt_strings(b"a\x00\x00b\x00") == ["a", "b"]


def test_identify_orin_nx_super() -> None:
    compatible = jetson.parse_dt_strings(SUPER_COMPATIBLE)
    assert jetson.identify_module(compatible, MODEL_SUPER) == {
        "module": "p3767-0000",
        "module_name": "Orin NX 16GB",
        "carrier": "p3768-0000",
        "super": True,
        "soc": "tegra234",
    }


def test_identify_super_from_model_only() -> None:
    compatible = ["nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"]
    info = jetson.identify_module(compatible, "NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super")
    assert info["super"] is True
    assert info["carrier"] == "p3768-0000"


def test_identify_non_super() -> None:
    compatible = ["nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"]
    info = jetson.identify_module(compatible, MODEL)
    assert info["super"] is False
    assert info["module_name"] == "Orin NX 16GB"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("p3767-0000", "Orin NX 16GB"),
        ("p3767-0001", "Orin NX 8GB"),
        ("p3767-0003", "Orin Nano 8GB"),
        ("p3767-0004", "Orin Nano 4GB"),
        ("p3767-0005", "Orin Nano 8GB devkit"),
        ("p3701-0000", "AGX Orin 32GB"),
        ("p3701-0004", "AGX Orin 32GB"),
        ("p3701-0005", "AGX Orin 64GB"),
    ],
)
def test_module_names(module: str, name: str) -> None:
    info = jetson.identify_module([f"nvidia,{module}", "nvidia,tegra234"], None)
    assert (info["module"], info["module_name"], info["carrier"]) == (module, name, None)


def test_identify_vendor_carrier() -> None:
    compatible = ["seeed,recomputer-j401", "nvidia,p3767-0001", "nvidia,tegra234"]
    info = jetson.identify_module(compatible, "reComputer J4011")
    assert (info["module"], info["module_name"], info["super"]) == ("p3767-0001", "Orin NX 8GB", False)


def test_identify_unknown_module() -> None:
    info = jetson.identify_module(["nvidia,p3999-0000+p3998-0002", "nvidia,tegra264"], None)
    assert info == {
        "module": "p3998-0002",
        "module_name": None,
        "carrier": "p3999-0000",
        "super": False,
        "soc": "tegra264",
    }


def test_identify_not_a_jetson() -> None:
    assert jetson.identify_module([], None) == {
        "module": None,
        "module_name": None,
        "carrier": None,
        "super": False,
        "soc": None,
    }
    assert jetson.identify_module(["raspberrypi,5-model-b", "brcm,bcm2712"], "Raspberry Pi 5")["module"] is None


# --- nvpmodel.conf ---------------------------------------------------------------------------------


def test_conf_orin_nx_super() -> None:
    conf = jetson.parse_nvpmodel_conf(ORIN_NX_SUPER_CONF)
    assert conf["default"] == 2
    assert [(m["id"], m["name"], m["cpu_online"]) for m in conf["modes"]] == [
        (0, "MAXN_SUPER", 8),
        (1, "10W", 4),
        (2, "15W", 4),
        (3, "25W", 8),
        (4, "40W", 8),
    ]
    forty = conf["modes"][4]["settings"]
    assert forty["CPU_A78_0"]["MAX_FREQ"] == "1984000"
    assert forty["CPU_A78_1"]["MAX_FREQ"] == "1984000"  # inline comment stripped
    assert forty["GPU"]["MAX_FREQ"] == "1173000000"
    assert forty["CPU_ONLINE"]["CORE_7"] == "1"
    assert conf["modes"][1]["settings"]["CPU_ONLINE"]["CORE_4"] == "0"
    assert "FAN_CONFIG" not in forty and "UNKNOWN_LINE" not in forty


def test_conf_non_super() -> None:
    conf = jetson.parse_nvpmodel_conf(ORIN_NX_CONF)
    assert jetson.mode_names(conf) == ["MAXN (0)", "10W (1)", "15W (2)", "25W (3)"]
    with pytest.raises(KeyError, match=r"MAXN \(0\), 10W \(1\), 15W \(2\), 25W \(3\)"):
        jetson.resolve_mode(conf, "MAXN_SUPER")


def test_conf_vendor_ids() -> None:
    conf = jetson.parse_nvpmodel_conf(VENDOR_CONF)
    assert jetson.resolve_mode(conf, "MAXN_SUPER")["id"] == 3
    assert jetson.resolve_mode(conf, "VENDOR_QUIET")["cpu_online"] is None
    assert conf["default"] == 1


def test_conf_whitespace_and_missing_default() -> None:
    text = "  #comment\n\t<POWER_MODEL   ID=7   NAME=ONLY>\n  CPU_ONLINE   CORE_0   1  \nshort line\n"
    conf = jetson.parse_nvpmodel_conf(text)
    assert conf == {
        "modes": [{"id": 7, "name": "ONLY", "cpu_online": 1, "settings": {"CPU_ONLINE": {"CORE_0": "1"}}}],
        "default": None,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no POWER_MODEL"),
        ("# only comments\n< PM_CONFIG DEFAULT=0 >\n", "no POWER_MODEL"),
        ("< POWER_MODEL ID=0 NAME=A >\n< POWER_MODEL ID=0 NAME=B >\n", "duplicate power mode ID 0"),
        ("< POWER_MODEL ID=0 NAME=A >\n< POWER_MODEL ID=1 NAME=A >\n", "duplicate power mode NAME A"),
        ("< POWER_MODEL NAME=A >\n", "numeric ID"),
        ("< POWER_MODEL ID=1 >\n", "no NAME"),
    ],
)
def test_conf_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        jetson.parse_nvpmodel_conf(text)


def test_resolve_mode_message_lists_names() -> None:
    conf = jetson.parse_nvpmodel_conf(ORIN_NX_SUPER_CONF)
    with pytest.raises(ValueError) as excinfo:
        jetson.resolve_mode(conf, "50W")
    assert str(excinfo.value) == (
        "unknown power mode '50W'; available modes: MAXN_SUPER (0), 10W (1), 15W (2), 25W (3), 40W (4)"
    )
    assert isinstance(excinfo.value, KeyError)


def test_resolve_mode_case_insensitive_fallback() -> None:
    conf = jetson.parse_nvpmodel_conf(ORIN_NX_SUPER_CONF)
    assert jetson.resolve_mode(conf, "maxn_super")["id"] == 0
    assert jetson.resolve_mode(conf, "25w")["name"] == "25W"


def test_reboot_required() -> None:
    conf = jetson.parse_nvpmodel_conf(ORIN_NX_SUPER_CONF)
    assert jetson.reboot_required(conf, 2, 0) is True  # 15W (4 cores) -> MAXN_SUPER (8)
    assert jetson.reboot_required(conf, 1, 2) is False  # 10W -> 15W, both 4
    assert jetson.reboot_required(conf, 0, 4) is False
    assert jetson.reboot_required(conf, 0, 99) is False  # unknown ID
    vendor = jetson.parse_nvpmodel_conf(VENDOR_CONF)
    assert jetson.reboot_required(vendor, 2, 3) is True
    assert jetson.reboot_required(vendor, 3, 4) is False  # no CPU_ONLINE lines


def test_reboot_required_when_a_gpu_power_gating_mask_changes() -> None:
    # Two 8-core modes that gate different TPCs / FBPs: nvpmodel asks for a reboot for those too.
    conf = jetson.parse_nvpmodel_conf(
        ORIN_NX_SUPER_CONF.replace(
            "< POWER_MODEL ID=4 NAME=40W >\n" + _cpu_online(8) + "TPC_POWER_GATING TPC_PG_MASK 0\n",
            "< POWER_MODEL ID=4 NAME=40W >\n" + _cpu_online(8) + "TPC_POWER_GATING TPC_PG_MASK 252\n"
            "FBP_POWER_GATING FBP_PG_MASK 2\n",
        ).replace(
            "< POWER_MODEL ID=3 NAME=25W >\n" + _cpu_online(8),
            "< POWER_MODEL ID=3 NAME=25W >\n" + _cpu_online(8) + "FBP_POWER_GATING FBP_PG_MASK 0\n",
        )
    )
    assert jetson.reboot_reasons(conf, 0, 4) == ["TPC_PG_MASK 0 -> 252"]  # same 8 cores
    assert jetson.reboot_reasons(conf, 3, 4) == ["TPC_PG_MASK 0 -> 252", "FBP_PG_MASK 0 -> 2"]
    assert jetson.reboot_required(conf, 0, 4) is True
    assert jetson.reboot_required(conf, 0, 3) is False  # FBP mask set by one mode only: no change known
    assert jetson.reboot_reasons(conf, 2, 4) == ["online CPU cores 4 -> 8", "TPC_PG_MASK 0 -> 252"]


def test_mode_summaries_and_by_id() -> None:
    conf = jetson.parse_nvpmodel_conf(ORIN_NX_SUPER_CONF)
    assert jetson.mode_summaries(conf)[0] == {"id": 0, "name": "MAXN_SUPER", "cpu_online": 8}
    found = jetson.mode_by_id(conf, 3)
    assert found is not None and found["name"] == "25W"
    assert jetson.mode_by_id(conf, 9) is None


# --- nvpmodel -q / -m output -----------------------------------------------------------------------


def test_query_plain() -> None:
    assert jetson.parse_nvpmodel_query(QUERY) == {"name": "MAXN_SUPER", "id": 0}


def test_query_with_warning() -> None:
    assert jetson.parse_nvpmodel_query(QUERY_WARN) == {"name": "15W", "id": 2}


@pytest.mark.parametrize("output", ["", "NVPM WARN: fan mode is not set!\n", "NV Power Mode: 15W\n", "2\n"])
def test_query_errors(output: str) -> None:
    with pytest.raises(ValueError):
        jetson.parse_nvpmodel_query(output)


# `nvpmodel -q --verbose` on R36 (format of the real tool: the query line, the ID, then one line per setting
# with the value read back from sysfs and the table's, -1 printed as LONG_MAX).
VERBOSE_APPLIED = (
    "NVPM VERB: Config file: /etc/nvpmodel.conf\n"
    "NVPM VERB: parsing done for /etc/nvpmodel.conf\n"
    "NVPM VERB: Current mode: NV Power Mode: MAXN_SUPER\n"
    "0\n"
    "NVPM VERB: PARAM CPU_ONLINE: ARG CORE_0: PATH /sys/devices/system/cpu/cpu0/online: REAL_VAL: 1 CONF_VAL: 1\n"
    "NVPM VERB: PARAM CPU_ONLINE: ARG CORE_7: PATH /sys/devices/system/cpu/cpu7/online: REAL_VAL: 1 CONF_VAL: 1\n"
    "NVPM VERB: PARAM TPC_POWER_GATING: ARG TPC_PG_MASK: PATH /sys/devices/platform/gpu.0/tpc_pg_mask: "
    "REAL_VAL: 240 CONF_VAL: 240\n"
    "NVPM VERB: PARAM GPU_POWER_CONTROL_ENABLE: ARG GPU_PWR_CNTL_EN: PATH /sys/devices/platform/gpu.0/power/control: "
    "REAL_VAL: auto CONF_VAL: on\n"
    "NVPM VERB: PARAM CPU_A78_0: ARG MIN_FREQ: PATH /sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq: "
    "REAL_VAL: 1984000 CONF_VAL: 729600\n"
    "NVPM VERB: PARAM CPU_A78_0: ARG MAX_FREQ: PATH /sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq: "
    "REAL_VAL: 1984000 CONF_VAL: 9223372036854775807\n"
    "NVPM VERB: PARAM GPU: ARG MAX_FREQ: PATH /sys/devices/platform/17000000.gpu/devfreq_dev/max_freq: "
    "REAL_VAL: 1173000000 CONF_VAL: 9223372036854775807\n"
    "NVPM VERB: PARAM EMC: ARG MAX_FREQ: PATH /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: REAL_VAL: 0 CONF_VAL: 0\n"
)


def test_verbose_query_of_an_applied_mode_has_no_mismatch() -> None:
    entries = jetson.parse_nvpmodel_verbose(VERBOSE_APPLIED)
    assert len(entries) == 8
    assert entries[2] == {"param": "TPC_POWER_GATING", "arg": "TPC_PG_MASK", "real": "240", "conf": "240"}
    assert jetson.nvpmodel_mismatches(entries) == []  # pinned MIN_FREQ above the floor, uncapped maxima, "auto"
    assert jetson.parse_nvpmodel_query(VERBOSE_APPLIED) == {"name": "MAXN_SUPER", "id": 0}


def test_verbose_query_when_the_status_file_names_another_mode_than_the_hardware_runs() -> None:
    # nvpmodel.service failed at boot: the status says 25W, the cores, the mask and the clocks are not 25W's.
    text = (
        "NV Power Mode: 25W\n3\n"
        "NVPM VERB: PARAM CPU_ONLINE: ARG CORE_4: PATH /sys/devices/system/cpu/cpu4/online: REAL_VAL: 0 CONF_VAL: 1\n"
        "NVPM VERB: PARAM TPC_POWER_GATING: ARG TPC_PG_MASK: PATH /sys/devices/platform/gpu.0/tpc_pg_mask: "
        "REAL_VAL: 252 CONF_VAL: 240\n"
        "NVPM VERB: PARAM CPU_A78_0: ARG MIN_FREQ: PATH /sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq: "
        "REAL_VAL: 115200 CONF_VAL: 729600\n"
        "NVPM VERB: PARAM CPU_A78_0: ARG MAX_FREQ: PATH /sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq: "
        "REAL_VAL: 1984000 CONF_VAL: 1497600\n"
        "NVPM VERB: PARAM GPU: ARG MAX_FREQ: PATH /sys/devices/platform/17000000.gpu/devfreq_dev/max_freq: "
        "REAL_VAL: 1173000000 CONF_VAL: 816000000\n"
    )
    assert jetson.nvpmodel_mismatches(jetson.parse_nvpmodel_verbose(text)) == [
        "CPU_ONLINE CORE_4 is 0, the mode sets 1",
        "TPC_POWER_GATING TPC_PG_MASK is 252, the mode sets 240",
        "CPU_A78_0 MIN_FREQ is 115200, the mode sets 729600",
        "CPU_A78_0 MAX_FREQ is 1984000, the mode caps it at 1497600",
        "GPU MAX_FREQ is 1173000000, the mode caps it at 816000000",
    ]


def test_verbose_query_without_settings() -> None:
    assert jetson.parse_nvpmodel_verbose(QUERY) == []


# `jetson_clocks --show` in the real R36 formats: two spaces after `cpuN:`, an `Active GPU TPCs:` line, the fan
# line of R36.4 (`Control=kernel`) and R36.5 (`Control=nvfancontrol|disabled` and a `pwm1_enable` line).
SHOW_R36_4_UNPINNED = (
    "SOC family:tegra234  Machine:NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super\n"
    "Online CPUs: 0-7\n"
    "cpu0:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=1267200 IdleStates: WFI=1 c7=1\n"
    "cpu7:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=1984000 IdleStates: WFI=1 c7=1\n"
    "GPU MinFreq=306000000 MaxFreq=1173000000 CurrentFreq=306000000\n"
    "Active GPU TPCs: 8\n"
    "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride=0\n"
    "FAN Dynamic Speed Control=kernel hwmon0_pwm1=88\n"
    "NV Power Mode: MAXN_SUPER\n"
)
SHOW_R36_4_PINNED = (
    "SOC family:tegra234  Machine:NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super\n"
    "Online CPUs: 0-7\n"
    "cpu0:  Online=1 Governor=schedutil MinFreq=1984000 MaxFreq=1984000 CurrentFreq=1984000 IdleStates: WFI=0 c7=0\n"
    "cpu7:  Online=1 Governor=schedutil MinFreq=1984000 MaxFreq=1984000 CurrentFreq=1984000 IdleStates: WFI=0 c7=0\n"
    "GPU MinFreq=1173000000 MaxFreq=1173000000 CurrentFreq=1173000000\n"
    "Active GPU TPCs: 8\n"
    "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1\n"
    "FAN Dynamic Speed Control=kernel hwmon0_pwm1=255\n"
    "NV Power Mode: MAXN_SUPER\n"
)
SHOW_R36_5_FAN = (
    "FAN Dynamic Speed Control=nvfancontrol hwmon0_pwm1=60\n"
    "FAN Dynamic Speed Control=nvfancontrol hwmon0_pwm1_enable=1\n"
)
SHOW_R36_5_FAN_MAX = (
    "FAN Dynamic Speed Control=disabled hwmon0_pwm1=255\nFAN Dynamic Speed Control=disabled hwmon0_pwm1_enable=1\n"
)


def test_clocks_show_parses_the_r36_format() -> None:
    parsed = jetson.parse_jetson_clocks_show(SHOW_R36_4_UNPINNED)
    assert parsed["cpus"][0] == {"online": True, "min": 729600, "max": 1984000}
    assert parsed["gpu"] == {"min": 306000000, "max": 1173000000}
    assert parsed["emc"] == {"min": 204000000, "max": 3199000000, "override": False}
    assert parsed["fans"] == [{"control": "kernel", "hwmon": "hwmon0", "node": "pwm1", "value": 88}]
    assert parsed["power_mode"] == "MAXN_SUPER"


def test_clocks_unpinned_after_nvpmodel_ran_again() -> None:
    assert jetson.jetson_clocks_unpinned(SHOW_R36_4_UNPINNED) == [
        "cpu0 MinFreq=729600 MaxFreq=1984000",
        "cpu7 MinFreq=729600 MaxFreq=1984000",
        "GPU MinFreq=306000000 MaxFreq=1173000000",
        "EMC MinFreq=204000000 MaxFreq=3199000000 FreqOverride=0",
    ]
    assert jetson.parse_jetson_clocks_pinned(SHOW_R36_4_UNPINNED) is False
    assert jetson.jetson_clocks_unpinned(SHOW_R36_4_PINNED) == []
    assert jetson.parse_jetson_clocks_pinned(SHOW_R36_4_PINNED) is True
    assert jetson.parse_jetson_clocks_pinned("Error: Run this script as a root user") is None


def test_offline_cpus_do_not_count() -> None:
    show = SHOW_R36_4_PINNED.replace(
        "cpu7:  Online=1 Governor=schedutil MinFreq=1984000", "cpu7:  Online=0 x=1 MinFreq=1"
    )
    assert jetson.jetson_clocks_unpinned(show) == []


@pytest.mark.parametrize(
    ("fan_lines", "problems"),
    [
        ("FAN Dynamic Speed Control=kernel hwmon0_pwm1=255\n", []),
        ("FAN Dynamic Speed Control=kernel hwmon0_pwm1=88\n", ["hwmon0_pwm1=88"]),
        (SHOW_R36_5_FAN, ["hwmon0_pwm1=60", "nvfancontrol controls the fan"]),
        (SHOW_R36_5_FAN_MAX, []),
        ("FAN Dynamic Speed control=active hwmon2_pwm1=255\n", ["nvfancontrol controls the fan"]),  # R35
        ("", ["no fan listed"]),
    ],
)
def test_fan_at_full_speed(fan_lines: str, problems: list[str]) -> None:
    show = SHOW_R36_4_PINNED.replace("FAN Dynamic Speed Control=kernel hwmon0_pwm1=255\n", fan_lines)
    assert jetson.jetson_clocks_fan_not_max(show) == problems


def test_output_requests_reboot() -> None:
    prompt = (
        "NVPM WARN: Reboot required for changing to this power mode: 0\n"
        "NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:\n"
        "NVPM ERROR: optMask is 1, no request for power mode\n"
    )
    assert jetson.output_requests_reboot(prompt) is True
    assert jetson.output_requests_reboot("") is False
    assert jetson.output_requests_reboot(None) is False
    assert jetson.output_requests_reboot("NVPM WARN: fan mode is not set!\n") is False


# --- CUDA / meminfo / docker -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("json_text", "txt", "expected"),
    [
        (
            '{"cuda": {"name": "CUDA SDK", "version": "12.6.68"}, "cuda_cudart": {"version": "12.6.68"}}',
            None,
            "12.6.68",
        ),
        (None, "CUDA Version 12.6.68\n", "12.6.68"),
        ("{not json", "CUDA Version 11.4.315", "11.4.315"),
        ('{"cuda": {}}', None, None),
        ("[]", None, None),
        (None, None, None),
        ("", "nothing", None),
    ],
)
def test_cuda_version(json_text: str | None, txt: str | None, expected: str | None) -> None:
    assert jetson.parse_cuda_version(json_text, txt) == expected


@pytest.mark.parametrize(
    ("l4t", "driver"),
    [("36.5.0", "12.6"), ("36.4.3", "12.6"), ("36.4.0", "12.6"), ("36.3.0", "12.2"), ("36.2.0", "12.2"),
     ("35.5.0", "11.4"), ("36.6.0", "12.6"), ("36.1.0", None), ("34.1.0", None), (None, None)],
)  # fmt: skip
def test_cuda_driver_for_l4t(l4t: str | None, driver: str | None) -> None:
    assert jetson.cuda_driver_for_l4t(l4t) == driver


@pytest.mark.parametrize(
    ("image", "driver", "runs"),
    [("12.6", "12.6", True), ("12.6.68", "12.6", True), ("12.2", "12.6", True), ("12.6", "12.2", False),
     ("11.4", "12.6", False), ("12.6", None, None), ("", "12.6", None)],
)  # fmt: skip
def test_cuda_runs_on_driver(image: str, driver: str | None, runs: bool | None) -> None:
    assert jetson.cuda_runs_on_driver(image, driver) is runs


def test_meminfo_of_an_orin_nx_16gb_on_jetpack_6() -> None:
    # tegrastats on JetPack 6 Orin NX 16GB boards prints `RAM 3712/15656MB` (the samples in
    # tests/fixtures/benchmark): MemTotal / 1024. 15656 MiB is 15.3 GiB, not "about 15300 MiB".
    assert jetson.parse_meminfo_total_mb("MemTotal:       16031744 kB\nMemFree:  1 kB\n") == 15656
    assert jetson.parse_meminfo_total_mb("") is None


def test_docker_daemon_json() -> None:
    text = (
        '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}, "default-runtime": "nvidia"}'
    )
    empty = {"runtimes": [], "default_runtime": None, "data_root": None}
    assert jetson.parse_docker_daemon_json(text) == {**empty, "runtimes": ["nvidia"], "default_runtime": "nvidia"}
    assert jetson.parse_docker_daemon_json(None) == empty
    assert jetson.parse_docker_daemon_json("{bad") == empty


@pytest.mark.parametrize(
    ("text", "root"),
    [('{"data-root": "/mnt/nvme/docker", "default-runtime": "nvidia"}', "/mnt/nvme/docker"),
     ('{"graph": "/ssd/docker"}', "/ssd/docker"), ('{"data-root": "relative"}', None), ("", None)],
)  # fmt: skip
def test_docker_data_root_from_daemon_json(text: str, root: str | None) -> None:
    assert jetson.parse_docker_daemon_json(text)["data_root"] == root


# --- filters ---------------------------------------------------------------------------------------


def _filters() -> dict[str, Any]:
    return FilterModule().filters()


def test_filter_jetpack() -> None:
    jetpack = _filters()["jetpack_for_l4t"]
    assert jetpack("36.4.3") == "6.2"
    assert jetpack({"version": "36.4.0", "source": "dpkg"}) == "6.1"
    assert jetpack(None) is None
    assert jetpack({"version": None}) is None


def test_filter_mode_names() -> None:
    names = _filters()["nvpmodel_mode_names"]
    conf = jetson.parse_nvpmodel_conf(ORIN_NX_SUPER_CONF)
    expected = ["MAXN_SUPER (0)", "10W (1)", "15W (2)", "25W (3)", "40W (4)"]
    assert names(conf) == expected
    assert names(conf["modes"]) == expected
    assert names(None) == []
    with pytest.raises(AnsibleFilterError):
        names("MAXN_SUPER")
    with pytest.raises(AnsibleFilterError):
        names({"modes": [{"id": 0}]})
