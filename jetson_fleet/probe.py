#!/usr/bin/env python3
"""Benchmark probe that runs ON a Jetson against its llama-server (stdlib only, Python >= 3.10).

playbooks/benchmark.yml ships this file with ansible.builtin.script (executable python3, as root so that it
can read the API key file and tegrastats sees every field). The same module is imported on the controller
for `parse_metrics()` and `parse_tegrastats_line()`.

    probe.py --port 8080 [--api-key-file /etc/llama-server/api-key] [--model NAME]
             [--tegrastats /usr/bin/tegrastats] [--interval-ms 500] [--max-tokens 64] [--timeout 120]

While the probes run, `tegrastats --interval N` samples memory and the GPU (missing tegrastats: no samples,
the report says why). Requests go to http://127.0.0.1:PORT/v1/chat/completions with "stream": true and
stream_options.include_usage; time to first token (ttft_s: first chunk carrying content, reasoning or a tool
call) and total latency (latency_s: until the stream ends) are measured here, the rest comes from the
`timings` object llama-server puts in the last chunk. Query types:

    greeting   a one-line greeting
    coding     a short coding question (usually runs to max_tokens)
    tool_call  a request with a `tools` array (one function schema)
    burst      5 parallel requests (threads): per-request results, wall time, aggregate tokens/s

One untimed warm-up request comes first. stdout gets one JSON object:

    {"probe_version": 1, "port": 8080, "model": "...", "max_tokens": 64,
     "probes": {"greeting": {"ttft_s", "latency_s", "prompt_n", "prompt_ms", "prompt_per_second",
                             "predicted_n", "predicted_ms", "predicted_per_second", "finish_reason",
                             "tool_calls"}, "coding": {...}, "tool_call": {...},
                "burst": {"requests", "wall_s", "aggregate_tps", "latency_s_max", "ttft_s_max",
                          "predicted_per_second_mean", "per_request": [{...}, ...]}},
     "memory": {"ram_used_mb_max", "ram_total_mb", "gpu_util_pct_max", "gpu_freq_mhz_max",
                "gpu_mem_used_mb_max" (only where tegrastats reports GPU memory), "samples", "error"},
     "metrics": {"llamacpp:predicted_tokens_seconds": 27.1, ...} or null,
     "errors": ["tool_call: HTTP 400 from /v1/chat/completions: ..."], "notes": ["metrics: HTTP 501 ..."]}

Exit status 0 when every probe succeeded; 1 (errors on stderr too) when the server failed a request; 2 for
bad arguments (unreadable key file). The API key is read from --api-key-file and only ever sent as an
`Authorization: Bearer` header; it is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PROBE_VERSION = 1
BURST_SIZE = 5
TIMINGS = ("prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms", "predicted_per_second")

GREETING = {"messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
CODING = {
    "messages": [
        {"role": "system", "content": "You are a concise programming assistant."},
        {"role": "user", "content": "Write a Python function that checks whether a string is a palindrome."},
    ]
}
TOOL_CALL = {
    "messages": [{"role": "user", "content": "What is the weather in Berlin right now? Use the tool."}],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "description": "City name"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    },
                    "required": ["city"],
                },
            },
        }
    ],
    "tool_choice": "auto",
}
BURST_PROMPTS = (
    "Name three colours.",
    "What is 12 times 12?",
    "Give one tip for writing readable code.",
    "Translate 'good morning' into French.",
    "What is the capital of Japan?",
)

# tegrastats fields (Orin on L4T R36: `RAM 3538/15656MB (lfb ...) ... GR3D_FREQ 0%@[305]`, older L4T:
# `GR3D_FREQ 0%@305` or `GR3D_FREQ 0%`). Unknown fields are ignored. Orin's iGPU shares RAM with the CPU, so
# RAM includes GPU allocations; a `<label with GPU or VRAM> used/totalMB` field, where a tegrastats version
# prints one, is reported as GPU memory.
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+)[^\s]*)?")
_MEM_FIELD = re.compile(r"\b([A-Za-z0-9_]+) (\d+)/(\d+)MB")


class ProbeError(Exception):
    """A failed request, reported as one line."""


def parse_tegrastats_line(line: str) -> dict[str, float]:
    """The fields of one tegrastats line this probe uses; {} when the line has none of them."""
    sample: dict[str, float] = {}
    ram = _RAM.search(line)
    if ram:
        sample["ram_used_mb"], sample["ram_total_mb"] = float(ram[1]), float(ram[2])
    gr3d = _GR3D.search(line)
    if gr3d:
        sample["gpu_util_pct"] = float(gr3d[1])
        if gr3d[2]:
            sample["gpu_freq_mhz"] = float(gr3d[2])
    for label, used, total in _MEM_FIELD.findall(line):
        if label.upper() not in ("RAM", "SWAP") and ("GPU" in label.upper() or "VRAM" in label.upper()):
            sample["gpu_mem_used_mb"], sample["gpu_mem_total_mb"] = float(used), float(total)
    return sample


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {"name" or "name{labels}": value}; comments and bad lines are skipped."""
    values: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "}" in line:
            name, _, rest = line.partition("}")
            name += "}"
        else:
            name, _, rest = line.partition(" ")
        fields = rest.split()
        if not fields:
            continue
        try:
            values[name.strip()] = float(fields[0])
        except ValueError:
            continue
    return values


