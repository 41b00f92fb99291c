"""jetson-fleet: look at and restart the llama.cpp servers of a Jetson fleet over SSH (Fabric).

    jetson-fleet [-i INVENTORY] status [TARGET] [--json] [--timeout S]
    jetson-fleet [-i INVENTORY] logs HOST [-f] [--tail N]
    jetson-fleet [-i INVENTORY] restart TARGET [--timeout S]
    jetson-fleet report render --dir reports/<ts> [...]      (same as python -m jetson_fleet.report)

TARGET is a host or a group of the Ansible inventory (default group: jetsons), read with `ansible-inventory`
(jetson_fleet.inventory); the server's port, container, config directory and health gate settings are the
llama_server role's defaults with the hostvars taking precedence (jetson_fleet.settings). Privileged commands use
`sudo -n`; the API key never leaves the device. README.md, "Fleet CLI", has the details.

Exit status: 0 fine; 1 a host is unreachable or its server not running (status), a restart failed, or the
remote command failed (logs); 2 usage errors (inventory missing or malformed, unknown host or group).
"""

from __future__ import annotations

import argparse
import json
import sys

from jetson_fleet.inventory import (
    DEFAULT_GROUP,
    DEFAULT_INVENTORY,
    CliError,
    Inventory,
    default_inventory,
    load_inventory,
)
from jetson_fleet.logs import show_logs
from jetson_fleet.restart import rolling_restart
from jetson_fleet.status import gather_status, status_ok, status_table


def cmd_status(inventory: Inventory, args: argparse.Namespace) -> int:
    rows = gather_status(inventory.resolve(args.target), args.timeout)
    print(json.dumps(rows, indent=2) if args.json else status_table(rows))
    return 0 if status_ok(rows) else 1


def cmd_logs(inventory: Inventory, args: argparse.Namespace) -> int:
    if args.host not in inventory.hosts:
        raise CliError(f"no host named {args.host!r} in the inventory (logs takes one host)")
    return show_logs(inventory.hosts[args.host], args.tail, args.follow, args.timeout)


def cmd_restart(inventory: Inventory, args: argparse.Namespace) -> int:
    return rolling_restart(inventory.resolve(args.target), args.timeout, args.connect_timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jetson-fleet", description="Status, logs and restarts of the fleet.")
    parser.add_argument(
        "-i",
        "--inventory",
        action="append",
        help=f"Ansible inventory (repeatable; default $ANSIBLE_INVENTORY or {DEFAULT_INVENTORY})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="one line per host: L4T, power, clocks, server, backend, tok/s")
    status.add_argument("target", nargs="?", default=DEFAULT_GROUP, help=f"host or group (default {DEFAULT_GROUP})")
    status.add_argument("--json", action="store_true", help="JSON for scripts")
    status.add_argument("--timeout", type=float, default=15, help="seconds per host (connect and run), default 15")
    logs = commands.add_parser("logs", help="the server container's logs on one host")
    logs.add_argument("host")
    logs.add_argument("-f", "--follow", action="store_true", help="keep following (Ctrl-C stops)")
    logs.add_argument("--tail", type=int, default=100, help="lines from the end (default 100)")
    logs.add_argument("--timeout", type=float, default=15, help="connect timeout in seconds (default 15)")
    restart = commands.add_parser(
        "restart", help="rolling restart behind the role's health gate: one host at a time, stop at the first failure"
    )
    restart.add_argument("target", help="host or group")
    restart.add_argument(
        "--timeout",
        type=float,
        help="seconds for /health 200 and for Docker's healthy (default llama_server_health_timeout)",
    )
    restart.add_argument("--connect-timeout", type=float, default=15, help="SSH connect timeout (default 15)")
    commands.add_parser("report", help="benchmark reports: python -m jetson_fleet.report (see --help there)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        from jetson_fleet import report

        return report.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        inventory = load_inventory(args.inventory or default_inventory())
        handler = {"status": cmd_status, "logs": cmd_logs, "restart": cmd_restart}[args.command]
        return handler(inventory, args)
    except CliError as exc:
        print(f"jetson-fleet: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
