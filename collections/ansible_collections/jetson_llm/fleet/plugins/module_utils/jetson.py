# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Pure parsing helpers for NVIDIA Jetson boards (L4T, device tree, nvpmodel, CUDA).

Everything here is side-effect free so it can be unit-tested on any machine and
shared by the modules (running on the targets' Python 3.10) and the filters
(running on the controller).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "CUDA_DRIVER_BY_L4T",
    "DOCKER_DEFAULT_ROOT",
    "JETPACK_BY_L4T",
    "MODULE_NAMES",
    "UnknownPowerModeError",
    "cuda_driver_for_l4t",
    "cuda_runs_on_driver",
    "identify_module",
    "jetpack_for_l4t",
    "jetson_clocks_fan_not_max",
    "jetson_clocks_unpinned",
    "mode_by_id",
    "mode_names",
    "mode_summaries",
    "normalize_l4t_version",
    "nvpmodel_mismatches",
    "output_requests_reboot",
    "parse_cuda_version",
    "parse_docker_daemon_json",
    "parse_dt_strings",
    "parse_jetson_clocks_pinned",
    "parse_jetson_clocks_show",
    "parse_l4t_dpkg_version",
    "parse_meminfo_total_mb",
    "parse_nv_tegra_release",
    "parse_nvpmodel_conf",
    "parse_nvpmodel_query",
    "parse_nvpmodel_verbose",
    "reboot_reasons",
    "reboot_required",
    "resolve_mode",
]

# --------------------------------------------------------------------------
# L4T / JetPack
# --------------------------------------------------------------------------

#: L4T release -> JetPack release, after NVIDIA's JetPack / Jetson Linux archive (key the logic on L4T, not on
#: nvidia-jetpack). Releases not listed map to the line of the nearest listed release below them in the same
#: L4T major.minor (``jetpack_for_l4t``): 36.5.3 -> "6.2.x", 36.4.5 -> "6.2.x".
JETPACK_BY_L4T: dict[str, str] = {
    "36.5.0": "6.2.2",
    "36.4.7": "6.2.1",
    "36.4.4": "6.2.1",
    "36.4.3": "6.2",
    "36.4.0": "6.1",
    "36.3.0": "6.0",
    "36.2.0": "6.0 DP",
    "35.6.1": "5.1.5",
    "35.6.0": "5.1.4",
    "35.5.0": "5.1.3",
    "35.4.1": "5.1.2",
    "35.3.1": "5.1.1",
    "35.2.1": "5.1",
    "35.1.0": "5.0.2",
}

#: Highest CUDA version the L4T driver runs, per L4T major.minor (Jetson has no CUDA minor-version
#: compatibility without the cuda-compat package): JetPack 6.1/6.2 (36.4, 36.5) ship CUDA 12.6, JetPack 6.0
#: (36.3) and 6.0 DP (36.2) CUDA 12.2, JetPack 5 (R35) CUDA 11.4.
CUDA_DRIVER_BY_L4T: dict[str, str] = {
    "36.5": "12.6",
    "36.4": "12.6",
    "36.3": "12.2",
    "36.2": "12.2",
    "35.6": "11.4",
    "35.5": "11.4",
    "35.4": "11.4",
    "35.3": "11.4",
    "35.2": "11.4",
    "35.1": "11.4",
}

_RELEASE_HEAD_RE = re.compile(
    r"^#\s*R(?P<major>\d+)\s*\(\s*release\s*\)\s*,\s*REVISION:\s*(?P<minor>\d+)(?:\.(?P<patch>\d+))?",
    re.IGNORECASE,
)
_RELEASE_FIELD_RE = re.compile(r"(?P<key>[A-Z_]+):\s*(?P<value>[^,]*?)\s*(?=,|$)")
_DPKG_VERSION_RE = re.compile(r"^\s*(?:\d+:)?(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?(?:[-+~.]|\s*$)")
_L4T_VERSION_RE = re.compile(r"^\s*[Rr]?(?P<major>\d+)(?:\.(?P<minor>\d+))?(?:\.(?P<patch>\d+))?\s*$")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def parse_nv_tegra_release(text: str | None) -> dict[str, Any] | None:
    """Parse the first line of /etc/nv_tegra_release.

    Returns ``version`` (``major.minor.patch``), the numeric parts and the
    ``gcid``/``board``/``eabi``/``date`` fields (None when absent), or None when
    the line is not an L4T release line.  ``REVISION: 4`` means patch 0.
    """
    if not text:
        return None
    line = _first_line(text)
    match = _RELEASE_HEAD_RE.match(line)
    if match is None:
        return None
    major = int(match.group("major"))
    minor = int(match.group("minor"))
    patch = int(match.group("patch") or 0)
    fields = {m.group("key").upper(): m.group("value") for m in _RELEASE_FIELD_RE.finditer(line)}
    return {
        "version": f"{major}.{minor}.{patch}",
        "major": major,
        "minor": minor,
        "patch": patch,
        "gcid": fields.get("GCID") or None,
        "board": fields.get("BOARD") or None,
        "eabi": fields.get("EABI") or None,
        "date": fields.get("DATE") or None,
    }


