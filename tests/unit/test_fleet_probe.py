"""jetson_fleet/probe.py, the on-device benchmark probe: run as the playbook runs it (a python3 script, JSON on
stdout) against a fake llama-server on 127.0.0.1, with jetsim's tegrastats emulator as the sampler."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_llama_server import TIMINGS, FakeLlamaServer

from jetson_fleet import probe

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "jetson_fleet" / "probe.py"
TEGRASTATS_EMULATOR = REPO / "tests/jetsim/rootfs/usr/bin/tegrastats"
MEMINFO = "MemTotal:       16031744 kB\nMemFree:         9000000 kB\nMemAvailable:   12000000 kB\n"
ORIN_LINE = (
    "10-02-2026 08:14:03 RAM 3712/15656MB (lfb 12x4MB) SWAP 0/7828MB (cached 0MB) "
    "CPU [12%@1984,9%@1984,3%@1984,0%@1984,5%@1984,1%@1984,0%@1984,2%@1984] EMC_FREQ 21%@3199 "
    "GR3D_FREQ 99%@[1173] NVENC off NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@52.1C "
    "soc2@49.8C soc0@50.9C gpu@51.3C tj@52.1C soc1@49.6C VDD_IN 14521mW/9803mW VDD_CPU_GPU_CV 6120mW/3344mW "
    "VDD_SOC 3310mW/2790mW"
)


@pytest.fixture
def tegrastats(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """jetsim's tegrastats emulator behind an executable wrapper, reading a fake /proc/meminfo (3937 MB used)."""
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/meminfo").write_text(MEMINFO)
    wrapper = tmp_path / "tegrastats"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TEGRASTATS_EMULATOR}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper), {"JETSIM_ROOT": str(root)}


def run_probe(port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROBE), "--port", str(port), "--interval-ms", "50", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_orin_tegrastats_line() -> None:
    sample = probe.parse_tegrastats_line(ORIN_LINE)
    assert sample == {"ram_used_mb": 3712, "ram_total_mb": 15656, "gpu_util_pct": 99, "gpu_freq_mhz": 1173}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("RAM 2011/7620MB (lfb 2x2MB) SWAP 0/3810MB CPU [1%@1420] GR3D_FREQ 0%@306 VDD_IN 4000/4000", 306),  # R35
        ("RAM 2011/7620MB SWAP 0/3810MB GR3D_FREQ 12%", None),  # no frequency
    ],
)
def test_older_gr3d_formats(line: str, expected: int | None) -> None:
    sample = probe.parse_tegrastats_line(line)
    assert sample["ram_used_mb"] == 2011
    assert sample.get("gpu_freq_mhz") == expected


def test_gpu_memory_only_where_reported_and_unknown_fields_ignored() -> None:
    assert "gpu_mem_used_mb" not in probe.parse_tegrastats_line(ORIN_LINE)
    sample = probe.parse_tegrastats_line("RAM 4000/15656MB NEWFIELD 7/9MB GPU_MEM 1200/15656MB GR3D_FREQ 5%@[918,918]")
    assert sample["gpu_mem_used_mb"] == 1200
    assert sample["gpu_freq_mhz"] == 918
    assert probe.parse_tegrastats_line("tegrastats: some warning") == {}


def test_prometheus_metrics_are_parsed_by_name() -> None:
    from fake_llama_server import METRICS

    metrics = probe.parse_metrics(METRICS + "garbage line\nllamacpp:bad value\n")
    assert metrics["llamacpp:predicted_tokens_seconds"] == 27.125
    assert metrics["llamacpp:prompt_tokens_seconds"] == 612.5
    assert metrics["llamacpp:tokens_predicted_total"] == 567
    assert metrics["llamacpp:requests_processing"] == 0
    assert metrics['llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"}'] == 5
    assert "llamacpp:bad" not in metrics


