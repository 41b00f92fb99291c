"""The tuning run's choice: jetson_llm.fleet.tune_choose and tune_grid on recorded sweeps.

The sweeps are shaped like roles/tune/files/tune_sweep.py writes them; the numbers are the reference report's
Orin NX 16GB hand-tuning steps (threads 6 -> 8, parallel 4 -> 8, ...), rounded.
"""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.jetson_llm.fleet.plugins.filter.tune import tune_backend_proof, tune_choose, tune_grid


def bench(threads: int, gen: float, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "settings": {"threads": threads, "batch_size": 512, "ubatch_size": 256, "flash_attn": "on"},
        "gen_tps": gen, "prompt_tps": gen * 10, "fit_ok": True, "backend_ok": True, "elapsed_s": 10.0, "error": None,
    }  # fmt: skip
    result.update(extra)
    return result


def server(parallel: int, clients: dict[int, tuple[float, float, float]], **extra: Any) -> dict[str, Any]:
    """clients: n -> (aggregate tokens/s, latency_s, ttft_s)."""
    measured = {str(n): {"aggregate_tps": t, "latency_s": lat, "ttft_s": ttft} for n, (t, lat, ttft) in clients.items()}
    result: dict[str, Any] = {
        "settings": {"parallel": parallel, "kv_unified": True},
        "clients": measured,
        "fit_ok": True, "backend_ok": True, "elapsed_s": 30.0, "error": None,
    }  # fmt: skip
    result.update(extra)
    return result


SWEEP = [bench(6, 18.0), bench(8, 24.5), bench(4, 12.0)]
CURRENT = SWEEP[0]["settings"]
# parallel 8 gives the most tokens/s at 4 clients, parallel 1 the fastest single stream.
SLOTS = [
    server(1, {1: (27.0, 2.4, 0.20), 4: (27.5, 9.5, 7.0)}),
    server(4, {1: (25.0, 2.6, 0.25), 4: (60.0, 4.3, 0.6)}),
    server(8, {1: (24.0, 2.7, 0.30), 4: (75.0, 3.4, 0.5)}),
]


def test_bench_sweep_picks_the_fastest_generation_and_reports_the_gain() -> None:
    choice = tune_choose(SWEEP, objective="latency", current=CURRENT)

    assert choice["chosen"]["threads"] == 8
    assert choice["value"] == 24.5 and choice["current_value"] == 18.0
    assert choice["gain_pct"] == 36.1
    assert "generation tokens/s" in choice["metric"]


def test_objective_decides_between_single_stream_and_concurrent_throughput() -> None:
    current = SLOTS[1]["settings"]

    latency = tune_choose(SLOTS, objective="latency", clients=4, current=current)
    throughput = tune_choose(SLOTS, objective="throughput", clients=4, current=current)

    assert latency["chosen"]["parallel"] == 1
    assert latency["value"] == 2.4 and latency["gain_pct"] == 7.7  # 2.6 s -> 2.4 s: 7.7 % faster
    assert throughput["chosen"]["parallel"] == 8
    assert throughput["gain_pct"] == 25.0


def test_latency_limits_reject_a_setting_that_is_faster_in_aggregate_but_too_slow_per_request() -> None:
    choice = tune_choose(SLOTS, objective="throughput", clients=4, max_latency_s=4.0)

    assert choice["chosen"]["parallel"] == 8
    choice = tune_choose(SLOTS, objective="throughput", clients=4, max_latency_s=3.0)
    assert choice["chosen"] is None
    reasons = [r["reason"] for r in choice["rejected"]]
    assert all("latency_s" in reason and "over the limit 3" in reason for reason in reasons), reasons

    by_ttft = tune_choose(SLOTS, objective="throughput", clients=4, max_ttft_s=0.55)
    assert by_ttft["chosen"]["parallel"] == 8
    assert any("ttft_s 0.6" in str(r["reason"]) for r in by_ttft["rejected"])


