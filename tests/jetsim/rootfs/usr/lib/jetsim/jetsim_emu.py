"""Shared code of the jetsim Jetson emulators (nvpmodel, jetson_clocks, tegrastats, jetsim-identity).

Test fixture only: stdlib, Python 3.11. Nothing here touches real sysfs; all emulated state is files.

Every path the emulators read or write goes through `at()`, which prefixes $JETSIM_ROOT (default `/`),
so unit tests can run the tools against a temporary directory. Absolute symlinks are resolved inside
that root (`resolve()`).

State files (paths relative to the root):
- /etc/jetsim/host.json         host identity written by the harness (schema: tests/jetsim/variants.py)
- /var/lib/nvpmodel/status      persisted power mode, real format `pmode:0002 fmode:quiet` (survives reboot)
- /run/jetsim/clocks.json       applied runtime state (tmpfs, gone after reboot), see `mode_state()`:
    {"version": 1, "mode_id", "mode_name", "conf", "online_cpus": [0, 1, ...],
     "cpus": [{"cpu", "online", "governor", "min_khz", "max_khz", "cur_khz", "idle_disabled"}, ...],
     "gpu": {"min_hz", "max_hz", "cur_hz"}, "emc": {"min_hz", "max_hz", "cur_hz", "override"},
     "tpc_pg_mask": int | None, "fbp_pg_mask": int | None,
     "pinned": bool, "fan_max": bool, "fan_pwm": int, "updated_by": str}
  mode_id / mode_name are null in the kernel's boot state (nvpmodel applied nothing: every core online, full ranges).
- /run/jetsim/nvfancontrol.pid  pid of the running nvfancontrol emulator (its "unit is active")
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

# Imports are kept light on purpose (no dataclasses, argparse, tempfile, subprocess at import time):
# the unit tests start these tools a few hundred times.

HOST_JSON = "/etc/jetsim/host.json"
RUN_DIR = "/run/jetsim"
CLOCKS_JSON = "/run/jetsim/clocks.json"
NVFANCONTROL_PID = "/run/jetsim/nvfancontrol.pid"
NVPMODEL_STATUS = "/var/lib/nvpmodel/status"
NVPMODEL_CONF = "/etc/nvpmodel.conf"
DEVICE_TREE_DIR = "/sys/firmware/devicetree/base"

# Used when host.json is missing: an Orin NX 16GB.
DEFAULT_HARDWARE: dict[str, Any] = {
    "cpu_cores": 8,
    "cpu_cluster_size": 4,
    "cpu_freqs_khz": [115200, 729600, 1190400, 1420800, 1497600, 1728000, 1984000],
    "gpu_freqs_hz": [306000000, 612000000, 816000000, 918000000, 1020000000, 1173000000],
    "emc_freqs_hz": [204000000, 665600000, 2133000000, 3199000000],
    "fan_hwmon": "hwmon2",
    "fan_pwm_idle": 77,
}


class EmulatorError(Exception):
    """A failure reported to the user as one line."""


# ---------------------------------------------------------------------------------------------- paths


def root() -> Path:
    return Path(os.environ.get("JETSIM_ROOT") or "/")


def is_real_root() -> bool:
    return root().resolve() == Path("/")


def at(path: str | PurePosixPath) -> Path:
    """`path` (absolute, as on the device) inside $JETSIM_ROOT."""
    return root() / str(path).lstrip("/")


def resolve(path: str) -> Path:
    """Like realpath, but absolute symlink targets are taken relative to $JETSIM_ROOT."""
    pending = deque(PurePosixPath(path).parts[1:] if path.startswith("/") else PurePosixPath(path).parts)
    current = PurePosixPath("/")
    hops = 0
    while pending:
        name = pending.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        candidate = current / name
        real = at(candidate)
        if real.is_symlink():
            hops += 1
            if hops > 40:
                raise EmulatorError(f"too many levels of symbolic links in {path}")
            target = os.readlink(real)
            parts = PurePosixPath(target).parts
            if target.startswith("/"):
                current = PurePosixPath("/")
                parts = parts[1:]
            pending.extendleft(reversed(parts))
        else:
            current = candidate
    return at(current)


def effective_uid() -> int:
    """The caller's uid; JETSIM_FAKE_UID overrides it for unit tests."""
    fake = os.environ.get("JETSIM_FAKE_UID")
    return int(fake) if fake else os.geteuid()


