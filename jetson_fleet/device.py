"""Parsers for what Jetson tools print, shared by the benchmark report and the fleet CLI."""

from __future__ import annotations

import re

_L4T = re.compile(r"R(\d+) \(release\), REVISION: (\d+)(?:\.(\d+))?")
_FREQS = re.compile(r"MinFreq=(\d+)\s+MaxFreq=(\d+)")


def parse_l4t(first_line: str | None) -> str | None:
    """First line of /etc/nv_tegra_release (`# R36 (release), REVISION: 4.3, ...`) -> "36.4.3"."""
    match = _L4T.search(first_line or "")
    if not match:
        return None
    return f"{match[1]}.{match[2]}.{match[3] or 0}"


def parse_power_mode(nvpmodel_q: str | None) -> str | None:
    """`nvpmodel -q` output -> the mode name (`NV Power Mode: MAXN_SUPER`), None when absent."""
    for line in (nvpmodel_q or "").splitlines():
        if line.startswith("NV Power Mode:"):
            return line.split(":", 1)[1].strip() or None
    return None


def parse_clocks_pinned(show: str | None) -> bool | None:
    """`jetson_clocks --show` -> True when every online CPU and the GPU run at MinFreq == MaxFreq and the EMC
    rate is locked (FreqOverride=1, or MinFreq == MaxFreq); None when the output lists no CPU (not readable)."""
    cpus = 0
    pinned = True
    for line in (show or "").splitlines():
        freqs = _FREQS.search(line)
        if line.startswith("cpu") and "Online=1" in line and freqs:
            cpus += 1
            pinned &= freqs[1] == freqs[2]
        elif line.startswith("GPU ") and freqs:
            pinned &= freqs[1] == freqs[2]
        elif line.startswith("EMC ") and freqs:
            pinned &= "FreqOverride=1" in line or freqs[1] == freqs[2]
    return pinned if cpus else None
