"""Jetson identities that jetsim hosts can take on (test fixture only).

A *variant* describes everything that makes a Debian container look like a particular Jetson board and
L4T release: `/etc/nv_tegra_release`, the `nvidia-l4t-core` dpkg entry, the device-tree model and
compatible strings, `/proc/meminfo`, the nvpmodel table (rendered in the real nvpmodel.conf format) and
the CUDA toolkit version file.

`host_config(variant, hostname, power_mode)` returns the JSON-able dict that the harness writes to
`/etc/jetsim/host.json`; `jetsim-identity` (tests/jetsim/rootfs/usr/local/sbin) applies it at every boot
and the emulators (nvpmodel, jetson_clocks, tegrastats) read their hardware description from it.
Schema (version 1) of that dict:

    schema            1
    hostname, variant, description
    l4t               {"release": "36.4.3", "major": 36, "revision": "4.3", "jetpack": "6.2"}
    cuda              {"version": "12.6.68", "short": "12.6"}
    module, carrier, soc
    device_tree       {"dir": "/sys/firmware/devicetree/base", "model": str, "compatible": [str, ...],
                       "serial_number": str}   (written NUL-terminated / NUL-separated by jetsim-identity)
    meminfo           {"MemTotal": kB, "MemAvailable": kB, "SwapTotal": kB}  (summary)
    meminfo_text      full /proc/meminfo content
    files             {absolute path: {"content": str, "mode": "0644"}}
    symlinks          {absolute path: target}
    dpkg              {"package", "version", "architecture", "stanza"}   (stanza: /var/lib/dpkg/status text)
    nvpmodel          {"conf": path, "conf_link": "/etc/nvpmodel.conf", "default_id": int,
                       "fan_mode": "quiet" | None, "status_path": "/var/lib/nvpmodel/status",
                       "modes": [{"id", "name", "online_cpus"}, ...],
                       "boot_fault": bool}   (nvpmodel.service fails at every boot, exit 234: see nvpmodel)
    power_mode        {"id": int, "name": str}   (initial mode, written to the nvpmodel status on first boot)
    devices           [{"path", "major", "minor", "owner", "group", "mode"}, ...]  (char devices made at boot)
    hardware          {"cpu_cores", "cpu_cluster_size", "cpu_freqs_khz", "gpu_freqs_hz", "emc_freqs_hz",
                       "fan_hwmon", "fan_pwm_idle"}

Run `python3 tests/jetsim/variants.py VARIANT HOSTNAME [POWER_MODE]` to print a host.json.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, replace

DEFAULT_VARIANT = "orin-nx-16-super"
DEVICE_TREE_DIR = "/sys/firmware/devicetree/base"
NVPMODEL_LINK = "/etc/nvpmodel.conf"
NVPMODEL_STATUS = "/var/lib/nvpmodel/status"
# The GPU device nodes of an Orin on L4T R36 (nvmap, the nvgpu driver's legacy nvhost-*-gpu names and its
# /dev/nvgpu/igpu0 directory), owned root:video 0660 as L4T's udev rules make them. jetsim-identity creates them at
# every boot as character devices with the numbers of /dev/null (1:3): openable only with the right uid/group, and
# harmless when something does read or write them. devices.csv lists more (fb0, host1x-fence, nvsciipc): absent here.
GPU_DEVICE_NODES = (
    "/dev/nvmap", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvhost-as-gpu", "/dev/nvhost-dbg-gpu",
    "/dev/nvhost-prof-gpu", "/dev/nvhost-tsg-gpu", "/dev/nvhost-sched-gpu", "/dev/nvhost-power-gpu",
    "/dev/nvhost-ctxsw-gpu", "/dev/nvhost-nvsched-gpu",
    *(f"/dev/nvgpu/igpu0/{name}" for name in ("as", "channel", "ctrl", "ctxsw", "dbg", "nvsched", "power", "prof",
                                             "sched", "tsg")),
)  # fmt: skip

# Orin (Cortex-A78AE) cpufreq table in kHz, GA10B devfreq table and EMC rates in Hz.
CPU_FREQS_KHZ = (
    115200, 192000, 268800, 345600, 422400, 499200, 576000, 652800, 729600, 806400, 883200, 960000,
    1036800, 1113600, 1190400, 1267200, 1344000, 1420800, 1497600, 1574400, 1651200, 1728000,
    1804800, 1881600, 1958400, 1984000,
)  # fmt: skip
GPU_FREQS_HZ = (
    306000000, 408000000, 510000000, 612000000, 714000000, 816000000, 918000000, 1020000000,
    1122000000, 1173000000,
)  # fmt: skip
EMC_FREQS_HZ = (204000000, 665600000, 2133000000, 3199000000)
CPU_MIN_KHZ = 729600


@dataclass(frozen=True)
class PowerMode:
    """One `< POWER_MODEL >` block. -1 means "no cap" (INT_MAX), as in the real files; EMC 0 too."""

    id: int
    name: str
    online_cores: int
    cpu_max_khz: int
    gpu_max_hz: int
    emc_max_hz: int
    tpc_pg_mask: int = 240
    dla_max_hz: int = -1


@dataclass(frozen=True)
class Release:
    """An L4T release as seen in /etc/nv_tegra_release, dpkg and the CUDA toolkit."""

    l4t: str  # "36.4.3"
    gcid: str
    board: str  # "generic" on R36, "t186ref" on R35
    date: str  # as printed by `date`, e.g. "Wed Jan  8 01:49:37 UTC 2025"
    core_version: str  # dpkg version of nvidia-l4t-core
    jetpack: str
    cuda_version: str  # full toolkit version, "12.6.68"


R36_4_3 = Release(
    l4t="36.4.3",
    gcid="38968081",
    board="generic",
    date="Wed Jan  8 01:49:37 UTC 2025",
    core_version="36.4.3-20250107174145",
    jetpack="6.2",
    cuda_version="12.6.68",
)
# JetPack 6.0 GA: CUDA 12.2 driver, no super device tree yet.
R36_3_0 = Release(
    l4t="36.3.0",
    gcid="36191598",
    board="generic",
    date="Mon May  6 17:34:21 UTC 2024",
    core_version="36.3.0-20240506102626",
    jetpack="6.0",
    cuda_version="12.2.140",
)
# JetPack 6.2.2 (the identifiers are jetsim's, the release and CUDA line NVIDIA's).
R36_5_0 = Release(
    l4t="36.5.0",
    gcid="43104871",
    board="generic",
    date="Thu Jan 15 22:04:03 UTC 2026",
    core_version="36.5.0-20260115220403",
    jetpack="6.2.2",
    cuda_version="12.6.85",
)
R35_5_0 = Release(
    l4t="35.5.0",
    gcid="35550185",
    board="t186ref",
    date="Mon Feb 19 20:38:09 UTC 2024",
    core_version="35.5.0-20240219203809",
    jetpack="5.1.3",
    cuda_version="11.4.19",
)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    release: Release
    module: str  # "p3767-0000"
    carrier: str  # "p3768-0000"
    model: str
    super_dtb: bool
    memtotal_kb: int
    cpu_cores: int
    modes: tuple[PowerMode, ...]
    default_mode_id: int
    per_cpu_clocks: bool  # super tables have one CLOCK param per core, older ones one per cluster
    fan_mode: str | None = "quiet"  # None: the nvpmodel status has no fmode (vendor images)
    conf_name: str = ""  # file under /etc/nvpmodel/; derived from module when empty
    dpkg_architecture: str = "arm64"
    nvpmodel_boot_fault: bool = False  # nvpmodel.service fails at every boot (exit 234), applying nothing

    @property
    def l4t_major(self) -> int:
        return int(self.release.l4t.split(".")[0])

    @property
    def l4t_revision(self) -> str:
        return self.release.l4t.split(".", 1)[1]

    @property
    def cuda_short(self) -> str:
        return ".".join(self.release.cuda_version.split(".")[:2])

    @property
    def compatible(self) -> tuple[str, ...]:
        suffix = "-super" if self.super_dtb else ""
        return (f"nvidia,{self.carrier}+{self.module}{suffix}", f"nvidia,{self.module}", "nvidia,tegra234")

    @property
    def conf_path(self) -> str:
        name = self.conf_name or f"nvpmodel_{self.module.replace('-', '_')}{'_super' if self.super_dtb else ''}.conf"
        return f"/etc/nvpmodel/{name}"

    def mode(self, mode_id: int) -> PowerMode:
        for mode in self.modes:
            if mode.id == mode_id:
                return mode
        raise KeyError(mode_id)


def _super_16gb_modes() -> tuple[PowerMode, ...]:
    return (
        PowerMode(0, "MAXN_SUPER", 8, -1, -1, -1),
        PowerMode(1, "10W", 4, 1190400, 612000000, 2133000000, tpc_pg_mask=252, dla_max_hz=153600000),
        PowerMode(2, "15W", 4, 1420800, 612000000, -1, tpc_pg_mask=252, dla_max_hz=614400000),
        PowerMode(3, "25W", 8, 1497600, 816000000, -1, dla_max_hz=614400000),
        PowerMode(4, "40W", 8, 1728000, 1020000000, -1, dla_max_hz=908800000),
    )


def _classic_16gb_modes() -> tuple[PowerMode, ...]:
    return (
        PowerMode(0, "MAXN", 8, -1, -1, 0),
        PowerMode(1, "10W", 4, 1190400, 612000000, 2133000000, tpc_pg_mask=252, dla_max_hz=153600000),
        PowerMode(2, "15W", 4, 1420800, 612000000, 0, tpc_pg_mask=252, dla_max_hz=614400000),
        PowerMode(3, "25W", 8, 1497600, 714000000, 0, dla_max_hz=614400000),
    )


_DEVKIT = "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"
_MEM_16GB_KB = 15656 * 1024  # ~15.3 GiB visible on an Orin NX 16GB
_MEM_8GB_KB = 7620 * 1024  # ~7.4 GiB visible on an Orin NX 8GB


_ORIN_NX_16_SUPER = Variant(
    name="orin-nx-16-super",
    description="Orin NX 16GB (p3767-0000) on the p3768 devkit carrier, L4T R36.4.3 super DTB",
    module="p3767-0000",
    carrier="p3768-0000",
    model=f"{_DEVKIT} Super",
    super_dtb=True,
    memtotal_kb=_MEM_16GB_KB,
    cpu_cores=8,
    modes=_super_16gb_modes(),
    default_mode_id=4,
    per_cpu_clocks=True,
    release=R36_4_3,
)
_ORIN_NX_16 = replace(
    _ORIN_NX_16_SUPER,
    name="orin-nx-16",
    description="Orin NX 16GB (p3767-0000) on the p3768 devkit carrier, L4T R36.4.3 non-super DTB",
    model=_DEVKIT,
    super_dtb=False,
    modes=_classic_16gb_modes(),
    default_mode_id=2,
    per_cpu_clocks=False,
)


def _renumbered(modes: tuple[PowerMode, ...], order: tuple[str, ...]) -> tuple[PowerMode, ...]:
    """The same modes under other IDs, as vendor tables do: the mode named order[i] gets ID i."""
    by_name = {mode.name: mode for mode in modes}
    return tuple(replace(by_name[name], id=index) for index, name in enumerate(order))


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _ORIN_NX_16_SUPER,
        _ORIN_NX_16,
        replace(
            _ORIN_NX_16_SUPER,
            name="orin-nx-8-super",
            description="Orin NX 8GB (p3767-0001, 6 CPU cores) on the p3768 devkit carrier, R36.4.3 super",
            module="p3767-0001",
            memtotal_kb=_MEM_8GB_KB,
            cpu_cores=6,
            modes=(
                PowerMode(0, "MAXN_SUPER", 6, -1, -1, -1),
                PowerMode(1, "10W", 4, 1190400, 612000000, 2133000000, tpc_pg_mask=252, dla_max_hz=153600000),
                PowerMode(2, "15W", 4, 1420800, 612000000, -1, tpc_pg_mask=252, dla_max_hz=614400000),
                PowerMode(3, "20W", 6, 1497600, 714000000, -1, dla_max_hz=614400000),
                PowerMode(4, "40W", 6, 1984000, 1173000000, -1, dla_max_hz=1203200000),
            ),
        ),
        replace(
            _ORIN_NX_16,
            name="r36.3",
            description="Orin NX 16GB on L4T R36.3.0 (JetPack 6.0, CUDA 12.2 driver): too old for CUDA 12.6 images",
            release=R36_3_0,
        ),
        replace(
            _ORIN_NX_16_SUPER,
            name="r36.5",
            description="Orin NX 16GB super on L4T R36.5.0 (JetPack 6.2.2): R36.5's jetson_clocks fan lines",
            release=R36_5_0,
        ),
        replace(
            _ORIN_NX_16,
            name="stale-table",
            description=(
                "Orin NX 16GB booting the super device tree, /etc/nvpmodel.conf still linked to the non-super table "
                "(left from before a reflash): no MAXN_SUPER"
            ),
            model=f"{_DEVKIT} Super",
            super_dtb=True,
            conf_name="nvpmodel_p3767_0000.conf",
        ),
        replace(
            _ORIN_NX_16_SUPER,
            name="nvpmodel-fails",
            description=(
                "Orin NX 16GB super whose nvpmodel.service fails at every boot (exit 234): the status names a mode "
                "the hardware does not run"
            ),
            nvpmodel_boot_fault=True,
        ),
        replace(
            _ORIN_NX_16,
            name="r35",
            description="Orin NX 16GB on L4T R35.5.0 (JetPack 5.1.3, CUDA 11.4): too old for this project",
            release=R35_5_0,
        ),
        replace(
            _ORIN_NX_16_SUPER,
            name="maxn-id3",
            description=(
                "Orin NX 16GB super with a vendor nvpmodel table: MAXN_SUPER is ID 3, default 15W (ID 0), "
                "no fan mode in the nvpmodel status"
            ),
            modes=_renumbered(_super_16gb_modes(), ("15W", "25W", "40W", "MAXN_SUPER", "10W")),
            default_mode_id=0,
            fan_mode=None,
        ),
    )
}


# ------------------------------------------------------------------------------------------ renderers


def render_nv_tegra_release(v: Variant) -> str:
    return (
        f"# R{v.l4t_major} (release), REVISION: {v.l4t_revision}, GCID: {v.release.gcid}, "
        f"BOARD: {v.release.board}, EABI: aarch64, DATE: {v.release.date}\n"
        "# KERNEL_VARIANT: oot\n"
        "TARGET_USERSPACE_LIB_DIR=nvidia\n"
        "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
    )


def _cpu_clock_params(v: Variant) -> list[tuple[str, int, list[int]]]:
    """(param name, cpu whose sysfs node it writes, cpus it governs) for the table's CPU clocks."""
    if v.per_cpu_clocks:
        return [(f"CPU_A78_{n}", n, [n]) for n in range(v.cpu_cores)]
    clusters = range(0, v.cpu_cores, 4)
    return [
        (f"CPU_A78_{i}", first, list(range(first, min(first + 4, v.cpu_cores)))) for i, first in enumerate(clusters)
    ]


