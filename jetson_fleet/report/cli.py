"""`python -m jetson_fleet.report build|render` (README.md, "Benchmark and fleet report").

    build --out reports/<ts>/<host>.json [--raw FILE]   the raw parts as JSON (default stdin) -> one host report
    render --dir reports/<ts> [--compare reports/<older>] [--threshold 10] [--gate]
render reads <dir>/*.json (host reports; fleet.json is skipped), writes fleet.md, fleet.html (one self-contained
page, inline SVG charts) and fleet.json (the summary), prints the Markdown. Exit 0; 1 when --gate is given and a
check fails (each failure named: host, metric, value, target); 2 for unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jetson_fleet.report.build import build_host_report
from jetson_fleet.report.render import render_dir
from jetson_fleet.report.schema import ReportError


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