def test_a_result_measured_after_the_budget_does_not_count() -> None:
    late = [*SWEEP[:1], bench(8, 24.5, elapsed_s=130.0)]

    choice = tune_choose(late, objective="latency", budget_s=120, current=CURRENT)

    assert choice["chosen"] == CURRENT
    assert "after the budget of 120 s" in choice["rejected"][0]["reason"]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ({"fit_ok": False}, "does not fit the memory"),
        ({"backend_ok": False}, "backend proof failed"),
        ({"error": "llama-bench exited 1"}, "failed: llama-bench exited 1"),
    ],
)
def test_never_a_setting_that_failed_the_fit_the_backend_proof_or_the_run(failure: dict[str, Any], reason: str) -> None:
    # The fastest result failed: a CPU fallback measured as GPU, or a setting that would not fit.
    sweep = [SWEEP[0], bench(8, 99.0, **failure)]

    choice = tune_choose(sweep, objective="latency", current=CURRENT)

    assert choice["chosen"] == CURRENT
    [rejected] = choice["rejected"]
    assert rejected["settings"] == sweep[1]["settings"] and rejected["reason"].startswith(reason)


def test_nothing_qualifies_then_nothing_is_chosen() -> None:
    choice = tune_choose([bench(8, 30.0, fit_ok=False)], objective="latency", current=CURRENT)

    assert choice["chosen"] is None and choice["gain_pct"] is None
    assert "keep the current settings" in choice["why"]


def test_ties_keep_the_current_settings_else_the_first_in_a_fixed_order() -> None:
    tied = [bench(8, 20.0), bench(4, 20.0), bench(6, 19.9)]

    # Exact tie, current not among them: the same choice whatever order the sweep ran in.
    first = tune_choose(tied, objective="latency")
    again = tune_choose(list(reversed(tied)), objective="latency")
    assert first["chosen"] == again["chosen"] == tied[1]["settings"]  # threads 4 sorts first
    # Within 1 %: the current setting (threads 6, 19.9) is kept, measurement noise is no reason to change.
    kept = tune_choose(tied, objective="latency", current=tied[2]["settings"], tie_pct=1)
    assert kept["chosen"] == tied[2]["settings"]
    assert "current settings are the best" in kept["why"]
    # Without the tolerance the faster one wins.
    assert tune_choose(tied, objective="latency", current=tied[2]["settings"])["chosen"]["threads"] == 4


def test_an_unknown_objective_is_refused() -> None:
    with pytest.raises(ValueError, match="latency, throughput"):
        tune_choose(SWEEP, objective="fast")


def test_grid_is_the_current_settings_then_one_axis_at_a_time() -> None:
    current = {"threads": 8, "flash_attn": "on", "batch_size": 512}

    grid = tune_grid(current, {"threads": [4, 8], "flash_attn": ["off"], "batch_size": []})

    assert grid == [current, {**current, "flash_attn": "off"}, {**current, "threads": 4}]
    pairs = tune_grid(current, {"batch": [{"batch_size": 256, "ubatch_size": 128}]})
    assert pairs[1] == {**current, "batch_size": 256, "ubatch_size": 128}


CUDA_LOG = (
    "ggml_cuda_init: found 1 CUDA devices (Total VRAM: 15656 MiB):\n"
    "llama_model_load_from_file_impl: using device CUDA0 (Orin) (0000:00:00.0) - 11873 MiB free\n"
)


def test_backend_proof_rejects_a_cpu_fallback_and_a_partial_offload_next_to_gpu_runs() -> None:
    results = [
        {"settings": {"parallel": 4}, "log": CUDA_LOG + "load_tensors: offloaded 29/29 layers to GPU\n"},
        {"settings": {"parallel": 8}, "log": "load_tensors: CPU_Mapped model buffer size = 1918 MiB\n"},
        {"settings": {"parallel": 2}, "log": CUDA_LOG + "load_tensors: offloaded 20/29 layers to GPU\n"},
        {"settings": {"threads": 8}, "backends": "CUDA"},
        {"settings": {"threads": 4}, "backends": "CPU"},
    ]

    proven = tune_backend_proof(results, expected="")

    assert [r["backend_ok"] for r in proven] == [True, False, False, True, False]
    assert [r["backend"] for r in proven] == ["CUDA", "CPU", "CUDA", "CUDA", "CPU"]
    assert all("log" not in r for r in proven)
    # A CPU release (jetsim) proves CPU runs; a record that says CUDA refuses them.
    assert tune_backend_proof(results[4:], expected="CPU")[0]["backend_ok"] is True
    assert tune_backend_proof(results[4:], expected="CUDA")[0]["backend_ok"] is False
