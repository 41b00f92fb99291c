"""fleet.md and fleet.html from the fleet context (Jinja templates in jetson_fleet/templates), and render_dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from jetson_fleet.report.fleet import compare, fleet_context, fleet_summary, load_dir
from jetson_fleet.report.schema import FLEET_SCHEMA_ID, ReportError, validate

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "n/a"}[value]
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def _environment(autoescape: bool) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["fmt"] = fmt
    return environment


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
    summary = fleet_summary(context)
    errors = validate(summary, FLEET_SCHEMA_ID)
    if errors:  # a bug here, not bad input: the summary is made from validated host reports
        raise ReportError(f"the fleet summary of {directory} breaks its schema:\n  " + "\n  ".join(errors))
    (directory / "fleet.json").write_text(json.dumps(summary, indent=2) + "\n")
    return context, markdown