def parse_l4t_dpkg_version(text: str | None) -> str | None:
    """``36.4.3-20250107174145`` (the nvidia-l4t-core package version) -> ``36.4.3``."""
    if not text:
        return None
    match = _DPKG_VERSION_RE.match(text.strip())
    if match is None:
        return None
    return f"{int(match.group('major'))}.{int(match.group('minor'))}.{int(match.group('patch') or 0)}"


def normalize_l4t_version(version: str | None) -> str | None:
    """``R36.4`` / ``36.4`` / ``36.4.0`` -> ``36.4.0``; None when unparsable."""
    if not version:
        return None
    match = _L4T_VERSION_RE.match(str(version))
    if match is None:
        return None
    parts = (match.group("major"), match.group("minor") or "0", match.group("patch") or "0")
    return ".".join(str(int(p)) for p in parts)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _jetpack_line(jetpack: str) -> str:
    """``6.2.1`` / ``6.2`` -> ``6.2.x``; ``6.0 DP`` -> ``6.0.x``."""
    major_minor = jetpack.split()[0].split(".")[:2]
    return ".".join(major_minor) + ".x"


def jetpack_for_l4t(version: str | None) -> str | None:
    """JetPack release for an L4T version (``36.4.3`` -> ``6.2``).

    A patch release that is not in JETPACK_BY_L4T gets the line of the nearest listed release below it with the
    same L4T major.minor (``36.5.2`` -> ``6.2.x``, ``36.4.5`` -> ``6.2.x``); None when there is none.
    """
    normalized = normalize_l4t_version(version)
    if normalized is None:
        return None
    known = JETPACK_BY_L4T.get(normalized)
    if known is not None:
        return known
    wanted = _version_tuple(normalized)
    below = [
        release
        for release in JETPACK_BY_L4T
        if _version_tuple(release)[:2] == wanted[:2] and _version_tuple(release) < wanted
    ]
    if not below:
        return None
    return _jetpack_line(JETPACK_BY_L4T[max(below, key=_version_tuple)])


def cuda_driver_for_l4t(version: str | None) -> str | None:
    """Highest CUDA ``major.minor`` the L4T release's driver runs (``36.3.0`` -> ``12.2``).

    A later minor release of a known major gets at least the driver of the latest known one (``36.6`` -> ``12.6``:
    drivers only move forward within a major); None for anything else.
    """
    normalized = normalize_l4t_version(version)
    if normalized is None:
        return None
    wanted = _version_tuple(normalized)[:2]
    below = [
        line for line in CUDA_DRIVER_BY_L4T if _version_tuple(line)[0] == wanted[0] and _version_tuple(line) <= wanted
    ]
    return CUDA_DRIVER_BY_L4T[max(below, key=_version_tuple)] if below else None


def cuda_runs_on_driver(image_cuda: str | None, driver_cuda: str | None) -> bool | None:
    """True when an image built with CUDA ``image_cuda`` (``12.6``, ``12.6.68``) runs on a driver that supports
    ``driver_cuda``: same major and image minor <= driver minor. None when either is unknown."""
    try:
        image = _version_tuple(str(image_cuda).strip())[:2]
        driver = _version_tuple(str(driver_cuda).strip())[:2]
    except ValueError:
        return None
    if len(image) < 2 or len(driver) < 2:
        return None
    return image[0] == driver[0] and image[1] <= driver[1]


# --------------------------------------------------------------------------
# Device tree
# --------------------------------------------------------------------------