def atomic_write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def state_lock() -> Iterator[None]:
    lock = at(RUN_DIR) / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- host


def load_host() -> dict[str, Any] | None:
    path = at(HOST_JSON)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise EmulatorError(f"{HOST_JSON}: not a JSON object")
    return data


def hardware(host: dict[str, Any] | None) -> dict[str, Any]:
    merged = dict(DEFAULT_HARDWARE)
    if host and isinstance(host.get("hardware"), dict):
        merged.update(host["hardware"])
    for key in ("cpu_freqs_khz", "gpu_freqs_hz", "emc_freqs_hz"):
        merged[key] = sorted(int(v) for v in merged[key])
    return merged


def model_name(host: dict[str, Any] | None) -> str:
    path = at(DEVICE_TREE_DIR) / "model"
    if path.exists():
        return path.read_bytes().rstrip(b"\0").decode(errors="replace")
    if host:
        return str(host.get("device_tree", {}).get("model", "unknown"))
    return "unknown"


# ---------------------------------------------------------------------------------------------- nvpmodel.conf


class Param:
    """`< PARAM TYPE=.. NAME=.. >`: args maps ARG_NAME to its sysfs path."""

    def __init__(self, name: str, type: str) -> None:
        self.name = name
        self.type = type  # FILE or CLOCK
        self.args: dict[str, str] = {}


class Mode:
    """`< POWER_MODEL ID=.. NAME=.. >`: settings are (PARAM, ARG, VALUE) in file order."""

    def __init__(self, id: int, name: str) -> None:
        self.id = id
        self.name = name
        self.settings: list[tuple[str, str, str]] = []


class Conf:
    def __init__(self, path: str, params: dict[str, Param], modes: list[Mode], default: int) -> None:
        self.path = path
        self.params = params
        self.modes = modes
        self.default = default

    def mode(self, mode_id: int) -> Mode | None:
        return next((m for m in self.modes if m.id == mode_id), None)


_HEADER = re.compile(r"^<\s*([A-Z_]+)\s*(.*?)\s*>$")
_ATTR = re.compile(r"(\w+)=(\S+)")


def parse_conf(text: str, path: str = NVPMODEL_CONF) -> Conf:
    """Parse the L4T nvpmodel.conf format (see the header comment of the generated files)."""
    params: dict[str, Param] = {}
    modes: list[Mode] = []
    default: int | None = None
    section: Param | Mode | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            kind, attrs = header.group(1), dict(_ATTR.findall(header.group(2)))
            try:
                if kind == "PARAM":
                    section = params[attrs["NAME"]] = Param(attrs["NAME"], attrs["TYPE"])
                elif kind == "POWER_MODEL":
                    section = Mode(int(attrs["ID"]), attrs["NAME"])
                    modes.append(section)
                elif kind == "PM_CONFIG":
                    default = int(attrs["DEFAULT"])
                    section = None
                else:
                    raise EmulatorError(f"{path}:{number}: unknown section {kind}")
            except (KeyError, ValueError) as exc:
                raise EmulatorError(f"{path}:{number}: bad section header: {line}") from exc
            continue
        words = line.split("#", 1)[0].split()
        if isinstance(section, Param) and len(words) == 2:
            section.args[words[0]] = words[1]
        elif isinstance(section, Mode) and len(words) == 3:
            if words[0] not in params:
                raise EmulatorError(f"{path}:{number}: undefined PARAM {words[0]}")
            section.settings.append((words[0], words[1], words[2]))
        else:
            raise EmulatorError(f"{path}:{number}: cannot parse: {line}")
    if not modes:
        raise EmulatorError(f"{path}: no POWER_MODEL defined")
    if default is None:
        raise EmulatorError(f"{path}: missing mandatory < PM_CONFIG DEFAULT=n > section")
    if not any(m.id == default for m in modes):
        raise EmulatorError(f"{path}: PM_CONFIG DEFAULT={default} is not a defined POWER_MODEL")
    return Conf(path, params, modes, default)


