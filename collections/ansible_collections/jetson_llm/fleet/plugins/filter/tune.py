# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Filters ``jetson_llm.fleet.tune_grid``, ``tune_backend_proof`` and ``tune_choose``: what a tuning run measures,
which results ran on the release's backend, and which measured setting it picks (roles/tune).

A sweep result (one per setting measured, written by roles/tune/files/tune_sweep.py)::

    {"settings": {...}, "gen_tps": float|None, "prompt_tps": float|None,
     "clients": {"1": {"aggregate_tps": float, "latency_s": float, "ttft_s": float}, "2": {...}},
     "fit_ok": bool, "backend_ok": bool, "elapsed_s": float, "error": str|None}

``elapsed_s`` is the time since the sweep started when this result was complete: a result past the budget does not
count. A setting that failed the memory fit or the backend proof (a CPU fallback compared with a GPU run) is never
chosen, whatever it measured.
"""

from __future__ import annotations

import json
from typing import Any

from ansible_collections.jetson_llm.fleet.plugins.filter.llama import llama_backend, llama_backend_ok

OBJECTIVES = ("latency", "throughput")


def tune_grid(current: dict[str, Any], axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The current settings first, then one axis changed at a time (each other value of that axis), no duplicates.

    A value that is a dict sets several keys together (batch and ubatch: ``{"batch": [{"batch_size": 512,
    "ubatch_size": 256}, ...]}``).

    One factor at a time keeps a sweep linear in the number of values (a full grid of 4 axes x 3 values is 81
    runs); the choice then combines each axis's best value only where a later stage measures them together.
    """
    grid: list[dict[str, Any]] = [dict(current)]
    seen = {_key(current)}
    for axis in sorted(axes):
        for value in axes[axis] or []:
            candidate = {**current, **value} if isinstance(value, dict) else {**current, axis: value}
            if _key(candidate) not in seen:
                seen.add(_key(candidate))
                grid.append(candidate)
    return grid