#: Module part numbers (as they appear in /proc/device-tree/compatible) -> marketing names.
MODULE_NAMES: dict[str, str] = {
    "p3767-0000": "Orin NX 16GB",
    "p3767-0001": "Orin NX 8GB",
    "p3767-0003": "Orin Nano 8GB",
    "p3767-0004": "Orin Nano 4GB",
    "p3767-0005": "Orin Nano 8GB devkit",
    "p3701-0000": "AGX Orin 32GB",
    "p3701-0004": "AGX Orin 32GB",
    "p3701-0005": "AGX Orin 64GB",
}

_MODULE_FAMILIES = frozenset(key.split("-", 1)[0] for key in MODULE_NAMES)
_BOARD_ID_RE = re.compile(r"^p\d{4}-\d{4}$")
_SOC_RE = re.compile(r"^tegra\d+$")
_SUPER_SUFFIX = "-super"


def parse_dt_strings(data: bytes | None) -> list[str]:
    """Split a device-tree string property (NUL separated and terminated)."""
    if not data:
        return []
    items = (chunk.decode("utf-8", errors="replace").strip() for chunk in data.split(b"\0"))
    return [item for item in items if item]


def _compatible_parts(entry: str) -> list[str]:
    """``nvidia,p3768-0000+p3767-0000-super`` -> ``["p3768-0000", "p3767-0000"]``."""
    ident = entry.split(",", 1)[-1].strip().lower()
    parts = []
    for part in ident.split("+"):
        part = part.strip()
        if part.endswith(_SUPER_SUFFIX):
            part = part[: -len(_SUPER_SUFFIX)]
        if part:
            parts.append(part)
    return parts


def _is_known_module(part: str) -> bool:
    return _BOARD_ID_RE.match(part) is not None and part.split("-", 1)[0] in _MODULE_FAMILIES


def _find_module(entries: list[list[str]]) -> str | None:
    for parts in entries:
        for part in parts:
            if _is_known_module(part):
                return part
    # Unknown module: the last board id of a "carrier+module" entry, else the first board id.
    for parts in entries:
        if len(parts) > 1 and _BOARD_ID_RE.match(parts[-1]):
            return parts[-1]
    for parts in entries:
        for part in parts:
            if _BOARD_ID_RE.match(part):
                return part
    return None


def _find_carrier(entries: list[list[str]], module: str | None) -> str | None:
    if module is None:
        return None
    for parts in entries:
        if module in parts and len(parts) > 1:
            others = [p for p in parts if p != module]
            return others[0] if others else None
    return None


def _find_soc(entries: list[list[str]]) -> str | None:
    for parts in entries:
        for part in parts:
            if _SOC_RE.match(part):
                return part
    return None


def _is_super(compatible: Iterable[str], model: str | None) -> bool:
    if any(entry.strip().lower().endswith(_SUPER_SUFFIX) for entry in compatible):
        return True
    return bool(model) and str(model).strip().lower().endswith("super")


def identify_module(compatible: list[str], model: str | None) -> dict[str, Any]:
    """Identify the Jetson module, carrier board, SoC and super DTB from the device tree."""
    entries = [_compatible_parts(entry) for entry in compatible]
    module = _find_module(entries)
    return {
        "module": module,
        "module_name": MODULE_NAMES.get(module) if module else None,
        "carrier": _find_carrier(entries, module),
        "super": _is_super(compatible, model),
        "soc": _find_soc(entries),
    }


# --------------------------------------------------------------------------
# nvpmodel
# --------------------------------------------------------------------------


class UnknownPowerModeError(KeyError, ValueError):
    """Requested power mode is not in nvpmodel.conf (catchable as KeyError or ValueError)."""

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.available = available

    def __str__(self) -> str:
        return self.message


_BLOCK_RE = re.compile(r"^<\s*(?P<tag>[A-Za-z_][A-Za-z0-9_]*)(?P<attrs>[^>]*)>\s*$")
_ATTR_RE = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>[^\s>]+)")
_COMMENT_RE = re.compile(r"(?:^|\s)#.*$")
_QUERY_NAME_RE = re.compile(r"NV Power Mode\s*:\s*(?P<name>\S+)")
_INT_LINE_RE = re.compile(r"^\s*(?P<id>\d+)\s*$")
_REBOOT_RE = re.compile(r"reboot\s+required\s+for\s+changing\s+to\s+this\s+power\s+mode", re.IGNORECASE)