def load_conf(path: str = NVPMODEL_CONF) -> Conf:
    real = resolve(path)
    try:
        text = real.read_text()
    except OSError as exc:
        raise EmulatorError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_conf(text, path)


def online_cpus(mode: Mode, cores: int) -> list[int]:
    online = set(range(cores))
    for param, arg, value in mode.settings:
        match = re.fullmatch(r"CORE_(\d+)", arg)
        if param == "CPU_ONLINE" and match and int(match.group(1)) < cores:
            if value.strip() == "0":
                online.discard(int(match.group(1)))
            else:
                online.add(int(match.group(1)))
    online.add(0)  # CORE_0 cannot be taken offline
    return sorted(online)


def _cap_max(value: int, table: list[int]) -> int:
    if value <= 0 or value >= table[-1]:  # -1: INT_MAX; 0 on EMC: no cap
        return table[-1]
    below = [f for f in table if f <= value]
    return below[-1] if below else table[0]


def _cap_min(value: int, table: list[int]) -> int:
    if value <= table[0]:
        return table[0]
    above = [f for f in table if f >= value]
    return above[0] if above else table[-1]


def param_cpus(param: Param, hw: dict[str, Any]) -> list[int]:
    """CPUs governed by a CPU CLOCK param: the cpufreq policy (cluster) of the cpu its path names."""
    for path in param.args.values():
        match = re.search(r"/(?:cpu|policy)(\d+)(?:/|$)", path)
        if match:
            cpu, size = int(match.group(1)), int(hw["cpu_cluster_size"])
            first = cpu - cpu % size
            return [c for c in range(first, first + size) if c < int(hw["cpu_cores"])]
    return []


def mode_state(conf: Conf, mode: Mode, hw: dict[str, Any], updated_by: str) -> dict[str, Any]:
    """The runtime state right after nvpmodel applied `mode` (clocks not pinned)."""
    cores = int(hw["cpu_cores"])
    cpu_table, gpu_table, emc_table = hw["cpu_freqs_khz"], hw["gpu_freqs_hz"], hw["emc_freqs_hz"]
    online = online_cpus(mode, cores)
    cpu_min = {n: cpu_table[0] for n in range(cores)}
    cpu_max = {n: cpu_table[-1] for n in range(cores)}
    gpu = {"min_hz": gpu_table[0], "max_hz": gpu_table[-1]}
    emc_max = emc_table[-1]
    for param_name, arg, raw in mode.settings:
        param = conf.params[param_name]
        if param.type != "CLOCK":
            continue
        try:
            value = int(raw)
        except ValueError:
            continue
        if param_name.startswith("CPU"):
            for cpu in param_cpus(param, hw):
                if arg == "MIN_FREQ":
                    cpu_min[cpu] = _cap_min(value, cpu_table)
                elif arg == "MAX_FREQ":
                    cpu_max[cpu] = _cap_max(value, cpu_table)
        elif param_name == "GPU":
            if arg == "MIN_FREQ":
                gpu["min_hz"] = _cap_min(value, gpu_table)
            elif arg == "MAX_FREQ":
                gpu["max_hz"] = _cap_max(value, gpu_table)
        elif param_name == "EMC" and arg == "MAX_FREQ":
            emc_max = _cap_max(value, emc_table)
    masks = {"tpc_pg_mask": None, "fbp_pg_mask": None}
    for _param, arg, raw in mode.settings:
        if arg in ("TPC_PG_MASK", "FBP_PG_MASK") and raw.strip().isdigit():
            masks[arg.lower()] = int(raw)
    cpus = []
    for n in range(cores):
        low, high = min(cpu_min[n], cpu_max[n]), cpu_max[n]
        cpus.append(
            {
                "cpu": n,
                "online": n in online,
                "governor": "schedutil",
                "min_khz": low,
                "max_khz": high,
                "cur_khz": low,
                "idle_disabled": False,
            }
        )
    gpu["min_hz"] = min(gpu["min_hz"], gpu["max_hz"])
    return {
        "version": 1,
        "mode_id": mode.id,
        "mode_name": mode.name,
        "conf": conf.path,
        "online_cpus": online,
        "cpus": cpus,
        "gpu": {**gpu, "cur_hz": gpu["min_hz"]},
        "emc": {"min_hz": emc_table[0], "max_hz": emc_max, "cur_hz": emc_max, "override": False},
        **masks,
        "pinned": False,
        "fan_max": False,
        "fan_pwm": int(hw["fan_pwm_idle"]),
        "updated_by": updated_by,
    }