def render_nvpmodel_conf(v: Variant) -> str:
    gpu = "/sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu"
    out = [
        "#",
        f"# nvpmodel table for {v.module}{' (super)' if v.super_dtb else ''}, emulated by jetsim.",
        "#",
        "# Layout (same as the L4T files):",
        "#   < PARAM TYPE=FILE|CLOCK NAME=PARAM_NAME >   followed by lines `ARG_NAME /sysfs/path`",
        "#   < POWER_MODEL ID=n NAME=mode_name >         followed by lines `PARAM_NAME ARG_NAME VALUE`",
        "#   < PM_CONFIG DEFAULT=n >                     mandatory, selects the default mode",
        "# CLOCK values are integers (kHz for CPUs, Hz otherwise); -1 means no cap (INT_MAX).",
        "# FILE values are strings written as they are.",
        "",
        "###########################",
        "#                         #",
        "# PARAM DEFINITIONS       #",
        "#                         #",
        "###########################",
        "",
        "< PARAM TYPE=FILE NAME=CPU_ONLINE >",
        *(f"CORE_{n} /sys/devices/system/cpu/cpu{n}/online" for n in range(v.cpu_cores)),
        "",
        "< PARAM TYPE=FILE NAME=TPC_POWER_GATING >",
        "TPC_PG_MASK /sys/devices/platform/gpu.0/tpc_pg_mask",
        "",
        "< PARAM TYPE=FILE NAME=GPU_POWER_CONTROL_ENABLE >",
        "GPU_PWR_CNTL_EN /sys/devices/platform/gpu.0/power/control",
        "",
        "< PARAM TYPE=FILE NAME=GPU_POWER_CONTROL_DISABLE >",
        "GPU_PWR_CNTL_DIS /sys/devices/platform/gpu.0/power/control",
        "",
    ]
    for param, cpu, _cpus in _cpu_clock_params(v):
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
        policy = f"/sys/devices/system/cpu/cpufreq/policy{cpu}"
        out += [
            f"< PARAM TYPE=CLOCK NAME={param} >",
            f"FREQ_TABLE {base}/scaling_available_frequencies",
            f"MAX_FREQ {base}/scaling_max_freq",
            f"MIN_FREQ {base}/scaling_min_freq",
            f"FREQ_TABLE_KNEXT {policy}/scaling_available_frequencies",
            f"MAX_FREQ_KNEXT {policy}/scaling_max_freq",
            f"MIN_FREQ_KNEXT {policy}/scaling_min_freq",
            "",
        ]
    out += [
        "< PARAM TYPE=CLOCK NAME=GPU >",
        f"FREQ_TABLE {gpu}/available_frequencies",
        f"MAX_FREQ {gpu}/max_freq",
        f"MIN_FREQ {gpu}/min_freq",
        "",
        "< PARAM TYPE=CLOCK NAME=EMC >",
        "MAX_FREQ /sys/kernel/nvpmodel_emc_cap/emc_iso_cap",
        "",
    ]
    for dla in ("DLA0_CORE", "DLA1_CORE"):
        unit = dla.split("_")[0].lower()
        out += [
            f"< PARAM TYPE=CLOCK NAME={dla} >",
            f"MAX_FREQ /sys/devices/platform/bus@0/13e00000.host1x/{unit}/clk_cap/{dla.lower()}",
            "",
        ]
    out += [
        "###########################",
        "#                         #",
        "# POWER_MODEL DEFINITIONS #",
        "#                         #",
        "###########################",
        "",
    ]
    for mode in v.modes:
        online = set(range(mode.online_cores))
        if mode.cpu_max_khz == -1:
            out.append(f"# {mode.name}: CPU, GPU and EMC limited only by the hardware")
        out.append(f"< POWER_MODEL ID={mode.id} NAME={mode.name} >")
        out += [f"CPU_ONLINE CORE_{n} {1 if n in online else 0}" for n in range(v.cpu_cores)]
        out += [
            f"TPC_POWER_GATING TPC_PG_MASK {mode.tpc_pg_mask}",
            "GPU_POWER_CONTROL_ENABLE GPU_PWR_CNTL_EN on",
        ]
        for param, _cpu, cpus in _cpu_clock_params(v):
            if online.intersection(cpus):
                out += [f"{param} MIN_FREQ {CPU_MIN_KHZ}", f"{param} MAX_FREQ {mode.cpu_max_khz}"]
        out += [
            "GPU MIN_FREQ 0",
            f"GPU MAX_FREQ {mode.gpu_max_hz}",
            "GPU_POWER_CONTROL_DISABLE GPU_PWR_CNTL_DIS auto",
            f"EMC MAX_FREQ {mode.emc_max_hz}",
            f"DLA0_CORE MAX_FREQ {mode.dla_max_hz}",
            f"DLA1_CORE MAX_FREQ {mode.dla_max_hz}",
            "",
        ]
    out += [
        "# mandatory section to configure the default power mode",
        f"< PM_CONFIG DEFAULT={v.default_mode_id} >",
    ]
    return "\n".join(out) + "\n"


