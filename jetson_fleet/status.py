"""`jetson-fleet status`: one SSH session per host running one script, its output parsed into a row, the table.

GEN TOK/S is the server's lifetime generation speed from its monotonic /metrics counters,
llamacpp:tokens_predicted_total / llamacpp:tokens_predicted_seconds_total (b11312, tools/server/server-task.cpp):
tokens generated per second of generation, summed over all requests since the server started (each concurrent
request counts its own time). Not the gauge llamacpp:predicted_tokens_seconds, which b11312 resets at every
/metrics scrape (0 on an idle server, and a `status` call would shorten a Prometheus scraper's window).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jetson_fleet.inventory import Host
from jetson_fleet.jetson import backend_cell, parse_clocks_pinned, parse_l4t, parse_power_mode
from jetson_fleet.probe import parse_metrics
from jetson_fleet.ssh import PRELUDE, connect, describe_error, first_line, script_command, split_sections

# Every fact in one SSH session, each section introduced by `@@name`. Positional parameters: port, container
# name, config dir, server address. Errors go into the sections (2>&1) and are reported as found. The API key
# goes from the root-only file into curl's stdin (-H @-): on no command line.
STATUS_SCRIPT = (
    PRELUDE
    + r"""
port="$1"; name="$2"; conf="$3"; address="${4:-127.0.0.1}"
section l4t; head -n 1 /etc/nv_tegra_release 2>&1
section nvpmodel; $SUDO nvpmodel -q 2>&1
section clocks; $SUDO jetson_clocks --show 2>&1
section container
$SUDO docker inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
    "$name" 2>&1
section release; $SUDO cat "$conf/release.json" 2>&1
section metrics
{ $SUDO cat "$conf/api-key" 2>/dev/null | sed -n '1s/^/Authorization: Bearer /p'; } \
    | curl -sS -m 5 -H @- -w '\nhttp_code=%{http_code}\n' "http://$address:$port/metrics" 2>&1 \
    | grep -v '^#'
section uptime; cat /proc/uptime
section end
"""
)


def generation_tps(metrics: dict[str, float]) -> float | None:
    """Lifetime generation tokens/s from the monotonic counters; None before the first generated token."""
    tokens = metrics.get("llamacpp:tokens_predicted_total")
    seconds = metrics.get("llamacpp:tokens_predicted_seconds_total")
    if tokens is None or not seconds or seconds <= 0:
        return None
    return round(tokens / seconds, 3)


def release_summary(release: dict[str, Any]) -> dict[str, Any]:
    """The fields of a release record the table and --json show; backend None where the record predates it."""
    model = release.get("model") or {}
    backend = release.get("backend")
    return {
        "id": release.get("id"),
        "image": release.get("image"),
        "model": model.get("filename"),
        "model_sha256": model.get("sha256"),
        "backend": backend if isinstance(backend, dict) else None,
    }


def parse_status_output(output: str) -> dict[str, Any]:
    """The status script's sections -> facts; what could not be read is None, with the reason in `problems`."""
    sections = split_sections(output)
    problems: list[str] = []
    status: dict[str, Any] = {}
    status["l4t"] = parse_l4t(sections.get("l4t"))
    status["power_mode"] = parse_power_mode(sections.get("nvpmodel"))
    if status["power_mode"] is None:
        problems.append(f"nvpmodel: {first_line(sections.get('nvpmodel', '')) or 'no output'}")
    status["clocks_pinned"] = parse_clocks_pinned(sections.get("clocks"))
    if status["clocks_pinned"] is None:
        problems.append(f"jetson_clocks: {first_line(sections.get('clocks', '')) or 'no output'}")
    words = sections.get("container", "").split()
    if len(words) == 2 and words[0].isalpha() and words[1].replace("-", "").isalpha():
        status["container"], status["health"] = words[0], (None if words[1] == "none" else words[1])
    else:
        text = sections.get("container", "")
        status["container"] = "absent" if "No such" in text else None
        status["health"] = None
        if status["container"] is None:
            problems.append(f"docker: {first_line(text) or 'no output'}")
    try:
        status["release"] = release_summary(json.loads(sections.get("release") or ""))
    except (ValueError, AttributeError):
        status["release"] = None
        problems.append(f"release: {first_line(sections.get('release', '')) or 'no output'}")
    metrics_text = sections.get("metrics", "")
    code = next((line.split("=", 1)[1] for line in metrics_text.splitlines() if line.startswith("http_code=")), "")
    metrics = parse_metrics("\n".join(line for line in metrics_text.splitlines() if line.startswith("llamacpp:")))
    status["gen_tps"] = generation_tps(metrics)
    status["gen_tokens_total"] = metrics.get("llamacpp:tokens_predicted_total")
    status["requests_processing"] = metrics.get("llamacpp:requests_processing")
    if code != "200":
        body = first_line("\n".join(ln for ln in metrics_text.splitlines() if not ln.startswith("http_code=")))
        problems.append(f"metrics: HTTP {code or '?'} {body}".strip())
    try:
        status["uptime_s"] = int(float(sections.get("uptime", "").split()[0]))
    except (ValueError, IndexError):
        status["uptime_s"] = None
    status["problems"] = problems
    return status