def tune_with_fit(grid: list[dict[str, Any]], fits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each candidate with ``_fit_ok`` from its jetson_llm.fleet.gguf_memory_fit result (same order)."""
    if len(grid) != len(fits):
        raise ValueError(f"{len(grid)} candidates but {len(fits)} memory fit results")
    return [{**settings, "_fit_ok": bool(fit.get("fits"))} for settings, fit in zip(grid, fits, strict=True)]


def _key(settings: Any) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _metric(result: dict[str, Any], objective: str, clients: int) -> tuple[str, float | None]:
    """(what is compared, its value, larger is better) for one result."""
    per_clients = result.get("clients") or {}
    if per_clients:
        if objective == "latency":
            one = per_clients.get("1") or per_clients.get(1) or {}
            value = one.get("latency_s")
            return "latency_s at 1 client (lower is better)", (-float(value) if value is not None else None)
        at = per_clients.get(str(clients)) or per_clients.get(clients) or {}
        value = at.get("aggregate_tps")
        return f"aggregate tokens/s at {clients} clients", (float(value) if value is not None else None)
    value = result.get("gen_tps")
    return "generation tokens/s (llama-bench tg)", (float(value) if value is not None else None)


def _rejection(
    result: dict[str, Any], objective: str, clients: int, limits: dict[str, Any], budget_s: float
) -> str | None:
    if result.get("error"):
        return f"failed: {result['error']}"
    if not result.get("fit_ok", False):
        return "does not fit the memory (gguf_memory_fit)"
    if not result.get("backend_ok", False):
        return "backend proof failed (not the release's backend, or not every layer on the GPU)"
    if budget_s > 0 and float(result.get("elapsed_s") or 0) > budget_s:
        return f"measured after the budget of {budget_s:g} s"
    per_clients = result.get("clients") or {}
    if per_clients and objective == "throughput":
        at = per_clients.get(str(clients)) or per_clients.get(clients) or {}
        for name in ("latency_s", "ttft_s"):
            limit = limits.get(f"max_{name}")
            if limit and at.get(name) is not None and float(at[name]) > float(limit):
                return f"{name} {at[name]:g} at {clients} clients over the limit {float(limit):g}"
    if _metric(result, objective, clients)[1] is None:
        return "not measured"
    return None


def tune_choose(
    results: list[dict[str, Any]],
    objective: str = "throughput",
    clients: int = 4,
    max_latency_s: float = 0,
    max_ttft_s: float = 0,
    budget_s: float = 0,
    current: dict[str, Any] | None = None,
    tie_pct: float = 0,
) -> dict[str, Any]:
    """``{chosen, metric, value, current_value, gain_pct, why, rejected}`` for a list of sweep results.

    Results within ``tie_pct`` percent of the best count as a tie (measurement noise is not a reason to change
    a setting); a tie keeps the current settings when they are among the tied, else the first tied in a fixed
    order (the settings' sorted JSON), so the same sweep always gives the same choice. ``chosen`` is None when no
    result qualifies (then nothing should change).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    limits = {"max_latency_s": max_latency_s, "max_ttft_s": max_ttft_s}
    current_key = _key(current) if current is not None else None
    eligible: list[tuple[float, dict[str, Any]]] = []
    rejected: list[dict[str, Any]] = []
    metric = "no result"
    current_value: float | None = None
    for result in results:
        metric, value = _metric(result, objective, clients)
        if current_key is not None and _key(result.get("settings")) == current_key and value is not None:
            current_value = value
        reason = _rejection(result, objective, clients, limits, budget_s)
        if reason is None and value is not None:
            eligible.append((value, result))
        else:
            rejected.append({"settings": result.get("settings"), "reason": reason})
    if not eligible:
        return {
            "chosen": None, "metric": metric, "value": None, "current_value": _shown(current_value),
            "gain_pct": None, "rejected": rejected,
            "why": "no measured setting qualifies (see rejected): keep the current settings",
        }  # fmt: skip
    best = max(value for value, _result in eligible)
    margin = abs(best) * tie_pct / 100
    tied = sorted((r for value, r in eligible if value >= best - margin), key=lambda r: _key(r.get("settings")))
    keep = [r for r in tied if current_key is not None and _key(r.get("settings")) == current_key]
    chosen = (keep or tied)[0]
    value = _metric(chosen, objective, clients)[1]
    gain = None
    if current_value is not None and value is not None and current_value != 0:
        gain = round((value - current_value) / abs(current_value) * 100, 1)
    why = f"best {metric} of {len(eligible)} qualifying settings ({len(rejected)} rejected)"
    if keep:
        why = f"the current settings are the best {metric} (within {tie_pct:g}%) of {len(eligible)} qualifying"
    elif len(tied) > 1:
        why += f"; {len(tied)} tied within {tie_pct:g}%, the first in settings order"
    return {
        "chosen": chosen.get("settings"), "metric": metric, "value": _shown(value),
        "current_value": _shown(current_value), "gain_pct": gain, "why": why, "rejected": rejected,
    }  # fmt: skip


def tune_backend_proof(
    results: list[dict[str, Any]], expected: str = "", gpu_layers: Any = "all"
) -> list[dict[str, Any]]:
    """The results with ``backend`` (what the run used) and ``backend_ok``, and without the server's load log.

    The backend is read from a live server's load log (jetson_llm.fleet.llama_backend) or llama-bench's
    ``backends`` column. ``expected`` is the release's backend name ("CUDA"/"CPU"); unknown (an older release
    record) = the first run that identified one, the current settings' (the sweep runs them first). A run on
    another backend, or a CUDA run with a layer left on the CPU, fails the proof: a CPU fallback is never
    compared with a GPU run.
    """
    found: list[tuple[str | None, bool]] = []
    for result in results:
        if result.get("error") and not (result.get("log") or result.get("backends")):
            found.append((None, False))
        elif result.get("log"):
            parsed = llama_backend(result["log"], gpu_layers)
            found.append((parsed["name"], llama_backend_ok(parsed, gpu_layers)))
        elif result.get("backends") is not None:
            name = "CUDA" if "CUDA" in str(result["backends"]) else "CPU"
            found.append((name, name == "CUDA"))
        else:
            found.append((None, False))
    reference: str = expected or next((name for name, _ok in found if name), None) or ""
    proven = []
    for result, (used, full_gpu) in zip(results, found, strict=True):
        ok = used is not None and used == reference and (full_gpu or reference != "CUDA") and not result.get("error")
        proven.append({**{k: v for k, v in result.items() if k != "log"}, "backend": used, "backend_ok": ok})
    return proven


def _shown(value: float | None) -> float | None:
    """The metric as measured (latency is compared negated)."""
    return None if value is None else round(abs(value), 4)


class FilterModule:
    """Tuning filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "tune_grid": tune_grid,
            "tune_choose": tune_choose,
            "tune_backend_proof": tune_backend_proof,
            "tune_with_fit": tune_with_fit,
        }