def meminfo_values(v: Variant) -> dict[str, int]:
    """A plausible idle /proc/meminfo of an L4T 5.15 kernel, in kB (HugePages_* are counts)."""
    total = v.memtotal_kb
    cma = 262144
    anon, buffers, cached, shmem = 612340, 58212, 1274612, 31580
    sreclaim, sunreclaim, kstack, pagetables = 96204, 118476, 9840, 12188
    free = total - anon - buffers - cached - sreclaim - sunreclaim - kstack - pagetables - cma // 4
    available = free + buffers + cached - shmem + sreclaim // 2
    swap = total // 2  # zram, as set up by nvzramconfig
    return {
        "MemTotal": total,
        "MemFree": free,
        "MemAvailable": available,
        "Buffers": buffers,
        "Cached": cached,
        "SwapCached": 0,
        "Active": 318772 + anon // 2,
        "Inactive": 1061704 + anon // 2,
        "Active(anon)": 1480,
        "Inactive(anon)": anon + shmem - 1480,
        "Active(file)": 318772 + anon // 2 - 1480,
        "Inactive(file)": 1061704 + anon // 2 - anon - shmem + 1480,
        "Unevictable": 3340,
        "Mlocked": 16,
        "SwapTotal": swap,
        "SwapFree": swap,
        "Dirty": 64,
        "Writeback": 0,
        "AnonPages": anon,
        "Mapped": 361208,
        "Shmem": shmem,
        "KReclaimable": sreclaim,
        "Slab": sreclaim + sunreclaim,
        "SReclaimable": sreclaim,
        "SUnreclaim": sunreclaim,
        "KernelStack": kstack,
        "ShadowCallStack": 2488,
        "PageTables": pagetables,
        "NFS_Unstable": 0,
        "Bounce": 0,
        "WritebackTmp": 0,
        "CommitLimit": total // 2 + swap,
        "Committed_AS": 2487332,
        "VmallocTotal": 133141626880,
        "VmallocUsed": 40736,
        "VmallocChunk": 0,
        "Percpu": 2176,
        "HardwareCorrupted": 0,
        "AnonHugePages": 0,
        "ShmemHugePages": 0,
        "ShmemPmdMapped": 0,
        "FileHugePages": 0,
        "FilePmdMapped": 0,
        "CmaTotal": cma,
        "CmaFree": cma - 3072,
        "HugePages_Total": 0,
        "HugePages_Free": 0,
        "HugePages_Rsvd": 0,
        "HugePages_Surp": 0,
        "Hugepagesize": 2048,
        "Hugetlb": 0,
    }


