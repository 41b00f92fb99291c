"""A report directory: its host reports, the comparison with an older run, the fleet verdict and summary."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jetson_fleet.jetson import backend_cell
from jetson_fleet.report.build import DEFAULT_TARGETS, QUERY_TYPES, evaluate, get_path
from jetson_fleet.report.schema import FLEET_SCHEMA_ID, SCHEMA_ID, ReportError, validate
from jetson_fleet.report.svg import bar_chart

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
                "backend": backend_cell(report["release"].get("backend")),
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
        "generation": bar_chart(
            "chart-generation",
            "Generation tokens/s per host (llama-bench tg)",
            "tok/s",
            ["tg"],
            [(h["host"], [h["report"]["llama_bench"]["tg_tps"]], [h["by_name"]["generation"].passed]) for h in hosts],
            targets["generation_tps_min"],
            f"target >= {targets['generation_tps_min']:g} tok/s",
        ),
        "latency": bar_chart(
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
        "memory": bar_chart(
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
                "backend": h["report"]["release"].get("backend"),
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
