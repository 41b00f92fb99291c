"""Per-host benchmark reports (schema jetson-llm-fleet/benchmark/v1) and the fleet report.

One JSON file per host, `reports/<UTC timestamp>/<host>.json`, written by playbooks/benchmark.yml through
`python -m jetson_fleet.report build`. Schema "jetson-llm-fleet/benchmark/v1" (HOST_SCHEMA below is the same
contract as a JSON Schema subset; `validate()` names every missing or mistyped field). Fields are only ever
added within v1; a rename or removal makes v2.

    schema       "jetson-llm-fleet/benchmark/v1"
    host         inventory name
    timestamp    UTC, ISO 8601 ("2026-10-02T08:15:00Z"): when the benchmark ran
    release      from the device's /etc/llama-server/release.json:
                 id, image, model {sha256, filename}, flags_digest, deployed_at
    settings     the release's server settings: ctx_size, n_gpu_layers (int, "all" or "auto"), threads,
                 parallel, batch_size, ubatch_size, flash_attn (and whatever else the release records)
    device       l4t ("36.4.3"), jetpack ("6.2"), module, power_mode ("MAXN_SUPER"), clocks_pinned (bool);
                 null where unknown
    llama_bench  runs: `llama-bench -o json` objects, kept fields: n_prompt, n_gen, avg_ts, stddev_ts,
                 n_gpu_layers, flash_attn, n_batch, n_ubatch, n_threads, model_type, model_size, backends,
                 build_commit, build_number; pp_tps / tg_tps: avg_ts of the prompt-only (pp512) and
                 generation-only (tg128) runs; pp_tokens / tg_tokens: their sizes
    probes       from jetson_fleet/probe.py: greeting, coding, tool_call {ttft_s, latency_s, prompt_n,
                 prompt_per_second, predicted_n, predicted_per_second, ...}, burst {requests, wall_s,
                 aggregate_tps, latency_s_max, per_request: [...]}
    memory       peak RAM during the probes from tegrastats: ram_used_mb_max, ram_total_mb, samples, and
                 gpu_* where tegrastats reports them
    targets      generation_tps_min, short_latency_s_max, short_queries, memory_mb_max
    verdict      pass (bool) and checks: [{name, metric, value, op, limit, unit, pass}]

Targets (defaults from the Orin NX reference report; playbook variables benchmark_target_*):
- generation >= 20 tok/s, measured as llama-bench's tg (generation-only run, one sequence);
- response < 2 s for SHORT queries: `greeting` and `tool_call` (both answer in a few dozen tokens), as the
  total latency of the streamed request (sent -> last chunk). `coding` is not short: it runs to max_tokens,
  so its latency is reported but not gated; `burst` is reported for throughput;
- memory < 4096 MB: peak system RAM used during the probes, as tegrastats reports it (Orin's GPU shares
  that RAM, so GPU allocations are included; the OS's own use is included too).
A target whose value was not measured fails.

CLI:
    python -m jetson_fleet.report build --out reports/<ts>/<host>.json [--raw FILE]   (raw parts, default stdin)
    python -m jetson_fleet.report render --dir reports/<ts> [--compare reports/<older>] [--threshold 10] [--gate]
render reads <dir>/*.json (host reports; fleet.json is skipped), writes fleet.md, fleet.html (one
self-contained page, inline SVG charts) and fleet.json (summary), prints the Markdown. Exit 0; 1 when --gate
is given and a target fails (each failure named: host, metric, value, target); 2 for unusable input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from jetson_fleet.device import parse_clocks_pinned, parse_power_mode

SCHEMA_ID = "jetson-llm-fleet/benchmark/v1"
FLEET_SCHEMA_ID = "jetson-llm-fleet/fleet/v1"
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
TEMPLATES = Path(__file__).resolve().parent / "templates"

_NUMBER = {"type": "number"}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STRING = {"type": "string"}
_STRING_OR_NULL = {"type": ["string", "null"]}
_INTEGER = {"type": "integer"}
_SINGLE_PROBE = {
    "type": "object",
    "required": ["ttft_s", "latency_s", "prompt_n", "prompt_per_second", "predicted_n", "predicted_per_second"],
    "properties": {
        "ttft_s": _NUMBER,
        "latency_s": _NUMBER,
        "prompt_n": _NUMBER_OR_NULL,
        "prompt_ms": _NUMBER_OR_NULL,
        "prompt_per_second": _NUMBER_OR_NULL,
        "predicted_n": _NUMBER_OR_NULL,
        "predicted_ms": _NUMBER_OR_NULL,
        "predicted_per_second": _NUMBER_OR_NULL,
        "finish_reason": _STRING_OR_NULL,
        "tool_calls": _INTEGER,
    },
}
HOST_SCHEMA: dict[str, Any] = {
    "$id": SCHEMA_ID,
    "type": "object",
    "required": [
        "schema",
        "host",
        "timestamp",
        "release",
        "settings",
        "device",
        "llama_bench",
        "probes",
        "memory",
        "targets",
        "verdict",
    ],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "host": {"type": "string", "minLength": 1},
        "timestamp": {"type": "string", "format": "date-time"},
        "release": {
            "type": "object",
            "required": ["id", "image", "model", "flags_digest"],
            "properties": {
                "id": _STRING,
                "image": _STRING,
                "model": {
                    "type": "object",
                    "required": ["sha256", "filename"],
                    "properties": {"sha256": _STRING, "filename": _STRING},
                },
                "flags_digest": _STRING,
                "deployed_at": _STRING_OR_NULL,
            },
        },
        "settings": {
            "type": "object",
            "required": ["ctx_size", "n_gpu_layers", "threads", "parallel", "batch_size", "ubatch_size", "flash_attn"],
            "properties": {
                "ctx_size": _INTEGER,
                "n_gpu_layers": {"type": ["integer", "string"]},
                "threads": _INTEGER,
                "parallel": _INTEGER,
                "batch_size": _INTEGER,
                "ubatch_size": _INTEGER,
                "flash_attn": {"type": ["string", "boolean"]},
            },
        },
        "device": {
            "type": "object",
            "required": ["l4t", "jetpack", "power_mode", "clocks_pinned"],
            "properties": {
                "l4t": _STRING_OR_NULL,
                "jetpack": _STRING_OR_NULL,
                "module": _STRING_OR_NULL,
                "power_mode": _STRING_OR_NULL,
                "clocks_pinned": {"type": ["boolean", "null"]},
            },
        },
        "llama_bench": {
            "type": "object",
            "required": ["runs", "pp_tps", "tg_tps"],
            "properties": {
                "runs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["n_prompt", "n_gen", "avg_ts", "stddev_ts"],
                        "properties": {
                            "n_prompt": _INTEGER,
                            "n_gen": _INTEGER,
                            "avg_ts": _NUMBER,
                            "stddev_ts": _NUMBER,
                        },
                    },
                },
                "pp_tps": _NUMBER_OR_NULL,
                "tg_tps": _NUMBER_OR_NULL,
                "pp_tokens": {"type": ["integer", "null"]},
                "tg_tokens": {"type": ["integer", "null"]},
            },
        },
        "probes": {
            "type": "object",
            "required": [*QUERY_TYPES, "burst"],
            "properties": {
                **{name: _SINGLE_PROBE for name in QUERY_TYPES},
                "burst": {
                    "type": "object",
                    "required": ["requests", "wall_s", "aggregate_tps", "latency_s_max", "per_request"],
                    "properties": {
                        "requests": _INTEGER,
                        "wall_s": _NUMBER,
                        "aggregate_tps": _NUMBER_OR_NULL,
                        "latency_s_max": _NUMBER,
                        "per_request": {"type": "array", "items": _SINGLE_PROBE},
                    },
                },
            },
        },
        "memory": {
            "type": "object",
            "required": ["ram_used_mb_max", "ram_total_mb", "samples"],
            "properties": {"ram_used_mb_max": _NUMBER_OR_NULL, "ram_total_mb": _NUMBER_OR_NULL, "samples": _INTEGER},
        },
        "targets": {
            "type": "object",
            "required": ["generation_tps_min", "short_latency_s_max", "short_queries", "memory_mb_max"],
            "properties": {
                "generation_tps_min": _NUMBER,
                "short_latency_s_max": _NUMBER,
                "short_queries": {"type": "array", "items": {"enum": list(QUERY_TYPES)}},
                "memory_mb_max": _NUMBER,
            },
        },
        "verdict": {
            "type": "object",
            "required": ["pass", "checks"],
            "properties": {
                "pass": {"type": "boolean"},
                "checks": {
                    "type": "array",
                    "items": {"type": "object", "required": ["name", "metric", "value", "op", "limit", "pass"]},
                },
            },
        },
    },
}

# Metrics compared between two runs: (label, path in the host report, higher is better).
COMPARED_METRICS = (
    ("generation tok/s (llama-bench tg)", "llama_bench.tg_tps", True),
    ("prompt tok/s (llama-bench pp)", "llama_bench.pp_tps", True),
    ("server generation tok/s (coding)", "probes.coding.predicted_per_second", True),
    ("burst aggregate tok/s", "probes.burst.aggregate_tps", True),
    ("greeting latency s", "probes.greeting.latency_s", False),
    ("tool_call latency s", "probes.tool_call.latency_s", False),
    ("coding latency s", "probes.coding.latency_s", False),
    ("greeting time to first token s", "probes.greeting.ttft_s", False),
    ("RAM peak MB", "memory.ram_used_mb_max", False),
)


class ReportError(Exception):
    """Unusable input: a message naming the file or field."""


# ------------------------------------------------------------------------------------------- validation

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("number", "integer"):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def _check(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    where = path or "(report)"
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {value!r}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {', '.join(map(str, schema['enum']))}")
        return
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, name) for name in names):
            errors.append(f"{where}: expected {' or '.join(names)}, got {type(value).__name__} {value!r:.60}")
            return
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: must not be empty")
        if schema.get("format") == "date-time" and _parse_time(value) is None:
            errors.append(f"{where}: not an ISO 8601 date-time with a time zone: {value!r}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path + '.' if path else ''}{key}: missing")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{path + '.' if path else ''}{key}", errors)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _check(item, schema["items"], f"{path}[{index}]", errors)


def _parse_time(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def validate(report: Any) -> list[str]:
    """Every problem of a host report against HOST_SCHEMA, as "field.path: problem"; [] when valid."""
    errors: list[str] = []
    _check(report, HOST_SCHEMA, "", errors)
    return errors


# ------------------------------------------------------------------------------------------- build


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
    return checks


def build_host_report(
    host: str,
    release: dict[str, Any],
    device: dict[str, Any],
    bench_runs: list[dict[str, Any]],
    probe: dict[str, Any],
    targets: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A validated host report from the raw parts the playbook collects.

    release: the device's release.json; device: {l4t, jetpack, module, nvpmodel_output, clocks_output} (the
    two outputs are parsed here; power_mode / clocks_pinned given directly win); bench_runs: llama-bench's JSON
    array; probe: probe.py's JSON object; targets: overrides of DEFAULT_TARGETS."""
    merged_targets = {**DEFAULT_TARGETS, **{k: v for k, v in (targets or {}).items() if v is not None}}
    for key in ("generation_tps_min", "short_latency_s_max", "memory_mb_max"):
        try:
            merged_targets[key] = float(merged_targets[key])
        except (TypeError, ValueError):
            raise ReportError(f"target {key} is not a number: {merged_targets[key]!r}") from None
    model = release.get("model") or {}
    report: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "host": host,
        "timestamp": timestamp or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "release": {
            "id": release.get("id"),
            "image": release.get("image"),
            "model": {"sha256": model.get("sha256"), "filename": model.get("filename")},
            "flags_digest": release.get("flags_digest"),
            "deployed_at": release.get("deployed_at"),
        },
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


