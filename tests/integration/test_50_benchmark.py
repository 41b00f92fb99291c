"""Benchmark reports and the fleet CLI on a 3-host jetsim fleet.

playbooks/benchmark.yml against the deployed servers writes one valid v1 report per host and the fleet report; a
second run with an unreachable target fails the gate and compares with the first; `jetson-fleet status` and
`restart` work over real SSH with the jetsim inventory's key and known_hosts. The fleet serves with an API key for
the whole module, so the probe and the status script read it on the devices (it must never show).

jetsim runs the tiny test GGUF on the CPU build: the numbers say nothing about an Orin, so the test checks what the
reports contain and where it comes from, not performance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
from conftest import REPO, Fleet, PlayResult

from jetson_fleet import report

pytestmark = pytest.mark.jetsim
CONFIG = "/etc/llama-server"
KEY = "sk-jetsim-bench-Tz81QpV3nY"
ONE_BATCH = '{"fleet_serial": ["100%"]}'


def _ok(result: PlayResult) -> None:
    assert result.rc == 0, result.output[-6000:]


def _release(fleet: Fleet, host: str) -> dict[str, object]:
    return dict(json.loads(fleet.exec(host, "cat", f"{CONFIG}/release.json")))


def _started_at(fleet: Fleet, host: str) -> str:
    return fleet.exec(host, "docker", "inspect", "--format", "{{.State.StartedAt}}", "llama-server").strip()


def _cli(fleet: Fleet, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jetson_fleet", "-i", str(fleet.inventory), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def keyed(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    secrets = tmp_path_factory.mktemp("bench-secrets") / "secrets.yml"  # stands in for an ansible-vault file
    secrets.write_text(f"llama_server_api_key: {KEY}\n")
    _ok(fleet.playbook("site.yml", "-e", f"@{secrets}", "-e", ONE_BATCH, timing="benchmark: converge with an API key"))
    for host in fleet.hosts:
        assert fleet.exists(host, f"{CONFIG}/release.json"), f"{host}: no release after site.yml"
    yield fleet
    # Back to the fleet's settings (no key) for the modules that follow.
    _ok(fleet.playbook("site.yml", "-e", ONE_BATCH))


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def first_run(keyed: Fleet, reports: Path) -> tuple[PlayResult, Path]:
    variables = json.dumps({"benchmark_report_dir": str(reports), "benchmark_repetitions": 2})
    result = keyed.playbook("playbooks/benchmark.yml", "-e", variables, timing="benchmark.yml (3 hosts)")
    runs = sorted(reports.iterdir())
    assert len(runs) == 1, runs
    return result, runs[0]


def test_benchmark_writes_a_valid_report_per_host(keyed: Fleet, first_run: tuple[PlayResult, Path]) -> None:
    result, run_dir = first_run

    _ok(result)
    assert KEY not in result.output
    assert {p.name for p in run_dir.iterdir()} == {f"{h}.json" for h in keyed.hosts} | {
        "fleet.md", "fleet.html", "fleet.json",
    }  # fmt: skip
    assert f"# Fleet benchmark {run_dir.name}" in result.output  # the report is shown at the end of the play
    for host in keyed.hosts:
        data = json.loads((run_dir / f"{host}.json").read_text())
        assert report.validate(data) == [], host
        release = _release(keyed, host)
        assert data["release"]["id"] == release["id"] and data["release"]["image"] == release["image"]
        assert data["settings"]["ctx_size"] == release["settings"]["ctx_size"]  # type: ignore[index]
        assert data["device"]["power_mode"] == keyed.power_mode(host)
        assert data["device"]["clocks_pinned"] is keyed.clocks(host).get("pinned")
        assert data["device"]["l4t"].startswith("36.")
        bench = data["llama_bench"]
        assert bench["pp_tokens"] == 512 and bench["tg_tokens"] == 128
        assert bench["pp_tps"] > 0 and bench["tg_tps"] > 0
        assert {run["build_number"] for run in bench["runs"]} == {11312}
        assert {run["backends"] for run in bench["runs"]} == {"CPU"}
        for name in ("greeting", "coding", "tool_call"):
            probe = data["probes"][name]
            assert probe["predicted_n"] > 0 and 0 < probe["ttft_s"] <= probe["latency_s"], (host, name, probe)
        assert data["probes"]["burst"]["requests"] == 5 and data["probes"]["burst"]["aggregate_tps"] > 0
        assert data["memory"]["samples"] >= 1 and data["memory"]["ram_total_mb"] > 14000  # jetsim's tegrastats
    html = (run_dir / "fleet.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count('class="bar ') >= 3 * len(keyed.hosts)
    summary = json.loads((run_dir / "fleet.json").read_text())
    assert set(summary["hosts"]) == set(keyed.hosts)


def test_gate_fails_on_a_missed_target_and_compares_with_the_first_run(
    keyed: Fleet, first_run: tuple[PlayResult, Path], reports: Path
) -> None:
    _, first_dir = first_run
    variables = json.dumps({
        "benchmark_report_dir": str(reports), "benchmark_repetitions": 1, "benchmark_gate": True,
        "benchmark_target_gen_tps": 99999, "benchmark_compare_dir": str(first_dir),
    })  # fmt: skip

    result = keyed.playbook("playbooks/benchmark.yml", "-l", "jetson-1", "-e", variables, timing="benchmark.yml gate")

    assert result.rc != 0
    assert "benchmark gate FAILED" in result.output
    assert "jetson-1: generation" in result.output and "target >= 99999 tok/s (llama_bench.tg_tps)" in result.output
    (second_dir,) = [d for d in reports.iterdir() if d != first_dir]
    assert {p.name for p in second_dir.iterdir()} == {"jetson-1.json", "fleet.md", "fleet.html", "fleet.json"}
    markdown = (second_dir / "fleet.md").read_text()
    assert f"## Regressions against {first_dir.name}" in markdown
    assert "- new in this run" not in markdown and "not in this run: jetson-2, jetson-3" in markdown


def test_cli_status_over_ssh(keyed: Fleet, first_run: tuple[PlayResult, Path]) -> None:
    proc = _cli(keyed, "status", "--json")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {row["host"]: row for row in json.loads(proc.stdout)}
    assert set(rows) == set(keyed.hosts)
    for host, row in rows.items():
        assert row["reachable"] and row["problems"] == [], row
        assert (row["container"], row["health"]) == ("running", "healthy")
        assert row["release"]["id"] == _release(keyed, host)["id"]
        assert row["power_mode"] == keyed.power_mode(host) and row["clocks_pinned"] is True
        assert row["l4t"].startswith("36.")
        assert row["gen_tps"] is not None  # /metrics answered: the key was read on the device
    table = _cli(keyed, "status")
    assert table.returncode == 0 and all(host in table.stdout for host in keyed.hosts)
    assert KEY not in proc.stdout + proc.stderr + table.stdout + table.stderr


def test_cli_rolling_restart(keyed: Fleet) -> None:
    before = {host: _started_at(keyed, host) for host in keyed.hosts}

    proc = _cli(keyed, "restart", "jetsons", "--timeout", "240", timeout=900)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    order = [line.split(":")[0] for line in proc.stdout.splitlines() if "healthy after" in line]
    assert order == keyed.hosts  # one host at a time, inventory order
    for host in keyed.hosts:
        assert _started_at(keyed, host) != before[host], host


def test_cli_usage_errors(keyed: Fleet, tmp_path: Path) -> None:
    unknown = _cli(keyed, "status", "jetson-9")
    assert unknown.returncode == 2 and "no host or group named 'jetson-9'" in unknown.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "jetson_fleet", "-i", str(tmp_path / "none.yml"), "status"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "inventory not found" in missing.stderr


def test_cli_status_shows_a_stopped_host_unreachable_and_the_others(keyed: Fleet) -> None:
    harness.stop_host("jetson-2")
    try:
        proc = _cli(keyed, "status", "--json", "--timeout", "10")
        table = _cli(keyed, "status", "--timeout", "10")
    finally:
        harness.start_host("jetson-2")  # llama-server.service brings the server back at boot

    assert proc.returncode == 1, proc.stdout + proc.stderr  # a host is unreachable
    rows = {row["host"]: row for row in json.loads(proc.stdout)}
    assert rows["jetson-2"]["reachable"] is False and rows["jetson-2"]["error"], rows["jetson-2"]
    for host in ("jetson-1", "jetson-3"):  # still reported (the restart test may have left a health "starting")
        assert rows[host]["reachable"] and rows[host]["container"] == "running", rows[host]
        assert rows[host]["release"]["id"] == _release(keyed, host)["id"]
    line = next(line for line in table.stdout.splitlines() if line.startswith("jetson-2"))
    assert "unreachable" in line, table.stdout
    assert sum(1 for line in table.stdout.splitlines() if line.startswith(("jetson-1", "jetson-3"))) == 2
