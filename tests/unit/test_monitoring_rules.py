"""Monitoring files (files/prometheus, files/grafana) and the Jetson textfile collector.

`promtool check rules` and `promtool test rules` (the Debian package prometheus, `make system-deps`); the
dashboard's queries name only metrics that the rules, llama-server, node exporter or the collector produce;
the collector turns the jetsim tegrastats lines (throttle knob included) into the metrics the alerts read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = sorted((REPO / "files/prometheus/rules").glob("*.yml"))
RULE_TESTS = sorted((REPO / "files/prometheus/tests").glob("*.test.yml"))
DASHBOARD = REPO / "files/grafana/jetson-llm-fleet.json"
COLLECTOR = REPO / "roles/jetson_exporter/files/jetson_textfile_collector.py"
TEGRASTATS = REPO / "tests/jetsim/rootfs/usr/bin/tegrastats"
LLSRC = Path("/tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp/tools/server/server-task.cpp")
# The llama-server metrics the rules read (b11312, tools/server/server-task.cpp to_metrics()).
LLAMACPP = {"tokens_predicted_total", "tokens_predicted_seconds_total", "prompt_tokens_total",
            "requests_processing", "requests_deferred"}  # fmt: skip

sys.path.insert(0, str(COLLECTOR.parent))
import jetson_textfile_collector as collector  # noqa: E402

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool missing: make system-deps (package prometheus)")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=REPO, capture_output=True, text=True, check=False, timeout=120)


@needs_promtool
def test_promtool_check_rules() -> None:
    proc = _run(str(promtool), "check", "rules", *map(str, RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    proc = _run(str(promtool), "test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _rules() -> list[dict[str, object]]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def test_every_alert_has_a_firing_test_and_a_runbook_summary() -> None:
    alerts = {str(rule["alert"]) for rule in _rules() if "alert" in rule}
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - tested == set(), "alerts without a firing test"
    for rule in _rules():
        if "alert" in rule:
            assert "summary" in rule["annotations"] and rule["labels"]["severity"] in {"warning", "critical"}  # type: ignore[index]


@pytest.mark.skipif(not LLSRC.exists(), reason="pinned llama.cpp source not extracted")
def test_llamacpp_metric_names_exist_in_the_pinned_server() -> None:
    source = LLSRC.read_text()
    for name in LLAMACPP:
        assert f'"{name}"' in source, name


def _known_metrics() -> set[str]:
    known = {str(rule["record"]) for rule in _rules() if "record" in rule}
    known |= set(collector.HELP) | {f"llamacpp:{name}" for name in LLAMACPP}
    return known | {"up", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes"}


def test_dashboard_is_importable_and_names_known_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ["Throughput", "Latency", "GPU / EMC", "Thermals and power", "Memory", "Releases"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
        assert names & _known_metrics(), expr
    for rule in _rules():  # the rules' own inputs too
        for name in re.findall(r"(?<![\w:])(?:llamacpp:|jetson_|node_)[a-zA-Z0-9_:]*", str(rule["expr"])):
            assert name in _known_metrics(), (rule, name)


def _tegrastats(tmp_path: Path, throttle: str | None) -> str:
    run_dir = tmp_path / "run/jetsim"
    run_dir.mkdir(parents=True, exist_ok=True)
    if throttle is not None:
        (run_dir / "thermal-throttle").write_text(throttle + "\n")
    env = {**os.environ, "JETSIM_ROOT": str(tmp_path), "JETSIM_TEGRASTATS_COUNT": "1"}
    proc = subprocess.run([sys.executable, str(TEGRASTATS)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _values(line: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(name, tuple(sorted(labels.items()))): value for name, labels, value in collector.parse_tegrastats(line)}


def test_collector_reads_a_jetsim_tegrastats_line(tmp_path: Path) -> None:
    values = _values(_tegrastats(tmp_path, None))
    temps = {labels[0][1]: v for (name, labels), v in values.items() if name == "jetson_temperature_celsius"}
    assert set(temps) >= {"cpu", "gpu", "soc0", "tj"} and all(30 < t < 60 for t in temps.values())
    rails = {labels[0][1] for (name, labels) in values if name == "jetson_power_watts"}
    assert rails == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert values[("jetson_gpu_freq_hz", ())] > 0 and values[("jetson_cpus_online", ())] == 8
    assert values[("jetson_ram_largest_free_block_bytes", ())] == 4 * 1024 * 1024


def test_throttle_knob_raises_temperatures_and_halves_the_gpu_clock(tmp_path: Path) -> None:
    normal = _values(_tegrastats(tmp_path / "a", None))
    hot = _values(_tegrastats(tmp_path / "b", "101"))
    assert 101 <= hot[("jetson_temperature_celsius", (("sensor", "tj"),))] < 103
    assert hot[("jetson_gpu_freq_hz", ())] == normal[("jetson_gpu_freq_hz", ())] // 2 // 1_000_000 * 1_000_000


def test_collector_reads_older_l4t_lines() -> None:
    line = (
        "RAM 2248/7620MB (lfb 1x2MB) SWAP 0/3810MB (cached 0MB) CPU [2%@1190,off,1%@1190,0%@1190] "
        "EMC_FREQ 13%@1600 GR3D_FREQ 99%@921 PLL@40C CPU@42.5C PMIC@50C GPU@41C AO@46C thermal@41.5C "
        "iwlwifi@-256C VDD_IN 5000mW/4900mW"
    )
    values = _values(line)
    assert values[("jetson_gpu_load_ratio", ())] == 0.99 and values[("jetson_gpu_freq_hz", ())] == 921_000_000
    assert values[("jetson_cpus_online", ())] == 3
    assert ("jetson_temperature_celsius", (("sensor", "iwlwifi"),)) not in values
    assert values[("jetson_power_average_watts", (("rail", "VDD_IN"),))] == 4.9


def test_facts_from_release_record_and_clocks() -> None:
    record = {"id": "abc123", "image": "llama:b11312", "model": {"filename": "m.gguf"},
              "settings": {"parallel": 4}, "backend": {"requested": "cuda", "name": "CPU", "gpu_layers": 0,
                                                       "layers": 29, "device": None}}  # fmt: skip
    text = collector.render(collector.release_metrics(record))
    assert 'jetson_release_info{image="llama:b11312",model="m.gguf",release_id="abc123"} 1' in text
    assert 'jetson_backend_info{device="",name="CPU",requested="cuda"} 1' in text
    assert "jetson_backend_layers 29\n" in text and "jetson_llama_server_slots 4\n" in text
    older = collector.render(collector.release_metrics({"id": "x", "model": {"path": "/opt/llm/a.gguf"}}))
    assert "jetson_backend_info" not in older and 'model="a.gguf"' in older
    show = (
        "cpu0:  Online=1 Governor=schedutil MinFreq=1984000 MaxFreq=1984000 CurrentFreq=1984000\n"
        "cpu4:  Online=0\nGPU MinFreq=1173000000 MaxFreq=1173000000 CurrentFreq=1173000000\n"
        "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1\n"
    )
    assert collector.parse_clocks_show(show) == (True, 1173000000)
    assert collector.parse_clocks_show(show.replace("MinFreq=1173000000", "MinFreq=306000000"))[0] is False
    assert collector.parse_clocks_show("") == (None, None)
    assert collector.parse_power_mode("NV Power Mode: MAXN_SUPER\n2\n") == "MAXN_SUPER"