def render_meminfo(v: Variant) -> str:
    lines = []
    for key, value in meminfo_values(v).items():
        unit = "" if key.startswith("HugePages_") else " kB"
        lines.append(f"{key + ':':<16}{value:>8}{unit}")
    return "\n".join(lines) + "\n"


def render_cuda_version_json(v: Variant) -> str:
    components = {
        "cuda": "CUDA SDK",
        "cuda_cudart": "CUDA Runtime (cudart)",
        "cuda_nvcc": "CUDA NVCC",
    }
    data = {key: {"name": name, "version": v.release.cuda_version} for key, name in components.items()}
    return json.dumps(data, indent=3, separators=(",", " : ")) + "\n"


def render_dpkg_stanza(v: Variant) -> str:
    # No Depends/Pre-Depends: they would be unsatisfiable in the container and break apt.
    return (
        "Package: nvidia-l4t-core\n"
        "Status: install ok installed\n"
        "Priority: standard\n"
        "Section: libs\n"
        "Installed-Size: 3784\n"
        "Maintainer: NVIDIA Corporation\n"
        f"Architecture: {v.dpkg_architecture}\n"
        f"Version: {v.release.core_version}\n"
        "Description: NVIDIA Core Package\n"
        " Core package for NVIDIA Jetson (emulated by jetsim).\n"
    )


