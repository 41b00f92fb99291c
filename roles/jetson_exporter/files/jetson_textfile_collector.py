#!/usr/bin/python3
"""Jetson metrics for node exporter's textfile collector (installed by the jetson_exporter role).

Runs `tegrastats --interval MS` and, after every sample line, rewrites one .prom file (atomically: a temporary
file in the same directory, then rename) with the sample and the fleet's facts: the power mode (nvpmodel -q)
and whether the clocks are pinned (jetson_clocks --show) against what the inventory expects, the running release
and its backend (the llama_server role's release record) and llama-server's /health. Python 3 standard library
only: nothing is installed on the device but this file. Exits when tegrastats exits (systemd restarts it).

  jetson_textfile_collector.py --config /etc/jetson-exporter/config.json
  jetson_textfile_collector.py --parse LINE     print the metrics of one tegrastats line (tests, debugging)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
Metric = tuple[str, dict[str, str], float]

HELP = {
    "jetson_ram_used_bytes": ("gauge", "RAM in use (tegrastats RAM used), CPU and GPU share it"),
    "jetson_ram_total_bytes": ("gauge", "RAM size (tegrastats RAM total)"),
    "jetson_ram_largest_free_block_bytes": ("gauge", "Size of the largest free RAM blocks (tegrastats lfb NxS)"),
    "jetson_ram_largest_free_blocks": ("gauge", "Number of free RAM blocks of the largest size (tegrastats lfb N)"),
    "jetson_swap_used_bytes": ("gauge", "Swap in use"),
    "jetson_swap_total_bytes": ("gauge", "Swap size"),
    "jetson_cpu_load_ratio": ("gauge", "CPU core load, 0-1"),
    "jetson_cpu_freq_hz": ("gauge", "CPU core frequency"),
    "jetson_cpus_online": ("gauge", "CPU cores online (the power mode decides)"),
    "jetson_emc_load_ratio": ("gauge", "Memory controller (EMC) load, 0-1: memory bandwidth in use"),
    "jetson_emc_freq_hz": ("gauge", "Memory controller (EMC) frequency"),
    "jetson_gpu_load_ratio": ("gauge", "GPU (GR3D) load, 0-1"),
    "jetson_gpu_freq_hz": ("gauge", "GPU (GR3D) frequency"),
    "jetson_gpu_freq_max_hz": ("gauge", "GPU maximum frequency of the power mode (jetson_clocks --show MaxFreq)"),
    "jetson_temperature_celsius": ("gauge", "Thermal zone temperature (tegrastats name@TC)"),
    "jetson_power_watts": ("gauge", "Power rail draw now (tegrastats RAIL now/avg mW)"),
    "jetson_power_average_watts": ("gauge", "Power rail draw averaged since tegrastats started"),
    "jetson_power_mode_info": ("gauge", "Power mode in use (mode) and the one the inventory asks for (expected)"),
    "jetson_clocks_pinned": ("gauge", "1 when jetson_clocks pinned the clocks to the mode's maxima"),
    "jetson_clocks_pinned_expected": ("gauge", "1 when the inventory asks for pinned clocks"),
    "jetson_release_info": ("gauge", "Running llama-server release (the release record)"),
    "jetson_backend_info": ("gauge", "Backend llama-server reported at load (requested, name, device)"),
    "jetson_backend_gpu_layers": ("gauge", "Model layers llama-server offloaded to the GPU"),
    "jetson_backend_layers": ("gauge", "Model layers"),
    "jetson_llama_server_slots": ("gauge", "Parallel slots of the running release (--parallel)"),
    "jetson_llama_server_healthy": ("gauge", "1 when llama-server's /health answers 200"),
    "jetson_exporter_fact_ok": ("gauge", "1 when the collector could read the fact"),
    "jetson_exporter_last_sample_timestamp_seconds": ("gauge", "When the collector wrote the last sample"),
}

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB(?: \(lfb (\d+)x(\d+)MB\))?")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_GPU = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+)[^\s]*)?")
_TEMP = re.compile(r"\b([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)mW/(\d+)mW")
_SHOW_FREQ = re.compile(r"MinFreq=(\d+) MaxFreq=(\d+)")


def parse_tegrastats(line: str) -> list[Metric]:
    """One tegrastats line (L4T R35/R36 format) -> metrics. Fields the line lacks are left out."""
    out: list[Metric] = []
    if ram := _RAM.search(line):
        out += [("jetson_ram_used_bytes", {}, int(ram[1]) * MIB), ("jetson_ram_total_bytes", {}, int(ram[2]) * MIB)]
        if ram[3]:
            out += [
                ("jetson_ram_largest_free_blocks", {}, int(ram[3])),
                ("jetson_ram_largest_free_block_bytes", {}, int(ram[4]) * MIB),
            ]
    if swap := _SWAP.search(line):
        out += [("jetson_swap_used_bytes", {}, int(swap[1]) * MIB), ("jetson_swap_total_bytes", {}, int(swap[2]) * MIB)]
    if cpus := _CPU.search(line):
        online = 0
        for index, entry in enumerate(cpus[1].split(",")):
            load, _, mhz = entry.partition("%@")
            if not mhz:
                continue
            online += 1
            out += [
                ("jetson_cpu_load_ratio", {"cpu": str(index)}, int(load) / 100),
                ("jetson_cpu_freq_hz", {"cpu": str(index)}, int(mhz) * 1_000_000),
            ]
        out.append(("jetson_cpus_online", {}, online))
    for pattern, name in ((_EMC, "emc"), (_GPU, "gpu")):
        if found := pattern.search(line):
            out.append((f"jetson_{name}_load_ratio", {}, int(found[1]) / 100))
            if found[2]:
                out.append((f"jetson_{name}_freq_hz", {}, int(found[2]) * 1_000_000))
    for sensor, celsius in _TEMP.findall(line):
        if float(celsius) > -200:  # an absent sensor reads -256C
            out.append(("jetson_temperature_celsius", {"sensor": sensor}, float(celsius)))
    for rail, now, avg in _RAIL.findall(line):
        out += [
            ("jetson_power_watts", {"rail": rail}, int(now) / 1000),
            ("jetson_power_average_watts", {"rail": rail}, int(avg) / 1000),
        ]
    return out


def parse_clocks_show(show: str) -> tuple[bool | None, int | None]:
    """jetson_clocks --show -> (pinned: every online CPU and the GPU at MinFreq == MaxFreq and the EMC locked,
    None when no CPU is listed; the GPU's MaxFreq in Hz or None)."""
    cpus, gpu_max, pinned = 0, None, True
    for raw in show.splitlines():
        line = raw.strip()
        freq = _SHOW_FREQ.search(line)
        if line.startswith("cpu") and "Online=1" in line and freq:
            cpus += 1
            pinned = pinned and freq[1] == freq[2]
        elif line.startswith("GPU ") and freq:
            gpu_max = int(freq[2])
            pinned = pinned and freq[1] == freq[2]
        elif line.startswith("EMC ") and freq:
            pinned = pinned and ("FreqOverride=1" in line or freq[1] == freq[2])
    return (pinned if cpus else None), gpu_max


def parse_power_mode(query: str) -> str | None:
    for line in query.splitlines():
        if line.startswith("NV Power Mode:"):
            return line.split(":", 1)[1].strip() or None
    return None


def release_metrics(record: dict[str, Any]) -> list[Metric]:
    """The release record (/etc/llama-server/release.json) -> metrics; an older record without `backend` gives
    no backend metrics (unknown, not CPU)."""
    out: list[Metric] = []
    model = record.get("model") or {}
    info = {"release_id": str(record.get("id") or ""), "image": str(record.get("image") or "")}
    info["model"] = str(model.get("filename") or Path(str(model.get("path") or "")).name)
    out.append(("jetson_release_info", info, 1))
    backend = record.get("backend") or {}
    if backend.get("name"):
        labels = {
            "requested": str(backend.get("requested") or ""),
            "name": str(backend["name"]),
            "device": str(backend.get("device") or ""),
        }
        out.append(("jetson_backend_info", labels, 1))
        for key in ("gpu_layers", "layers"):
            if isinstance(backend.get(key), int):
                out.append((f"jetson_backend_{key}", {}, backend[key]))
    parallel = (record.get("settings") or {}).get("parallel")
    if parallel is not None and str(parallel).isdigit():
        out.append(("jetson_llama_server_slots", {}, int(parallel)))
    return out


def _run(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def fact_metrics(config: dict[str, Any]) -> list[Metric]:
    """Power mode, clocks, release record and health, each with jetson_exporter_fact_ok."""
    out: list[Metric] = []
    ok: dict[str, bool] = {}
    mode = parse_power_mode(_run([config.get("nvpmodel", "nvpmodel"), "-q"]) or "")
    ok["power_mode"] = mode is not None
    if mode is not None:
        expected = str(config.get("expected_power_mode") or "")
        out.append(("jetson_power_mode_info", {"mode": mode, "expected": expected or mode}, 1))
    pinned, gpu_max = parse_clocks_show(_run([config.get("jetson_clocks", "jetson_clocks"), "--show"]) or "")
    ok["clocks"] = pinned is not None
    if pinned is not None:
        out.append(("jetson_clocks_pinned", {}, int(pinned)))
    if gpu_max:
        out.append(("jetson_gpu_freq_max_hz", {}, gpu_max))
    if config.get("expected_clocks_pinned") is not None:
        out.append(("jetson_clocks_pinned_expected", {}, int(bool(config["expected_clocks_pinned"]))))
    record: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(Path(config.get("release_file", "/etc/llama-server/release.json")).read_text())
    ok["release"] = isinstance(record, dict) and bool(record.get("id"))
    if ok["release"]:
        out += release_metrics(record)
        url = str(config.get("health_url") or "") or str(record.get("url") or "").rstrip("/") + "/health"
        if url.startswith("http"):
            out.append(("jetson_llama_server_healthy", {}, int(_healthy(url))))
    out += [("jetson_exporter_fact_ok", {"fact": name}, int(value)) for name, value in ok.items()]
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(metrics: list[Metric]) -> str:
    """Prometheus text format, one HELP/TYPE block per metric name in first-seen order."""
    names: dict[str, list[Metric]] = {}
    for metric in metrics:
        names.setdefault(metric[0], []).append(metric)
    lines: list[str] = []
    for name, series in names.items():
        kind, text = HELP.get(name, ("gauge", name))
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for _, labels, value in series:
            label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
            lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".jetson-", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def serve(config: dict[str, Any]) -> int:
    output = Path(config.get("output", "/var/lib/prometheus/node-exporter/jetson.prom"))
    interval_ms = int(float(config.get("interval_seconds", 5)) * 1000)
    argv = [config.get("tegrastats", "tegrastats"), "--interval", str(interval_ms)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            metrics = parse_tegrastats(line) + fact_metrics(config)
            metrics.append(("jetson_exporter_last_sample_timestamp_seconds", {}, time.time()))
            write_atomic(output, render(metrics))
    print(f"tegrastats exited with {proc.returncode}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jetson_textfile_collector")
    parser.add_argument("--config", default="/etc/jetson-exporter/config.json")
    parser.add_argument("--parse", metavar="LINE", help="print the metrics of one tegrastats line and exit")
    args = parser.parse_args(argv)
    if args.parse is not None:
        sys.stdout.write(render(parse_tegrastats(args.parse)))
        return 0
    return serve(json.loads(Path(args.config).read_text()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
