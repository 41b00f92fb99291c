"""One host report from the raw parts the benchmark collects, and its verdict against the targets.

Targets (defaults from the Orin NX reference report; the benchmark's variables benchmark_target_*):
- generation >= 20 tok/s, measured as llama-bench's tg (generation-only run, one sequence);
- response < 2 s for SHORT queries: `greeting` and `tool_call` (both answer in a few dozen tokens), as the
  total latency of the streamed request (sent -> last chunk). `coding` runs to max_tokens: reported, not gated;
- memory < 4096 MB: peak system RAM used during the probes, as tegrastats reports it (Orin's GPU shares it);
- gpu_offload, only where the release asked for CUDA (release.backend.requested): every layer on CUDA.
A target whose value was not measured fails.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from jetson_fleet.jetson import parse_clocks_pinned, parse_power_mode
from jetson_fleet.report.schema import SCHEMA_ID, ReportError, validate

QUERY_TYPES = ("greeting", "coding", "tool_call")
DEFAULT_TARGETS: dict[str, Any] = {
    "generation_tps_min": 20.0,
    "short_latency_s_max": 2.0,
    "short_queries": ["greeting", "tool_call"],
    "memory_mb_max": 4096.0,
}
BENCH_FIELDS = (
    "n_prompt", "n_gen", "avg_ts", "stddev_ts", "n_gpu_layers", "flash_attn", "n_batch", "n_ubatch",
    "n_threads", "model_type", "model_size", "backends", "build_commit", "build_number",
)  # fmt: skip
BACKEND_FIELDS = ("requested", "name", "gpu_layers", "layers", "device")


@dataclass
class Check:
    name: str
    metric: str
    value: float | None
    op: str
    limit: float
    unit: str
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pass"] = data.pop("passed")
        return data

    def message(self, host: str) -> str:
        value = "not measured" if self.value is None else f"{self.value:.4g} {self.unit}"
        return f"{host}: {self.name} {value}, target {self.op} {self.limit:g} {self.unit} ({self.metric})"


def get_path(data: Any, path: str) -> Any:
    """data["a"]["b"] for "a.b"; None where any step is missing."""
    for key in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def summarize_bench(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """llama-bench -o json output -> kept fields per run, pp/tg tokens/s (prompt-only / generation-only runs)."""
    kept: list[dict[str, Any]] = [{key: run[key] for key in BENCH_FIELDS if key in run} for run in runs]
    pp = next((r for r in kept if (r.get("n_prompt") or 0) > 0 and not r.get("n_gen")), None)
    tg = next((r for r in kept if not r.get("n_prompt") and (r.get("n_gen") or 0) > 0), None)
    return {
        "runs": kept,
        "pp_tps": round(float(pp["avg_ts"]), 3) if pp else None,
        "tg_tps": round(float(tg["avg_ts"]), 3) if tg else None,
        "pp_tokens": pp["n_prompt"] if pp else None,
        "tg_tokens": tg["n_gen"] if tg else None,
    }


def gpu_offload_check(backend: Any) -> Check | None:
    """Layers on CUDA >= the model's layers, where the release asked for CUDA; None where it did not say so."""
    if not isinstance(backend, dict) or backend.get("requested") != "cuda":
        return None
    layers, gpu_layers = backend.get("layers"), backend.get("gpu_layers")
    on_cuda = gpu_layers if backend.get("name") == "CUDA" and isinstance(gpu_layers, int) else 0
    if not isinstance(layers, int):  # the server never said how many layers the model has
        return Check("gpu_offload", "release.backend.gpu_layers", None, ">=", 0.0, "layers on CUDA", False)
    return Check(
        "gpu_offload", "release.backend.gpu_layers", float(on_cuda), ">=", float(layers), "layers on CUDA",
        on_cuda >= layers,
    )  # fmt: skip


def evaluate(report: dict[str, Any]) -> list[Check]:
    """The target checks of one host report, from its own `targets`."""
    targets = {**DEFAULT_TARGETS, **(report.get("targets") or {})}

    def check(name: str, metric: str, op: str, limit: float, unit: str) -> Check:
        value = get_path(report, metric)
        value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        passed = value is not None and (value >= limit if op == ">=" else value < limit)
        return Check(name, metric, value, op, float(limit), unit, passed)

    checks = [check("generation", "llama_bench.tg_tps", ">=", targets["generation_tps_min"], "tok/s")]
    for query in targets["short_queries"]:
        checks.append(check(f"{query} latency", f"probes.{query}.latency_s", "<", targets["short_latency_s_max"], "s"))
    checks.append(check("memory", "memory.ram_used_mb_max", "<", targets["memory_mb_max"], "MB"))
    offload = gpu_offload_check(get_path(report, "release.backend"))
    return [*checks, offload] if offload else checks


def build_host_report(
    host: str,
    release: dict[str, Any],
    device: dict[str, Any],
    bench_runs: list[dict[str, Any]],
    probe: dict[str, Any],
    targets: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A validated host report from the raw parts the benchmark collects.

    release: the device's release record; device: {l4t, jetpack, module, nvpmodel_output, clocks_output} (the
    two outputs are parsed here; power_mode / clocks_pinned given directly win); bench_runs: llama-bench's JSON
    array; probe: probe.py's JSON object; targets: overrides of DEFAULT_TARGETS."""
    merged_targets = {**DEFAULT_TARGETS, **{k: v for k, v in (targets or {}).items() if v is not None}}
    for key in ("generation_tps_min", "short_latency_s_max", "memory_mb_max"):
        try:
            merged_targets[key] = float(merged_targets[key])
        except (TypeError, ValueError):
            raise ReportError(f"target {key} is not a number: {merged_targets[key]!r}") from None
    model = release.get("model") or {}
    report_release: dict[str, Any] = {
        "id": release.get("id"),
        "image": release.get("image"),
        "model": {"sha256": model.get("sha256"), "filename": model.get("filename")},
        "flags_digest": release.get("flags_digest"),
        "deployed_at": release.get("deployed_at"),
    }
    backend = release.get("backend")
    if isinstance(backend, dict):
        report_release["backend"] = {key: backend.get(key) for key in BACKEND_FIELDS}
    report: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "host": host,
        "timestamp": timestamp or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "release": report_release,
        "settings": dict(release.get("settings") or {}),
        "device": {
            "l4t": device.get("l4t"),
            "jetpack": device.get("jetpack"),
            "module": device.get("module"),
            "power_mode": device.get("power_mode") or parse_power_mode(device.get("nvpmodel_output")),
            "clocks_pinned": device["clocks_pinned"]
            if isinstance(device.get("clocks_pinned"), bool)
            else parse_clocks_pinned(device.get("clocks_output")),
        },
        "llama_bench": summarize_bench(bench_runs),
        "probes": probe.get("probes") or {},
        "memory": probe.get("memory") or {},
        "targets": merged_targets,
    }
    checks = evaluate(report)
    report["verdict"] = {"pass": all(c.passed for c in checks), "checks": [c.as_dict() for c in checks]}
    errors = validate(report)
    if errors:
        raise ReportError(f"the benchmark of {host} does not make a valid report:\n  " + "\n  ".join(errors))
    return report
