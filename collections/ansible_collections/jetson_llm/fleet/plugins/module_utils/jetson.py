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
    "JETPACK_BY_L4T",
    "MODULE_NAMES",
    "UnknownPowerModeError",
    "identify_module",
    "jetpack_for_l4t",
    "mode_by_id",
    "mode_names",
    "mode_summaries",
    "normalize_l4t_version",
    "output_requests_reboot",
    "parse_cuda_version",
    "parse_docker_daemon_json",
    "parse_dt_strings",
    "parse_l4t_dpkg_version",
    "parse_meminfo_total_mb",
    "parse_nv_tegra_release",
    "parse_nvpmodel_conf",
    "parse_nvpmodel_query",
    "reboot_required",
    "resolve_mode",
]

# --------------------------------------------------------------------------
# L4T / JetPack
# --------------------------------------------------------------------------

#: L4T release -> JetPack release (key the logic on L4T, not on nvidia-jetpack).
JETPACK_BY_L4T: dict[str, str] = {
    "36.5.0": "6.2.1",
    "36.4.7": "6.2.1",
    "36.4.4": "6.2.1",
    "36.4.3": "6.2",
    "36.4.2": "6.1.1",
    "36.4.0": "6.1",
    "36.3.0": "6.0",
    "36.2.0": "6.0 DP",
    "35.6.0": "5.1.4",
    "35.5.0": "5.1.3",
    "35.4.1": "5.1.2",
    "35.3.1": "5.1.1",
    "35.2.1": "5.1",
    "35.1.0": "5.0.2",
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


def jetpack_for_l4t(version: str | None) -> str | None:
    """JetPack release for an L4T version (``36.4.3`` -> ``6.2``), None if unknown."""
    normalized = normalize_l4t_version(version)
    if normalized is None:
        return None
    return JETPACK_BY_L4T.get(normalized)


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


def reboot_required(conf: Mapping[str, Any], from_id: int, to_id: int) -> bool:
    """True when switching modes changes the number of online CPU cores.

    Unknown IDs or modes without CPU_ONLINE lines count as "no change".
    """
    source = mode_by_id(conf, from_id)
    target = mode_by_id(conf, to_id)
    if source is None or target is None:
        return False
    before, after = source.get("cpu_online"), target.get("cpu_online")
    if before is None or after is None:
        return False
    return bool(before != after)


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
    """``MemTotal:  15655140 kB`` in /proc/meminfo -> MiB (15288)."""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", text or "", re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def parse_docker_daemon_json(text: str | None) -> dict[str, Any]:
    """``{"runtimes": [names], "default_runtime": str | None}`` from /etc/docker/daemon.json."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    runtimes = data.get("runtimes")
    default = data.get("default-runtime")
    return {
        "runtimes": sorted(str(key) for key in runtimes) if isinstance(runtimes, dict) else [],
        "default_runtime": str(default) if default else None,
    }