def host_status(host: Host, timeout: float) -> dict[str, Any]:
    """One SSH session running STATUS_SCRIPT; never raises: an unreachable host is a row with the reason."""
    base: dict[str, Any] = {"host": host.name, "address": host.address}
    settings = host.settings
    try:
        with connect(host, timeout) as conn:
            command = script_command(STATUS_SCRIPT, settings.port, settings.container, settings.config_dir,
                                     settings.address)  # fmt: skip
            result = conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
    except Exception as exc:  # an unreachable host never breaks the table
        return {**base, "reachable": False, "error": describe_error(exc)}
    if "@@end" not in result.stdout:
        error = first_line(result.stderr or result.stdout) or f"exit status {result.exited}"
        return {**base, "reachable": False, "error": f"status script failed: {error}"}
    return {**base, "reachable": True, "error": None, **parse_status_output(result.stdout)}


def gather_status(hosts: list[Host], timeout: float) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(hosts)))) as pool:
        return list(pool.map(lambda host: host_status(host, timeout), hosts))


def _uptime(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    days, rest = divmod(seconds, 86400)
    return f"{days}d{rest // 3600}h" if days else f"{rest // 3600}h{rest % 3600 // 60:02d}m"


HEADER = ["HOST", "ADDRESS", "L4T", "POWER", "CLOCKS", "SERVER", "BACKEND", "RELEASE", "MODEL", "GEN TOK/S", "UPTIME"]


def status_table(rows: list[dict[str, Any]]) -> str:
    lines = [HEADER]
    notes: list[str] = []
    for row in rows:
        if not row["reachable"]:
            lines.append([row["host"], row["address"], f"unreachable: {row['error']}"])
            continue
        release = row.get("release") or {}
        server = row.get("container") or "?"
        if row.get("health"):
            server += f" ({row['health']})"
        pinned = {True: "pinned", False: "NOT pinned", None: "?"}[row.get("clocks_pinned")]
        gen = row.get("gen_tps")
        lines.append(
            [
                row["host"],
                row["address"],
                row.get("l4t") or "?",
                row.get("power_mode") or "?",
                pinned,
                server,
                backend_cell(release.get("backend")),
                release.get("id") or "-",
                release.get("model") or "-",
                f"{gen:.1f}" if isinstance(gen, (int, float)) else "-",
                _uptime(row.get("uptime_s")),
            ]
        )
        notes += [f"{row['host']}: {problem}" for problem in row.get("problems", [])]
    # Unreachable rows (host, address, reason) take part in the widths of the first two columns only.
    widths = [max(len(line[i]) for line in lines if len(line) == len(HEADER) or i < 2) for i in range(len(HEADER))]
    out = []
    for line in lines:
        if len(line) == len(HEADER):
            out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        else:  # unreachable: host and address columns, then the reason
            out.append("  ".join([line[0].ljust(widths[0]), line[1].ljust(widths[1]), line[2]]))
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def status_ok(rows: list[dict[str, Any]]) -> bool:
    return all(row["reachable"] and row.get("container") == "running" for row in rows)