def test_probe_measures_every_query_type_and_memory(tmp_path: Path, tegrastats: tuple[str, dict[str, str]]) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("s3cret-key-value\n")
    path, env = tegrastats
    with FakeLlamaServer(api_key="s3cret-key-value", burst_prompts=probe.BURST_PROMPTS) as server:
        proc = run_probe(
            server.port, "--api-key-file", str(key_file), "--model", "tiny.gguf", "--tegrastats", path, env=env
        )

    assert proc.returncode == 0, proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["errors"] == []
    probes = result["probes"]
    assert set(probes) == {"greeting", "coding", "tool_call", "burst"}
    for name in ("greeting", "coding", "tool_call"):
        assert probes[name]["predicted_per_second"] == TIMINGS["predicted_per_second"]
        assert probes[name]["prompt_n"] == TIMINGS["prompt_n"]
        assert 0 < probes[name]["ttft_s"] <= probes[name]["latency_s"]
    assert probes["tool_call"]["tool_calls"] == 1
    assert probes["tool_call"]["finish_reason"] == "tool_calls"
    assert probes["greeting"]["tool_calls"] == 0
    burst = probes["burst"]
    assert burst["requests"] == len(burst["per_request"]) == 5
    # aggregate = the tokens of all 5 requests / the burst's wall time, as reported (the two numbers agree); the
    # burst lasts at least as long as its slowest request
    assert burst["aggregate_tps"] == pytest.approx(5 * TIMINGS["predicted_n"] / burst["wall_s"], rel=1e-6)
    assert burst["wall_s"] >= burst["latency_s_max"] == max(r["latency_s"] for r in burst["per_request"])
    assert result["memory"]["ram_used_mb_max"] == 3937
    assert result["memory"]["ram_total_mb"] == 15656
    assert result["memory"]["samples"] >= 1
    assert result["metrics"]["llamacpp:predicted_tokens_seconds"] == 27.125
    # What was sent: streamed, usage requested, the model name, small max_tokens, a tools array for tool_call.
    chats = [r for r in server.requests if "messages" in r]
    assert all(r["stream"] is True and r["stream_options"] == {"include_usage": True} for r in chats)
    assert all(r["model"] == "tiny.gguf" and r["max_tokens"] <= 64 for r in chats)
    assert sum(1 for r in chats if r.get("tools")) == 1
    assert set(server.auth_headers) == {"Bearer s3cret-key-value"}


def test_burst_aggregate_is_all_generated_tokens_over_the_wall_time() -> None:
    """The burst's own clock injected: 2.5 s from the first request sent to the last answer."""
    ticks = iter([100.0, 102.5])
    with FakeLlamaServer(burst_prompts=probe.BURST_PROMPTS) as server:
        client = probe.Client(server.port, None, "tiny.gguf", max_tokens=16, timeout=30)
        burst = probe.burst(client, clock=lambda: next(ticks))

    assert burst["wall_s"] == 2.5
    assert burst["aggregate_tps"] == 5 * TIMINGS["predicted_n"] / 2.5  # 20.0: 50 tokens in 2.5 s
    assert burst["predicted_per_second_mean"] == TIMINGS["predicted_per_second"]
    assert len(server.requests) == 5


def test_without_tegrastats_the_probes_still_run_and_memory_says_why() -> None:
    with FakeLlamaServer(mode="no_metrics", burst_prompts=probe.BURST_PROMPTS) as server:
        proc = run_probe(server.port, "--tegrastats", "/nonexistent/tegrastats")

    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["memory"]["samples"] == 0
    assert result["memory"]["ram_used_mb_max"] is None
    assert "tegrastats not found at /nonexistent/tegrastats" in result["memory"]["error"]
    assert result["metrics"] is None
    assert any("HTTP 501" in note for note in result["notes"])


@pytest.mark.parametrize(
    ("mode", "api_key", "message"),
    [
        ("loading", None, "HTTP 503 from /v1/chat/completions: Loading model"),
        ("ok", "other-key", "HTTP 401 from /v1/chat/completions: Invalid API Key"),
        ("stream_error", None, "error in the stream: context shift is disabled"),
    ],
)
def test_server_errors_fail_with_a_clear_message(tmp_path: Path, mode: str, api_key: str | None, message: str) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("wrong-key")
    with FakeLlamaServer(api_key=api_key, mode=mode) as server:
        args = ["--tegrastats", "/nonexistent", *(["--api-key-file", str(key_file)] if api_key else [])]
        proc = run_probe(server.port, *args)

    assert proc.returncode == 1
    assert message in proc.stderr
    assert message in json.loads(proc.stdout)["errors"][0]
    assert "wrong-key" not in proc.stdout + proc.stderr


def test_no_server_listening() -> None:
    with socket.socket() as sock:  # bound, not listening: connections to it are refused
        sock.bind(("127.0.0.1", 0))
        proc = run_probe(sock.getsockname()[1], "--tegrastats", "/nonexistent")

    assert proc.returncode == 1
    assert "cannot reach llama-server at http://127.0.0.1:" in proc.stderr


def test_unreadable_key_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_probe(1, "--api-key-file", str(tmp_path / "missing"))

    assert proc.returncode == 2
    assert f"cannot read the API key file {tmp_path / 'missing'}" in proc.stderr