class Tegrastats:
    """`tegrastats --interval MS` as a child process whose lines are parsed as they arrive."""

    def __init__(self, path: str, interval_ms: int) -> None:
        self.path = path
        self.interval_ms = interval_ms
        self.samples: list[dict[str, float]] = []
        self.error: str | None = None
        self.first = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        if not (os.path.isfile(self.path) and os.access(self.path, os.X_OK)):
            self.error = f"tegrastats not found at {self.path}: no memory samples"
            return
        # stdbuf: a C program writing to a pipe would otherwise buffer its lines until it exits.
        prefix = [stdbuf, "-oL"] if (stdbuf := shutil.which("stdbuf")) else []
        try:
            self._proc = subprocess.Popen(
                [*prefix, self.path, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
        except OSError as exc:
            self.error = f"cannot start {self.path}: {exc}"
            return
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_tegrastats_line(line)
            if sample:
                self.samples.append(sample)
                self.first.set()

    def wait_for_sample(self) -> None:
        """Wait (bounded) until one sample arrived, so that even a very short run has one."""
        if self._proc is not None:
            self.first.wait(timeout=3 * self.interval_ms / 1000 + 5)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if not self.samples and self.error is None:
            self.error = f"{self.path} printed no line with RAM/GR3D_FREQ fields"

    def summary(self) -> dict[str, Any]:
        samples = list(self.samples)
        summary: dict[str, Any] = {"samples": len(samples), "source": self.path}
        for key, field, pick in (
            ("ram_used_mb_max", "ram_used_mb", max),
            ("ram_total_mb", "ram_total_mb", max),
            ("gpu_util_pct_max", "gpu_util_pct", max),
            ("gpu_freq_mhz_max", "gpu_freq_mhz", max),
            ("gpu_mem_used_mb_max", "gpu_mem_used_mb", max),
            ("gpu_mem_total_mb", "gpu_mem_total_mb", max),
        ):
            found = [s[field] for s in samples if field in s]
            if found:
                summary[key] = pick(found)
        if "ram_used_mb_max" not in summary:
            summary["ram_used_mb_max"] = None
            summary["ram_total_mb"] = None
        if self.error:
            summary["error"] = self.error
        return summary


class Client:
    """Streaming chat completions and /metrics on one llama-server."""

    def __init__(self, port: int, api_key: str | None, model: str | None, max_tokens: int, timeout: float) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.max_tokens = max_tokens
        self.timeout = timeout

    def _open(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise ProbeError(f"HTTP {exc.code} from {path}: {_error_message(exc.read())}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProbeError(f"cannot reach llama-server at {self.base}{path}: {reason}") from None

    def chat(self, request: dict[str, Any], max_tokens: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            **request,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": 0,
        }
        if self.model:
            body["model"] = self.model
        started = time.perf_counter()
        ttft: float | None = None
        timings: dict[str, Any] | None = None
        usage: dict[str, Any] | None = None
        finish: str | None = None
        tool_calls: set[int] = set()
        with self._open("/v1/chat/completions", body) as response:
            try:
                for raw in response:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        raise ProbeError(f"error in the stream: {_error_message(json.dumps(chunk).encode())}")
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if ttft is None and any(delta.get(k) for k in ("content", "reasoning_content", "tool_calls")):
                            ttft = time.perf_counter() - started
                        for call in delta.get("tool_calls") or []:
                            tool_calls.add(int(call.get("index", 0)))
                        finish = choice.get("finish_reason") or finish
                    timings = chunk.get("timings") or timings
                    usage = chunk.get("usage") or usage
            except (OSError, ValueError) as exc:  # timeouts, resets, bad JSON
                raise ProbeError(f"broken stream from /v1/chat/completions: {exc}") from None
        latency = time.perf_counter() - started
        if timings is None:
            raise ProbeError("the stream ended without a `timings` object (not llama-server, or it was cut short)")
        result: dict[str, Any] = {
            "ttft_s": round(ttft if ttft is not None else latency, 4),
            "latency_s": round(latency, 4),
            "finish_reason": finish,
            "tool_calls": len(tool_calls),
        }
        for key in TIMINGS:
            value = timings.get(key)
            result[key] = round(float(value), 3) if isinstance(value, (int, float)) else None
        if usage:
            result["completion_tokens"] = usage.get("completion_tokens")
        return result

    def metrics(self) -> dict[str, float]:
        with self._open("/metrics") as response:
            return parse_metrics(response.read().decode("utf-8", "replace"))


def _error_message(body: bytes) -> str:
    """llama-server's {"error": {"message": ...}} or the body's first 200 characters."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200] or "(empty body)"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return text[:200]


def burst(client: Client, size: int = BURST_SIZE, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """`size` requests started together from threads; aggregate tokens/s = generated tokens / wall time (the
    wall_s reported, so that the two numbers agree)."""
    barrier = threading.Barrier(size)

    def one(index: int) -> dict[str, Any]:
        barrier.wait()
        prompt = BURST_PROMPTS[index % len(BURST_PROMPTS)]
        return client.chat({"messages": [{"role": "user", "content": prompt}]})

    started = clock()
    with ThreadPoolExecutor(max_workers=size) as pool:
        results = list(pool.map(one, range(size)))
    wall = round(clock() - started, 4)
    generated = sum(r["predicted_n"] or 0 for r in results)
    rates = [r["predicted_per_second"] for r in results if r["predicted_per_second"] is not None]
    return {
        "requests": size,
        "wall_s": wall,
        "aggregate_tps": round(generated / wall, 3) if wall > 0 else None,
        "latency_s_max": max(r["latency_s"] for r in results),
        "ttft_s_max": max(r["ttft_s"] for r in results),
        "predicted_per_second_mean": round(sum(rates) / len(rates), 3) if rates else None,
        "per_request": results,
    }


def run(args: argparse.Namespace, api_key: str | None) -> dict[str, Any]:
    client = Client(args.port, api_key, args.model, args.max_tokens, args.timeout)
    stats = Tegrastats(args.tegrastats, args.interval_ms)
    probes: dict[str, Any] = {}
    errors: list[str] = []
    notes: list[str] = []
    metrics: dict[str, float] | None = None
    stats.start()
    try:
        stats.wait_for_sample()
        try:
            client.chat(GREETING, max_tokens=4)  # warm-up, not recorded
        except ProbeError as exc:
            errors.append(f"warm-up: {exc}")
        if not errors:
            for name, request in (("greeting", GREETING), ("coding", CODING), ("tool_call", TOOL_CALL)):
                try:
                    probes[name] = client.chat(request)
                except ProbeError as exc:
                    errors.append(f"{name}: {exc}")
            try:
                probes["burst"] = burst(client)
            except ProbeError as exc:
                errors.append(f"burst: {exc}")
            try:
                metrics = client.metrics()
            except ProbeError as exc:  # --metrics off (HTTP 501) is not a probe failure
                notes.append(f"metrics: {exc}")
    finally:
        stats.stop()
    result: dict[str, Any] = {
        "probe_version": PROBE_VERSION,
        "port": args.port,
        "model": args.model,
        "max_tokens": args.max_tokens,
        "probes": probes,
        "memory": stats.summary(),
        "metrics": metrics,
        "errors": errors,
        "notes": notes,
    }
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="probe.py", description="Probe the local llama-server (see the docstring).")
    parser.add_argument("--port", type=int, default=8080, help="llama-server port on 127.0.0.1 (default 8080)")
    parser.add_argument("--api-key-file", help="file holding the API key (sent as Authorization: Bearer)")
    parser.add_argument("--model", default="", help="model name sent in requests (default: none)")
    parser.add_argument("--tegrastats", default="/usr/bin/tegrastats", help="tegrastats binary (optional)")
    parser.add_argument("--interval-ms", type=int, default=500, help="tegrastats sample interval (default 500)")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens per request (default 64)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per request (default 120)")
    args = parser.parse_args(argv)
    if args.interval_ms <= 0 or args.max_tokens <= 0:
        parser.error("--interval-ms and --max-tokens must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    api_key: str | None = None
    if args.api_key_file:
        try:
            with open(args.api_key_file, encoding="utf-8") as handle:
                api_key = handle.read().strip() or None
        except OSError as exc:
            print(f"probe: cannot read the API key file {args.api_key_file}: {exc.strerror}", file=sys.stderr)
            return 2
    result = run(args, api_key)
    print(json.dumps(result, indent=2, sort_keys=True))
    for error in result["errors"]:
        print(f"probe: {error}", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
