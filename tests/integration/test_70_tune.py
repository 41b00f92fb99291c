"""playbooks/tune.yml on 2 hosts of a jetsim fleet, within a small budget.

jetsim's hosts are one hardware class (same board, L4T and power mode): one host is measured for both, the
settings file names both. The sweep runs llama-bench in the release's CPU image and a temporary llama-server per
setting on the tiny test GGUF, then cache reuse and the draft model (the same tiny model as its own draft) with
and without; the numbers are CPU numbers, the test checks the mechanism: the settings file, both reports, the
budget, and every host back on its release and healthy, with the temporary server gone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Fleet, PlayResult

pytestmark = [pytest.mark.jetsim, pytest.mark.pending]  # failed once on jetsim, fix not yet run: make test-pending
CONFIG = "/etc/llama-server"
HOSTS = ["jetson-1", "jetson-2"]
BUDGET_S = 90


def _ok(result: PlayResult) -> None:
    assert result.rc == 0, result.output[-8000:]


def _release(fleet: Fleet, host: str) -> dict[str, Any]:
    return dict(json.loads(fleet.exec(host, "cat", f"{CONFIG}/release.json")))


@pytest.fixture(scope="module")
def tuned(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> tuple[PlayResult, Path, dict[str, Any]]:
    if not all(fleet.exists(host, f"{CONFIG}/release.json") for host in HOSTS):
        _ok(fleet.playbook("site.yml", "-e", '{"fleet_serial": ["100%"]}', timing="tune: converge"))
    before = {host: _release(fleet, host) for host in HOSTS}
    reports = tmp_path_factory.mktemp("tune-reports")
    model = str(before[HOSTS[0]]["model"]["path"])
    variables = {
        "tune_report_dir": str(reports), "tune_budget_s": BUDGET_S, "tune_objective": "throughput",
        "tune_clients": 2, "tune_client_counts": [1, 2], "tune_max_tokens": 8,
        "tune_threads": [1, 2], "tune_batch_sizes": [{"batch_size": 64, "ubatch_size": 32}],
        "tune_flash_attn": ["on"], "tune_cache_types": ["f16"],
        "tune_bench_prompt_tokens": 16, "tune_bench_gen_tokens": 8, "tune_bench_repetitions": 1,
        "tune_parallel": [1, 2], "tune_kv_unified": [True], "tune_ctx_sizes": [],
        "tune_cache_reuse": 64, "tune_draft_model": model, "tune_feature_requests": 2,
    }  # fmt: skip
    result = fleet.playbook(
        "playbooks/tune.yml", "--limit", ",".join(HOSTS), "-e", json.dumps(variables), timing="tune.yml (2 hosts)"
    )
    runs = sorted(reports.iterdir())
    assert len(runs) == 1, runs
    return result, runs[0], before


def test_tune_writes_the_settings_file_and_both_reports(tuned: tuple[PlayResult, Path, dict[str, Any]]) -> None:
    result, run_dir, _before = tuned
    _ok(result)

    [settings_file] = sorted(run_dir.glob("group_vars_*.yml"))
    settings = yaml.safe_load(settings_file.read_text())
    text = settings_file.read_text()
    for host in HOSTS:  # one class: both hosts named, one measured
        assert host in text
    [measured] = [json.loads(p.read_text()) for p in run_dir.glob("jetson-*.json")]
    assert settings["llama_server_threads"] in {measured["current"]["threads"], 1, 2}
    assert settings["llama_server_parallel"] in {measured["current"]["parallel"], 1, 2}
    bench = measured["bench"]["results"]
    assert bench[0]["settings"]["threads"] == measured["current"]["threads"]  # the current settings first
    assert {r["settings"]["threads"] for r in bench} >= {1, 2}
    assert all(r["backend"] == "CPU" and r["fit_ok"] for r in bench if not r["error"]), bench
    assert any(r.get("gen_tps") for r in bench), bench
    server = measured["server"]["results"]
    assert any(r.get("clients", {}).get("2", {}).get("aggregate_tps") for r in server), server
    assert measured["elapsed_s"] <= BUDGET_S + 120  # no run starts after the budget; one may end past it
    features = {f["name"]: f for f in measured["features"]}
    assert set(features) == {"cache_reuse", "draft"}, features
    for feature in features.values():
        if not feature["error"]:
            assert feature["runs"]["with"]["requests"] == feature["runs"]["without"]["requests"] == 2, feature

    markdown = (run_dir / "tune.md").read_text()
    html = (run_dir / "tune.html").read_text()
    assert "## " in markdown and "llama-bench sweep" in markdown and "Chosen against current" in markdown
    assert "<svg" in html and "<rect" in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_every_host_is_back_on_its_release_and_healthy(
    fleet: Fleet, tuned: tuple[PlayResult, Path, dict[str, Any]]
) -> None:
    result, _run_dir, before = tuned
    _ok(result)

    for host in HOSTS:
        assert _release(fleet, host)["id"] == before[host]["id"], host
        assert fleet.exec(host, "systemctl", "is-active", "llama-server.service").strip() == "active"
        status = fleet.exec(host, "docker", "inspect", "--format", "{{.State.Health.Status}}", "llama-server")
        assert status.strip() == "healthy", host
        assert "llama-tune" not in fleet.exec(host, "docker", "ps", "--all", "--format", "{{.Names}}")
        probe = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/health').status)"
        assert fleet.exec(host, "python3", "-c", probe).strip() == "200"
