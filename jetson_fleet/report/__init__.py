"""Benchmark reports: one JSON file per host (contract: jetson_fleet/schemas/benchmark-v1.json, schema
"jetson-llm-fleet/benchmark/v1") and the fleet report of a run directory (fleet.md, fleet.html, fleet.json,
contract: jetson_fleet/schemas/fleet-v1.json).

    schema  the JSON Schema files, validate()            build   one host report and its verdict (targets)
    fleet   load a run, compare with an older one         render  Markdown and HTML; svg: the charts
    cli     python -m jetson_fleet.report build|render
"""

from jetson_fleet.report.build import DEFAULT_TARGETS, QUERY_TYPES, Check, build_host_report, evaluate
from jetson_fleet.report.cli import main
from jetson_fleet.report.fleet import Regression, compare, fleet_context, fleet_summary, load_dir
from jetson_fleet.report.render import render_dir, render_html, render_markdown
from jetson_fleet.report.schema import FLEET_SCHEMA, FLEET_SCHEMA_ID, HOST_SCHEMA, SCHEMA_ID, ReportError, validate

__all__ = [
    "DEFAULT_TARGETS",
    "FLEET_SCHEMA",
    "FLEET_SCHEMA_ID",
    "HOST_SCHEMA",
    "QUERY_TYPES",
    "SCHEMA_ID",
    "Check",
    "Regression",
    "ReportError",
    "build_host_report",
    "compare",
    "evaluate",
    "fleet_context",
    "fleet_summary",
    "load_dir",
    "main",
    "render_dir",
    "render_html",
    "render_markdown",
    "validate",
]
