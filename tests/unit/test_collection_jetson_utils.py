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


@pytest.mark.parametrize(
    ("l4t", "jetpack"),
    [
        ("36.5.0", "6.2.1"),
        ("36.4.7", "6.2.1"),
        ("36.4.4", "6.2.1"),
        ("36.4.3", "6.2"),
        ("36.4.2", "6.1.1"),
        ("36.4.0", "6.1"),
        ("36.4", "6.1"),
        ("R36.4.3", "6.2"),
        ("36.3.0", "6.0"),
        ("36.2.0", "6.0 DP"),
        ("35.6.0", "5.1.4"),
        ("35.5.0", "5.1.3"),
        ("35.4.1", "5.1.2"),
        ("35.3.1", "5.1.1"),
        ("35.2.1", "5.1"),
        ("35.1.0", "5.0.2"),
        ("36.4.5", None),
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


def test_meminfo() -> None:
    assert jetson.parse_meminfo_total_mb("MemTotal:       15655140 kB\nMemFree:  1 kB\n") == 15288
    assert jetson.parse_meminfo_total_mb("") is None


def test_docker_daemon_json() -> None:
    text = (
        '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}, "default-runtime": "nvidia"}'
    )
    assert jetson.parse_docker_daemon_json(text) == {"runtimes": ["nvidia"], "default_runtime": "nvidia"}
    assert jetson.parse_docker_daemon_json(None) == {"runtimes": [], "default_runtime": None}
    assert jetson.parse_docker_daemon_json("{bad") == {"runtimes": [], "default_runtime": None}


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