def _clean_lines(text: str) -> list[str]:
    lines = (_COMMENT_RE.sub("", raw).strip() for raw in text.splitlines())
    return [line for line in lines if line]


def _parse_block_header(line: str) -> tuple[str, dict[str, str]] | None:
    match = _BLOCK_RE.match(line)
    if match is None:
        return None
    attrs = {m.group("key").upper(): m.group("value") for m in _ATTR_RE.finditer(match.group("attrs"))}
    return match.group("tag").upper(), attrs


def _new_mode(attrs: dict[str, str]) -> dict[str, Any]:
    raw_id = attrs.get("ID")
    name = attrs.get("NAME")
    if raw_id is None or not raw_id.isdigit():
        raise ValueError(f"POWER_MODEL block without a numeric ID: {attrs!r}")
    if not name:
        raise ValueError(f"POWER_MODEL ID={raw_id} has no NAME")
    return {"id": int(raw_id), "name": name, "cpu_online": None, "settings": {}}


def _add_setting(mode: dict[str, Any], line: str) -> None:
    tokens = line.split()
    if len(tokens) < 3:
        return  # tolerate malformed lines
    param, arg, value = tokens[0].upper(), tokens[1], " ".join(tokens[2:])
    mode["settings"].setdefault(param, {})[arg] = value


def _count_online(mode: dict[str, Any]) -> int | None:
    cores = mode["settings"].get("CPU_ONLINE")
    if not cores:
        return None
    return sum(1 for value in cores.values() if value.strip() == "1")


def _parse_default(attrs: dict[str, str]) -> int | None:
    raw = attrs.get("DEFAULT")
    return int(raw) if raw is not None and raw.isdigit() else None


def _check_unique(modes: list[dict[str, Any]]) -> None:
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    for mode in modes:
        if mode["id"] in seen_ids:
            raise ValueError(f"duplicate power mode ID {mode['id']} in nvpmodel.conf")
        if mode["name"] in seen_names:
            raise ValueError(f"duplicate power mode NAME {mode['name']} in nvpmodel.conf")
        seen_ids.add(mode["id"])
        seen_names.add(mode["name"])


def parse_nvpmodel_conf(text: str) -> dict[str, Any]:
    """Parse nvpmodel.conf into ``{"modes": [...], "default": int | None}``.

    Each mode is ``{"id", "name", "cpu_online", "settings"}`` where ``settings``
    maps PARAM -> ARG -> value (strings, as written in the file) and
    ``cpu_online`` counts ``CPU_ONLINE CORE_n 1`` lines (None without any
    CPU_ONLINE line).  PARAM definitions and unknown blocks are skipped.
    Raises ValueError on malformed POWER_MODEL headers, duplicate IDs/names or
    when no mode is defined.
    """
    modes: list[dict[str, Any]] = []
    default: int | None = None
    current: dict[str, Any] | None = None
    for line in _clean_lines(text):
        header = _parse_block_header(line)
        if header is None:
            if current is not None:
                _add_setting(current, line)
            continue
        tag, attrs = header
        current = None
        if tag == "POWER_MODEL":
            current = _new_mode(attrs)
            modes.append(current)
        elif tag == "PM_CONFIG":
            default = _parse_default(attrs)
    if not modes:
        raise ValueError("no POWER_MODEL blocks found in nvpmodel.conf")
    _check_unique(modes)
    for mode in modes:
        mode["cpu_online"] = _count_online(mode)
    return {"modes": modes, "default": default}


def parse_nvpmodel_query(output: str) -> dict[str, Any]:
    """Parse ``nvpmodel -q`` output into ``{"name": str, "id": int}``."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        match = _QUERY_NAME_RE.search(line)
        if match is None:
            continue
        for following in lines[index + 1 :]:
            id_match = _INT_LINE_RE.match(following)
            if id_match is not None:
                return {"name": match.group("name"), "id": int(id_match.group("id"))}
        raise ValueError(f"nvpmodel -q printed mode {match.group('name')} but no mode ID: {output!r}")
    raise ValueError(f"no 'NV Power Mode:' line in nvpmodel -q output: {output!r}")


def mode_names(conf: Mapping[str, Any]) -> list[str]:
    """``["MAXN_SUPER (0)", "10W (1)", ...]`` for messages and the filter."""
    return [f"{mode['name']} ({mode['id']})" for mode in conf.get("modes", [])]


def mode_summaries(conf: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{"id", "name", "cpu_online"}, ...]`` without the settings."""
    return [
        {"id": mode["id"], "name": mode["name"], "cpu_online": mode.get("cpu_online")} for mode in conf.get("modes", [])
    ]