def _serial_number(hostname: str) -> str:
    digest = int(hashlib.sha256(hostname.encode()).hexdigest(), 16)
    return f"14{digest % 10**11:011d}"


# ------------------------------------------------------------------------------------------ host config


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown jetsim variant {name!r}; valid: {', '.join(VARIANTS)}") from None


def expected_failed_units(variant: str) -> set[str]:
    """Units that fail at every boot of the variant on purpose (a host that boots "degraded" with them is up)."""
    return {"nvpmodel.service"} if get_variant(variant).nvpmodel_boot_fault else set()


def mode_by_name(v: Variant, power_mode: str) -> PowerMode:
    for mode in v.modes:
        if mode.name == power_mode:
            return mode
    names = ", ".join(m.name for m in v.modes)
    raise ValueError(f"unknown power mode {power_mode!r} for variant {v.name}; valid: {names}")


def host_config(variant: str, hostname: str, power_mode: str | None = None) -> dict:
    """Everything jetsim-identity and the emulators need to make `hostname` look like `variant`."""
    v = get_variant(variant)
    if not hostname:
        raise ValueError("hostname must not be empty")
    initial = mode_by_name(v, power_mode) if power_mode is not None else v.mode(v.default_mode_id)
    cuda_dir = f"/usr/local/cuda-{v.cuda_short}"
    cuda_major = v.cuda_short.split(".")[0]
    stanza = render_dpkg_stanza(v)
    mem = meminfo_values(v)
    return {
        "schema": 1,
        "hostname": hostname,
        "variant": v.name,
        "description": v.description,
        "l4t": {
            "release": v.release.l4t,
            "major": v.l4t_major,
            "revision": v.l4t_revision,
            "jetpack": v.release.jetpack,
        },
        "cuda": {"version": v.release.cuda_version, "short": v.cuda_short},
        "module": v.module,
        "carrier": v.carrier,
        "soc": "tegra234",
        "device_tree": {
            "dir": DEVICE_TREE_DIR,
            "model": v.model,
            "compatible": list(v.compatible),
            "serial_number": _serial_number(hostname),
        },
        "meminfo": {key: mem[key] for key in ("MemTotal", "MemAvailable", "SwapTotal")},
        "meminfo_text": render_meminfo(v),
        "files": {
            "/etc/nv_tegra_release": {"content": render_nv_tegra_release(v), "mode": "0644"},
            v.conf_path: {"content": render_nvpmodel_conf(v), "mode": "0644"},
            f"{cuda_dir}/version.json": {"content": render_cuda_version_json(v), "mode": "0644"},
        },
        "symlinks": {
            NVPMODEL_LINK: v.conf_path,
            "/etc/alternatives/cuda": cuda_dir,
            f"/etc/alternatives/cuda-{cuda_major}": cuda_dir,
            "/usr/local/cuda": "/etc/alternatives/cuda",
            f"/usr/local/cuda-{cuda_major}": f"/etc/alternatives/cuda-{cuda_major}",
        },
        "dpkg": {
            "package": "nvidia-l4t-core",
            "version": v.release.core_version,
            "architecture": v.dpkg_architecture,
            "stanza": stanza,
            "owns": ["/etc/nv_tegra_release"],
        },
        "nvpmodel": {
            "conf": v.conf_path,
            "conf_link": NVPMODEL_LINK,
            "default_id": v.default_mode_id,
            "fan_mode": v.fan_mode,
            "status_path": NVPMODEL_STATUS,
            "modes": [{"id": m.id, "name": m.name, "online_cpus": m.online_cores} for m in v.modes],
            "boot_fault": v.nvpmodel_boot_fault,
        },
        "power_mode": {"id": initial.id, "name": initial.name},
        "devices": [
            {"path": path, "major": 1, "minor": 3, "owner": "root", "group": "video", "mode": "0660"}
            for path in GPU_DEVICE_NODES
        ],
        "hardware": {
            "cpu_cores": v.cpu_cores,
            "cpu_cluster_size": 4,
            "cpu_freqs_khz": list(CPU_FREQS_KHZ),
            "gpu_freqs_hz": list(GPU_FREQS_HZ if v.super_dtb else GPU_FREQS_HZ[:7]),
            "emc_freqs_hz": list(EMC_FREQS_HZ),
            "fan_hwmon": "hwmon2",
            "fan_pwm_idle": 77,
        },
    }


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(f"usage: {sys.argv[0]} VARIANT HOSTNAME [POWER_MODE]; variants: {', '.join(VARIANTS)}")
    print(json.dumps(host_config(*sys.argv[1:]), indent=2))