def kernel_state(hw: dict[str, Any], persisted: Mode, updated_by: str) -> dict[str, Any]:
    """What the hardware runs when nvpmodel applied nothing this boot: every core online at the kernel's full
    cpufreq range, the GPU and EMC unrestricted; the GPU power-gating masks are the persisted mode's (the boot
    firmware applies them)."""
    masks = {"tpc_pg_mask": None, "fbp_pg_mask": None}
    for _param, arg, raw in persisted.settings:
        if arg in ("TPC_PG_MASK", "FBP_PG_MASK") and raw.strip().isdigit():
            masks[arg.lower()] = int(raw)
    cores = int(hw["cpu_cores"])
    cpu_table, gpu_table, emc_table = hw["cpu_freqs_khz"], hw["gpu_freqs_hz"], hw["emc_freqs_hz"]
    cpus = [
        {"cpu": n, "online": True, "governor": "schedutil", "min_khz": cpu_table[0], "max_khz": cpu_table[-1],
         "cur_khz": cpu_table[0], "idle_disabled": False}
        for n in range(cores)
    ]  # fmt: skip
    return {
        "version": 1,
        "mode_id": None,
        "mode_name": None,
        "conf": None,
        "online_cpus": list(range(cores)),
        "cpus": cpus,
        "gpu": {"min_hz": gpu_table[0], "max_hz": gpu_table[-1], "cur_hz": gpu_table[0]},
        "emc": {"min_hz": emc_table[0], "max_hz": emc_table[-1], "cur_hz": emc_table[-1], "override": False},
        **masks,
        "pinned": False,
        "fan_max": False,
        "fan_pwm": int(hw["fan_pwm_idle"]),
        "updated_by": updated_by,
    }


# ---------------------------------------------------------------------------------------------- state


def read_status() -> tuple[int | None, str | None]:
    """(pmode, fmode) from the persisted nvpmodel status; None where absent."""
    path = at(NVPMODEL_STATUS)
    try:
        text = path.read_text()
    except OSError:
        return None, None
    pmode = re.search(r"pmode:(\d+)", text)
    fmode = re.search(r"fmode:(\S+)", text)
    return (int(pmode.group(1)) if pmode else None, fmode.group(1) if fmode else None)


def write_status(pmode: int, fmode: str | None) -> None:
    text = f"pmode:{pmode:04d}" + (f" fmode:{fmode}" if fmode else "") + "\n"
    atomic_write(at(NVPMODEL_STATUS), text)


def read_state() -> dict[str, Any] | None:
    try:
        data = json.loads(at(CLOCKS_JSON).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(state: dict[str, Any]) -> None:
    atomic_write(at(CLOCKS_JSON), json.dumps(state, indent=2) + "\n")


def persisted_mode(conf: Conf) -> Mode:
    """The mode nvpmodel -q reports: the persisted one if the table has it, else the table default."""
    pmode, _ = read_status()
    mode = conf.mode(pmode) if pmode is not None else None
    return mode or conf.mode(conf.default)  # type: ignore[return-value]


def current_state(conf: Conf, hw: dict[str, Any]) -> dict[str, Any]:
    """The applied runtime state, or what nvpmodel would apply at boot if nothing was applied yet."""
    return read_state() or mode_state(conf, persisted_mode(conf), hw, "not applied yet")


def nvfancontrol_pid() -> int | None:
    """pid of the running nvfancontrol emulator, None when it is not running."""
    try:
        pid = int(at(NVFANCONTROL_PID).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def l4t_release(host: dict[str, Any] | None) -> tuple[int, ...]:
    """The emulated L4T release as a tuple ((36, 4, 3) without host.json)."""
    text = str(((host or {}).get("l4t") or {}).get("release") or "36.4.3")
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return (36, 4, 3)


def cpu_ranges(cpus: list[int]) -> str:
    """[0, 1, 2, 3, 6] -> '0-3,6' (the /sys/devices/system/cpu/online format)."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