# ------------------------------------------------------------------------------------------- fleet


@dataclass
class Regression:
    host: str
    metric: str
    before: float
    after: float
    change_pct: float


def load_dir(directory: Path) -> dict[str, dict[str, Any]]:
    """host -> report for every host file in a report directory (fleet.json skipped); ReportError names
    the file and its problems."""
    if not directory.is_dir():
        raise ReportError(f"report directory not found: {directory}")
    reports: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        if path.name == "fleet.json":
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ReportError(f"{path}: not readable JSON: {exc}") from None
        errors = validate(data)
        if errors:
            raise ReportError(f"{path}: not a {SCHEMA_ID} host report:\n  " + "\n  ".join(errors))
        if data["host"] in reports:
            raise ReportError(f"{path}: host {data['host']} has two report files in {directory}")
        reports[data["host"]] = data
    if not reports:
        raise ReportError(f"no host reports (*.json) in {directory}")
    return reports


def compare(
    current: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]], threshold_pct: float = 10.0
) -> list[Regression]:
    """Metrics of hosts present in both runs that got worse by more than threshold_pct percent."""
    found: list[Regression] = []
    for host in sorted(set(current) & set(previous)):
        for label, path, higher_is_better in COMPARED_METRICS:
            before, after = get_path(previous[host], path), get_path(current[host], path)
            if not isinstance(before, (int, float)) or not isinstance(after, (int, float)) or before <= 0:
                continue
            change = (after - before) / before * 100
            if (-change if higher_is_better else change) > threshold_pct:
                found.append(Regression(host, label, float(before), float(after), round(change, 1)))
    return found


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "n/a"}[value]
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def _short(value: float) -> str:
    """A chart label: 3712, 27.5, 0.55."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _svg_chart(
    chart_id: str,
    title: str,
    unit: str,
    series: list[str],
    rows: list[tuple[str, list[float | None], list[bool]]],
    target: float,
    target_label: str,
) -> Markup:
    """A bar chart as inline SVG: one group per host (rows: host, values per series, pass per series) and a
    dashed target line. Failing bars get class "fail"."""
    bar_w, gap, left, top, plot_h = 22, 4, 56, 34, 170
    group_w = max(70, len(series) * (bar_w + gap) + 28)
    width = max(left + group_w * len(rows) + 150, 8 * len(title) + left)  # room for the title
    height = top + plot_h + 60
    values = [v for _, vals, _ in rows for v in vals if v is not None]
    scale_max = max([*values, target]) * 1.15 or 1.0
    bottom = top + plot_h

    def y(value: float) -> float:
        return bottom - value / scale_max * plot_h

    palette = ["#3b7dd8", "#8e5bd1", "#d88a3b", "#3ba58e"]
    parts = [
        f'<svg id="{chart_id}" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" class="title">{html.escape(title)}</text>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>',
        f'<line class="axis" x1="{left}" y1="{bottom}" x2="{width - 140}" y2="{bottom}"/>',
        f'<text x="{left - 6}" y="{bottom}" class="tick" text-anchor="end">0</text>',
        f'<text x="{left - 6}" y="{top + 4}" class="tick" text-anchor="end">{_short(scale_max)}</text>',
    ]
    for index, (host, vals, passes) in enumerate(rows):
        x0 = left + index * group_w + 14
        for s_index, (value, passed) in enumerate(zip(vals, passes, strict=True)):
            x = x0 + s_index * (bar_w + gap)
            label = f"{host} {series[s_index]}: {'n/a' if value is None else _short(value)} {unit}"
            if value is None:
                parts.append(f'<text x="{x}" y="{bottom - 4}" class="na">n/a</text>')
                continue
            state = "pass" if passed else "fail"
            color = palette[s_index % len(palette)] if len(series) > 1 else ("#2e9e5b" if passed else "#d23c3c")
            parts.append(
                f'<rect class="bar {state}" data-host="{html.escape(host)}" '
                f'data-series="{html.escape(series[s_index])}" data-value="{value:g}" x="{x}" y="{y(value):.1f}" '
                f'width="{bar_w}" height="{bottom - y(value):.1f}" fill="{color}">'
                f"<title>{html.escape(label)}</title></rect>"
            )
            parts.append(f'<text x="{x + bar_w / 2}" y="{y(value) - 3:.1f}" class="value">{_short(value)}</text>')
        parts.append(f'<text x="{x0}" y="{bottom + 16}" class="host">{html.escape(host)}</text>')
    ty = y(target)
    parts.append(
        f'<line class="target" data-value="{target:g}" x1="{left}" y1="{ty:.1f}" x2="{width - 140}" y2="{ty:.1f}"/>'
    )
    parts.append(f'<text x="{width - 136}" y="{ty + 4:.1f}" class="target-label">{html.escape(target_label)}</text>')
    if len(series) > 1:
        for s_index, name in enumerate(series):
            ly, lx = bottom + 36, left + s_index * 110
            parts.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{palette[s_index]}"/>')
            parts.append(f'<text x="{lx + 14}" y="{ly}" class="legend">{html.escape(name)}</text>')
    parts.append("</svg>")
    return Markup("\n".join(parts))


def fleet_context(
    reports: dict[str, dict[str, Any]],
    directory: Path,
    comparison: tuple[Path, list[Regression], dict[str, dict[str, Any]]] | None,
    threshold_pct: float,
) -> dict[str, Any]:
    """Everything the templates and fleet.json need."""
    hosts: list[dict[str, Any]] = []
    failures: list[str] = []
    for host, report in sorted(reports.items()):
        checks = evaluate(report)
        failed = [c.message(host) for c in checks if not c.passed]
        failures += failed
        by_name = {c.name: c for c in checks}
        hosts.append(
            {
                "host": host,
                "pass": not failed,
                "checks": checks,
                "by_name": by_name,
                "failures": failed,
                "report": report,
                "release_short": f"{report['release']['id']} ({report['release']['model']['filename']})",
                "image_tag": str(report["release"]["image"]).rsplit(":", 1)[-1],
            }
        )
    first = next(iter(reports.values()))
    targets = {**DEFAULT_TARGETS, **first["targets"]}
    bench = first["llama_bench"]
    differing = sorted({json.dumps(r["targets"], sort_keys=True) for r in reports.values()})
    latency_series = list(QUERY_TYPES)
    short = set(targets["short_queries"])
    lat_limit = targets["short_latency_s_max"]

    def lat_pass(report: dict[str, Any], query: str) -> bool:
        value = get_path(report, f"probes.{query}.latency_s")
        return query not in short or (isinstance(value, (int, float)) and value < lat_limit)

    charts = {
        "generation": _svg_chart(
            "chart-generation",
            "Generation tokens/s per host (llama-bench tg)",
            "tok/s",
            ["tg"],
            [(h["host"], [h["report"]["llama_bench"]["tg_tps"]], [h["by_name"]["generation"].passed]) for h in hosts],
            targets["generation_tps_min"],
            f"target >= {targets['generation_tps_min']:g} tok/s",
        ),
        "latency": _svg_chart(
            "chart-latency",
            "Response time per query type (s, streamed request until the last chunk)",
            "s",
            latency_series,
            [
                (
                    h["host"],
                    [get_path(h["report"], f"probes.{q}.latency_s") for q in latency_series],
                    [lat_pass(h["report"], q) for q in latency_series],
                )
                for h in hosts
            ],
            lat_limit,
            f"short queries < {lat_limit:g} s",
        ),
        "memory": _svg_chart(
            "chart-memory",
            "Peak RAM used during the probes (MB, tegrastats)",
            "MB",
            ["RAM"],
            [(h["host"], [h["report"]["memory"]["ram_used_mb_max"]], [h["by_name"]["memory"].passed]) for h in hosts],
            targets["memory_mb_max"],
            f"target < {targets['memory_mb_max']:g} MB",
        ),
    }
    compare_info = None
    if comparison is not None:
        compare_dir, regressions, previous = comparison
        compare_info = {
            "dir": compare_dir.name,
            "path": str(compare_dir),
            "threshold_pct": threshold_pct,
            "regressions": regressions,
            "missing_hosts": sorted(set(previous) - set(reports)),
            "new_hosts": sorted(set(reports) - set(previous)),
            "release_changes": {
                host: (previous[host]["release"]["id"], reports[host]["release"]["id"])
                for host in sorted(set(previous) & set(reports))
                if previous[host]["release"]["id"] != reports[host]["release"]["id"]
            },
        }
    return {
        "title": f"Fleet benchmark {directory.name}",
        "directory": directory.name,
        "schema": SCHEMA_ID,
        "generated_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hosts": hosts,
        "failures": failures,
        "passed": not failures,
        "targets": targets,
        "targets_differ": len(differing) > 1,
        "query_types": QUERY_TYPES,
        "pp_label": f"pp{bench['pp_tokens']}" if bench.get("pp_tokens") else "pp",
        "tg_label": f"tg{bench['tg_tokens']}" if bench.get("tg_tokens") else "tg",
        "charts": charts,
        "compare": compare_info,
        "fmt": _fmt,
    }


def fleet_summary(context: dict[str, Any]) -> dict[str, Any]:
    """fleet.json: the verdict per host and the numbers that decided it."""
    compare_info = context["compare"]
    return {
        "schema": FLEET_SCHEMA_ID,
        "report_dir": context["directory"],
        "generated_at": context["generated_at"],
        "pass": context["passed"],
        "targets": context["targets"],
        "failures": context["failures"],
        "hosts": {
            h["host"]: {
                "pass": h["pass"],
                "release": h["report"]["release"]["id"],
                "image": h["report"]["release"]["image"],
                "model": h["report"]["release"]["model"]["filename"],
                "generation_tps": h["report"]["llama_bench"]["tg_tps"],
                "prompt_tps": h["report"]["llama_bench"]["pp_tps"],
                "latency_s": {q: get_path(h["report"], f"probes.{q}.latency_s") for q in QUERY_TYPES},
                "burst_aggregate_tps": get_path(h["report"], "probes.burst.aggregate_tps"),
                "ram_used_mb_max": h["report"]["memory"]["ram_used_mb_max"],
                "checks": [c.as_dict() for c in h["checks"]],
            }
            for h in context["hosts"]
        },
        "comparison": None
        if compare_info is None
        else {
            "dir": compare_info["path"],
            "threshold_pct": compare_info["threshold_pct"],
            "regressions": [asdict(r) for r in compare_info["regressions"]],
            "missing_hosts": compare_info["missing_hosts"],
            "new_hosts": compare_info["new_hosts"],
        },
    }


def _environment(autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def render_markdown(context: dict[str, Any]) -> str:
    return _environment(False).get_template("fleet.md.j2").render(context)


def render_html(context: dict[str, Any]) -> str:
    return _environment(True).get_template("fleet.html.j2").render(context)


def render_dir(
    directory: Path, compare_dir: Path | None = None, threshold_pct: float = 10.0
) -> tuple[dict[str, Any], str]:
    """Read the host reports of `directory`, write fleet.md, fleet.html and fleet.json there; return the
    context and the Markdown."""
    reports = load_dir(directory)
    comparison = None
    if compare_dir is not None:
        previous = load_dir(compare_dir)
        comparison = (compare_dir, compare(reports, previous, threshold_pct), previous)
    context = fleet_context(reports, directory, comparison, threshold_pct)
    markdown = render_markdown(context)
    (directory / "fleet.md").write_text(markdown)
    (directory / "fleet.html").write_text(render_html(context))
    (directory / "fleet.json").write_text(json.dumps(fleet_summary(context), indent=2) + "\n")
    return context, markdown


# ------------------------------------------------------------------------------------------- CLI


def _build(args: argparse.Namespace) -> int:
    try:
        raw = json.loads(sys.stdin.read() if args.raw in (None, "-") else Path(args.raw).read_text())
    except OSError as exc:
        raise ReportError(f"cannot read {args.raw}: {exc.strerror}") from None
    except ValueError as exc:
        raise ReportError(f"raw benchmark parts are not JSON: {exc}") from None
    missing = [key for key in ("host", "release", "device", "llama_bench", "probe") if key not in raw]
    if missing:
        raise ReportError(f"raw benchmark parts lack: {', '.join(missing)}")
    report = build_host_report(
        raw["host"], raw["release"], raw["device"], raw["llama_bench"], raw["probe"], raw.get("targets"),
        raw.get("timestamp"),
    )  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    verdict = "pass" if report["verdict"]["pass"] else "FAIL"
    print(f"{report['host']}: {verdict}, written to {out}")
    return 0


def _render(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    context, markdown = render_dir(directory, Path(args.compare) if args.compare else None, args.threshold)
    print(markdown, end="")
    print(f"\nwritten: {directory / 'fleet.md'}, {directory / 'fleet.html'}, {directory / 'fleet.json'}")
    if args.gate and context["failures"]:
        print("benchmark gate FAILED:", file=sys.stderr)
        for line in context["failures"]:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jetson_fleet.report", description="Benchmark reports.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="make one host report from the raw parts the playbook collects")
    build.add_argument("--out", required=True, help="host report file to write")
    build.add_argument("--raw", help="raw parts JSON file (default: stdin)")
    render = commands.add_parser("render", help="fleet report (Markdown, HTML, JSON) of a report directory")
    render.add_argument("--dir", required=True, help="directory with the host reports, e.g. reports/<UTC timestamp>")
    render.add_argument("--compare", help="an older report directory: list the regressions against it")
    render.add_argument("--threshold", type=float, default=10.0, help="regression threshold in percent (10)")
    render.add_argument("--gate", action="store_true", help="exit 1 when a host misses a target")
    args = parser.parse_args(argv)
    try:
        return _build(args) if args.command == "build" else _render(args)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