def resolve_mode(conf: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Mode dict for NAME (exact, else a unique case-insensitive match).

    Raises UnknownPowerModeError (a KeyError and ValueError) listing the
    available names with IDs.
    """
    modes: list[dict[str, Any]] = list(conf.get("modes", []))
    for mode in modes:
        if mode["name"] == name:
            return mode
    folded = [mode for mode in modes if str(mode["name"]).lower() == str(name).lower()]
    if len(folded) == 1:
        return folded[0]
    available = mode_names(conf)
    raise UnknownPowerModeError(
        f"unknown power mode {name!r}; available modes: {', '.join(available) or 'none'}", available
    )


def mode_by_id(conf: Mapping[str, Any], mode_id: int) -> dict[str, Any] | None:
    """Mode dict with this ID, or None."""
    for mode in conf.get("modes", []):
        if mode["id"] == mode_id:
            return dict(mode)
    return None


#: nvpmodel settings whose change needs a reboot besides the online CPU set: the GPU power-gating masks
#: (TPC_POWER_GATING TPC_PG_MASK, FBP_POWER_GATING FBP_PG_MASK); the masks are applied by the boot firmware.
REBOOT_MASK_ARGS = ("TPC_PG_MASK", "FBP_PG_MASK")


def _mask(mode: Mapping[str, Any], arg: str) -> str | None:
    for args in mode.get("settings", {}).values():
        if arg in args:
            return str(args[arg]).strip()
    return None


def reboot_reasons(conf: Mapping[str, Any], from_id: int, to_id: int) -> list[str]:
    """Why switching modes needs a reboot: the online CPU core count or a GPU power-gating mask changes.

    Unknown IDs, modes without CPU_ONLINE lines and masks only one mode sets count as "no change".
    """
    source = mode_by_id(conf, from_id)
    target = mode_by_id(conf, to_id)
    if source is None or target is None:
        return []
    reasons = []
    before, after = source.get("cpu_online"), target.get("cpu_online")
    if before is not None and after is not None and before != after:
        reasons.append(f"online CPU cores {before} -> {after}")
    for arg in REBOOT_MASK_ARGS:
        old, new = _mask(source, arg), _mask(target, arg)
        if old is not None and new is not None and old != new:
            reasons.append(f"{arg} {old} -> {new}")
    return reasons


def reboot_required(conf: Mapping[str, Any], from_id: int, to_id: int) -> bool:
    """True when switching modes changes the number of online CPU cores or a GPU power-gating mask
    (TPC_PG_MASK, FBP_PG_MASK): nvpmodel then asks for a reboot.

    Unknown IDs, modes without CPU_ONLINE lines and masks only one mode sets count as "no change".
    """
    return bool(reboot_reasons(conf, from_id, to_id))


# nvpmodel -q --verbose: `NVPM VERB: PARAM CPU_ONLINE: ARG CORE_4: PATH /sys/...: REAL_VAL: 0 CONF_VAL: 1`
_VERBOSE_RE = re.compile(
    r"PARAM\s+(?P<param>[A-Z0-9_]+):\s+ARG\s+(?P<arg>[A-Z0-9_]+):\s+(?:PATH\s+\S*?:\s+)?"
    r"REAL_VAL:\s*(?P<real>\S+)\s+CONF_VAL:\s*(?P<conf>\S+)"
)
_NO_CAP = 2**31 - 1  # CONF_VAL -1 is printed as INT_MAX (or LONG_MAX): no cap


def parse_nvpmodel_verbose(output: str | None) -> list[dict[str, str]]:
    """``nvpmodel -q --verbose`` -> ``[{"param", "arg", "real", "conf"}, ...]``: what each setting of the mode in
    the status file is on the hardware (REAL_VAL) and in the table (CONF_VAL)."""
    return [
        {"param": m.group("param"), "arg": m.group("arg"), "real": m.group("real"), "conf": m.group("conf")}
        for m in _VERBOSE_RE.finditer(output or "")
    ]


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _clock_mismatch(param: str, arg: str, real: int, conf: int) -> str | None:
    if arg == "MAX_FREQ" and 0 < conf < _NO_CAP and real > conf:
        return f"{param} MAX_FREQ is {real}, the mode caps it at {conf}"
    if arg == "MIN_FREQ" and 0 < conf < _NO_CAP and real < conf:
        return f"{param} MIN_FREQ is {real}, the mode sets {conf}"
    return None


def nvpmodel_mismatches(entries: Iterable[Mapping[str, str]]) -> list[str]:
    """Settings of ``parse_nvpmodel_verbose`` whose hardware value contradicts the table: an online CPU set
    that differs, a GPU power-gating mask that differs, a CPU or GPU clock above the mode's cap or below its floor.
    Other settings (power control, EMC, DLA) are not compared: their REAL_VAL reads back differently by design."""
    problems = []
    for entry in entries:
        param, arg = entry["param"], entry["arg"]
        real, conf = _as_int(entry["real"]), _as_int(entry["conf"])
        if real is None or conf is None:
            continue
        if param == "CPU_ONLINE" or arg in REBOOT_MASK_ARGS:
            if real != conf:
                problems.append(f"{param} {arg} is {real}, the mode sets {conf}")
        elif param.startswith("CPU") or param == "GPU":
            problem = _clock_mismatch(param, arg, real, conf)
            if problem:
                problems.append(problem)
    return problems


_SHOW_CPU_RE = re.compile(r"^cpu(?P<cpu>\d+):\s+Online=(?P<online>\d)(?P<rest>.*)$")
_SHOW_FREQ_RE = re.compile(r"MinFreq=(?P<min>\d+)\s+MaxFreq=(?P<max>\d+)(?:\s+CurrentFreq=(?P<cur>\d+))?")
# R35/R36.3 `FAN Dynamic Speed control=active hwmon2_pwm1=77`; R36.4 `FAN Dynamic Speed Control=kernel
# hwmon0_pwm1=88`; R36.5 `... Control=nvfancontrol hwmon0_pwm1=60` and `... Control=nvfancontrol hwmon0_pwm1_enable=1`.
_SHOW_FAN_RE = re.compile(
    r"^FAN Dynamic Speed [Cc]ontrol=(?P<control>\S+)\s+(?P<hwmon>\w+?)_(?P<node>pwm\d+(?:_enable)?)=(?P<value>\d+)"
)
FAN_MAX_PWM = 255


def parse_jetson_clocks_show(show: str | None) -> dict[str, Any]:
    """``jetson_clocks --show`` -> ``{"cpus": {n: {"online", "min", "max"}}, "gpu": {"min", "max"} | None,
    "emc": {"min", "max", "override"} | None, "fans": [{"control", "hwmon", "node", "value"}], "power_mode"}``."""
    result: dict[str, Any] = {"cpus": {}, "gpu": None, "emc": None, "fans": [], "power_mode": None}
    for raw in (show or "").splitlines():
        line = raw.strip()
        freqs = _SHOW_FREQ_RE.search(line)
        cpu = _SHOW_CPU_RE.match(line)
        fan = _SHOW_FAN_RE.match(line)
        if cpu:
            entry: dict[str, Any] = {"online": cpu.group("online") == "1", "min": None, "max": None}
            if freqs:
                entry.update(min=int(freqs.group("min")), max=int(freqs.group("max")))
            result["cpus"][int(cpu.group("cpu"))] = entry
        elif line.startswith("GPU ") and freqs:
            result["gpu"] = {"min": int(freqs.group("min")), "max": int(freqs.group("max"))}
        elif line.startswith("EMC ") and freqs:
            result["emc"] = {
                "min": int(freqs.group("min")),
                "max": int(freqs.group("max")),
                "override": "FreqOverride=1" in line,
            }
        elif fan:
            result["fans"].append({**fan.groupdict(), "value": int(fan.group("value"))})
        elif line.startswith("NV Power Mode:"):
            result["power_mode"] = line.split(":", 1)[1].strip() or None
    return result


def jetson_clocks_unpinned(show: str | None) -> list[str]:
    """What keeps ``jetson_clocks --show`` from being pinned to the active mode's maxima: every online CPU and
    the GPU at MinFreq == MaxFreq (nvpmodel sets MaxFreq to the mode's cap, jetson_clocks raises MinFreq to it),
    the EMC rate locked (FreqOverride=1, or MinFreq == MaxFreq). ``["no online CPU listed"]`` when unreadable."""
    parsed = parse_jetson_clocks_show(show)
    online = {n: c for n, c in parsed["cpus"].items() if c["online"] and c["min"] is not None}
    if not online:
        return ["no online CPU listed"]
    problems = [
        f"cpu{n} MinFreq={c['min']} MaxFreq={c['max']}" for n, c in sorted(online.items()) if c["min"] != c["max"]
    ]
    gpu, emc = parsed["gpu"], parsed["emc"]
    if gpu is not None and gpu["min"] != gpu["max"]:
        problems.append(f"GPU MinFreq={gpu['min']} MaxFreq={gpu['max']}")
    if emc is not None and not emc["override"] and emc["min"] != emc["max"]:
        problems.append(f"EMC MinFreq={emc['min']} MaxFreq={emc['max']} FreqOverride=0")
    return problems


def jetson_clocks_fan_not_max(show: str | None) -> list[str]:
    """What keeps the fan from running at full speed in ``jetson_clocks --show``: a PWM below 255 or a dynamic
    controller (nvfancontrol) still in charge. ``["no fan listed"]`` when the output names no fan."""
    fans = parse_jetson_clocks_show(show)["fans"]
    pwm = [fan for fan in fans if not fan["node"].endswith("_enable")]
    if not pwm:
        return ["no fan listed"]
    problems = [f"{fan['hwmon']}_{fan['node']}={fan['value']}" for fan in pwm if fan["value"] < FAN_MAX_PWM]
    if any(fan["control"] in ("nvfancontrol", "active") for fan in fans):
        problems.append("nvfancontrol controls the fan")
    return problems


def parse_jetson_clocks_pinned(show: str | None) -> bool | None:
    """``jetson_clocks --show`` -> True when every online CPU and the GPU run at MinFreq == MaxFreq and the EMC
    rate is locked (FreqOverride=1, or MinFreq == MaxFreq); None when the output lists no CPU (not readable)."""
    problems = jetson_clocks_unpinned(show)
    if problems == ["no online CPU listed"]:
        return None
    return not problems


def output_requests_reboot(output: str | None) -> bool:
    """True when nvpmodel asked for a reboot to apply the mode."""
    return bool(output) and _REBOOT_RE.search(output or "") is not None


# --------------------------------------------------------------------------
# CUDA, memory, docker
# --------------------------------------------------------------------------

_CUDA_TXT_RE = re.compile(r"CUDA\s+Version\s+(?P<version>\d+(?:\.\d+)+)", re.IGNORECASE)


def _cuda_from_json(text: str | None) -> str | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    cuda = data.get("cuda") if isinstance(data, dict) else None
    version = cuda.get("version") if isinstance(cuda, dict) else None
    return str(version) if version else None


def parse_cuda_version(version_json_text: str | None, version_txt: str | None) -> str | None:
    """CUDA toolkit version from version.json (preferred) or version.txt."""
    version = _cuda_from_json(version_json_text)
    if version:
        return version
    match = _CUDA_TXT_RE.search(version_txt or "")
    return match.group("version") if match else None


def parse_meminfo_total_mb(text: str | None) -> int | None:
    """``MemTotal:  16031744 kB`` in /proc/meminfo -> MiB (15656, what an Orin NX 16GB on JetPack 6 reports)."""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", text or "", re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


DOCKER_DEFAULT_ROOT = "/var/lib/docker"


def parse_docker_daemon_json(text: str | None) -> dict[str, Any]:
    """``{"runtimes": [names], "default_runtime": str | None, "data_root": str | None}`` from
    /etc/docker/daemon.json (``data-root``, or the older ``graph`` key; None when neither is set)."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    runtimes = data.get("runtimes")
    default = data.get("default-runtime")
    root = data.get("data-root") or data.get("graph")
    return {
        "runtimes": sorted(str(key) for key in runtimes) if isinstance(runtimes, dict) else [],
        "default_runtime": str(default) if default else None,
        "data_root": str(root) if isinstance(root, str) and root.startswith("/") else None,
    }
