"""jetson-fleet: look at and restart the llama.cpp servers of a Jetson fleet over SSH (Fabric).

    jetson-fleet [-i INVENTORY] status [TARGET] [--json] [--timeout S]
    jetson-fleet [-i INVENTORY] logs HOST [-f] [--tail N]
    jetson-fleet [-i INVENTORY] restart TARGET [--timeout S]
    jetson-fleet report render --dir reports/<ts> [...]      (same as python -m jetson_fleet.report)

TARGET is a host or a group of the Ansible inventory (default group: jetsons). The inventory is read with
`ansible-inventory -i INVENTORY --list` (default: $ANSIBLE_INVENTORY, else inventory/hosts.yml), so group_vars
and host_vars apply; values are used literally (Jinja expressions are not evaluated). Per host: ansible_host,
ansible_user, ansible_port, ansible_ssh_private_key_file, and from ansible_ssh_common_args /
ansible_ssh_extra_args the options UserKnownHostsFile, StrictHostKeyChecking and ConnectTimeout (other ssh
options: put them in ~/.ssh/config, which Fabric reads). Host keys are checked against ~/.ssh/known_hosts and
UserKnownHostsFile; unknown hosts are refused unless StrictHostKeyChecking is no or accept-new (or
ANSIBLE_HOST_KEY_CHECKING=False). Privileged commands use `sudo -n` (passwordless sudo, as Ansible's become
without a password); the API key never leaves the device.

Exit status: 0 fine; 1 a host is unreachable or its server not running (status), a restart failed, or the
remote command failed (logs); 2 usage errors (inventory missing or malformed, unknown host or group).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jetson_fleet.device import parse_clocks_pinned, parse_l4t, parse_power_mode
from jetson_fleet.probe import parse_metrics

DEFAULT_INVENTORY = "inventory/hosts.yml"
DEFAULT_GROUP = "jetsons"
SERVICE = "llama-server"

# The one remote script of `status`: every fact in one SSH session, each section introduced by `@@name`.
# Positional parameters: port, container name, config dir. Errors go into the sections (2>&1) and are
# reported as found. The API key goes from the root-only file into curl's stdin (-H @-): on no command line.
STATUS_SCRIPT = r"""
port="$1"; name="$2"; conf="$3"
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
section() { printf '\n@@%s\n' "$1"; }  # on a line of its own, even after output without a final newline
section l4t; head -n 1 /etc/nv_tegra_release 2>&1
section nvpmodel; $SUDO nvpmodel -q 2>&1
section clocks; $SUDO jetson_clocks --show 2>&1
section container
$SUDO docker inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
    "$name" 2>&1
section release; $SUDO cat "$conf/release.json" 2>&1
section metrics
{ $SUDO cat "$conf/api-key" 2>/dev/null | sed -n '1s/^/Authorization: Bearer /p'; } \
    | curl -sS -m 5 -H @- -w '\nhttp_code=%{http_code}\n' "http://127.0.0.1:$port/metrics" 2>&1 \
    | grep -v '^#'
section uptime; cat /proc/uptime
section end
"""

# logs: container name, lines, "--follow" or "".
LOGS_SCRIPT = r"""
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
exec $SUDO docker logs --tail "$2" $3 "$1"
"""

# restart: the service, then /health polled on the device until 200 or the deadline. Parameters: port, seconds.
RESTART_SCRIPT = r"""
port="$1"; limit="$2"
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
$SUDO systemctl restart llama-server.service || exit 3
start=$(date +%s); code=000
while [ $(( $(date +%s) - start )) -lt "$limit" ]; do
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$port/health")
    if [ "$code" = 200 ]; then echo "healthy after $(( $(date +%s) - start ))s"; exit 0; fi
    sleep 2
done
echo "/health did not answer 200 within ${limit}s (last: HTTP $code)"; exit 4
"""


class CliError(Exception):
    """A usage error reported as one message; exit status 2."""


@dataclass
class Host:
    name: str
    address: str
    user: str | None = None
    port: int = 22
    key_file: str | None = None
    known_hosts: list[str] = field(default_factory=list)
    strict_host_keys: str = "yes"
    connect_timeout: float | None = None
    server_port: int = 8080
    hostvars: dict[str, Any] = field(default_factory=dict)

    @property
    def container(self) -> str:
        return str(self.hostvars.get("llama_server_container_name", "llama-server"))

    @property
    def config_dir(self) -> str:
        return str(self.hostvars.get("llama_server_config_dir", "/etc/llama-server"))


@dataclass
class Inventory:
    hosts: dict[str, Host]
    groups: dict[str, list[str]]  # every group -> its hosts, children included, inventory order
    broken: dict[str, str] = field(default_factory=dict)  # host -> why its variables are unusable

    def resolve(self, target: str) -> list[Host]:
        names = [target] if target in self.hosts or target in self.broken else self.groups.get(target)
        if names is not None:
            if not names:
                raise CliError(f"group {target!r} has no hosts")
            for name in names:
                if name in self.broken:
                    raise CliError(self.broken[name])
            return [self.hosts[name] for name in names]
        groups = ", ".join(sorted(g for g in self.groups if g not in ("all", "ungrouped")))
        raise CliError(f"no host or group named {target!r} in the inventory (groups: {groups or 'none'})")


# ------------------------------------------------------------------------------------------- inventory


def parse_ssh_args(text: str | None) -> dict[str, str]:
    """`-o Key=Value` / `-oKey=Value` / `-o "Key Value"` options of an ssh argument string -> {lowercase key: value}."""
    options: dict[str, str] = {}
    words = shlex.split(text or "")
    index = 0
    while index < len(words):
        word = words[index]
        value = None
        if word == "-o" and index + 1 < len(words):
            value = words[index + 1]
            index += 1
        elif word.startswith("-o") and len(word) > 2:
            value = word[2:]
        if value:
            key, _, rest = value.replace("=", " ", 1).partition(" ")
            options[key.strip().lower()] = rest.strip()
        index += 1
    return options


def _literal(host: str, key: str, value: Any) -> Any:
    if isinstance(value, str) and "{{" in value:
        raise CliError(f"{host}: {key} is a Jinja expression ({value}); jetson-fleet reads inventory values literally")
    return value


def make_host(name: str, hostvars: dict[str, Any]) -> Host:
    def var(*keys: str) -> Any:
        for key in keys:
            if hostvars.get(key) not in (None, ""):
                return _literal(name, key, hostvars[key])
        return None

    ssh = parse_ssh_args(" ".join(str(var(k) or "") for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args")))
    strict = ssh.get("stricthostkeychecking", "yes").lower()
    if os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "").lower() in ("0", "false", "no", "off"):
        strict = "no"
    key_file = var("ansible_ssh_private_key_file", "ansible_private_key_file")
    timeout = ssh.get("connecttimeout")
    try:
        port = int(var("ansible_port", "ansible_ssh_port") or 22)
        server_port = int(var("llama_server_port") or 8080)
    except ValueError as exc:
        raise CliError(f"{name}: a port is not a number ({exc})") from None
    return Host(
        name=name,
        address=str(var("ansible_host", "ansible_ssh_host") or name),
        user=var("ansible_user", "ansible_ssh_user"),
        port=port,
        key_file=os.path.expanduser(str(key_file)) if key_file else None,
        known_hosts=[os.path.expanduser(p) for p in ssh.get("userknownhostsfile", "").split() if p != "/dev/null"],
        strict_host_keys=strict,
        connect_timeout=float(timeout) if timeout and timeout.isdigit() else None,
        server_port=server_port,
        hostvars=hostvars,
    )


def parse_inventory(data: dict[str, Any]) -> Inventory:
    """`ansible-inventory --list` JSON -> hosts and groups (children resolved, inventory order kept)."""
    hostvars: dict[str, dict[str, Any]] = data.get("_meta", {}).get("hostvars", {})

    def members(group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        entry = data.get(group) or {}
        found = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            if child not in seen:
                found += [h for h in members(child, seen | {group}) if h not in found]
        return found

    group_names = [key for key in data if key != "_meta"]
    groups = {group: members(group) for group in group_names}
    hosts: dict[str, Host] = {}
    broken: dict[str, str] = {}
    for name in dict.fromkeys([*groups.get("all", []), *hostvars]):
        try:
            hosts[name] = make_host(name, hostvars.get(name, {}))
        except CliError as exc:  # an error only when the host is asked for
            broken[name] = str(exc)
    return Inventory(hosts, groups, broken)


def _inventory_command() -> str:
    candidate = Path(sys.executable).parent / "ansible-inventory"
    return str(candidate) if candidate.exists() else shutil.which("ansible-inventory") or "ansible-inventory"


def load_inventory(sources: Sequence[str]) -> Inventory:
    """Run ansible-inventory on the sources (files or directories); CliError when one is missing or unparsable."""
    for source in sources:
        if not Path(source).exists():
            raise CliError(f"inventory not found: {source} (give one with -i, or set ANSIBLE_INVENTORY)")
    command = [_inventory_command(), *[arg for source in sources for arg in ("-i", source)], "--list"]
    env = {
        **os.environ,
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
    }
    env |= {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CliError(f"cannot run ansible-inventory: {exc}") from None
    if proc.returncode != 0:
        raise CliError(f"malformed inventory {', '.join(sources)}:\n{_inventory_error(proc.stderr)}")
    try:
        return parse_inventory(json.loads(proc.stdout))
    except (ValueError, AttributeError, TypeError) as exc:
        raise CliError(f"ansible-inventory printed no usable inventory for {', '.join(sources)}: {exc}") from None


def _inventory_error(stderr: str) -> str:
    """The useful lines of ansible-inventory's failure: the errors and what caused them, once each."""
    lines: list[str] = []
    take_next = False
    for raw in stderr.splitlines():
        line = raw.strip()
        if take_next and line:
            lines.append(f"  {line}")
            take_next = False
        elif line.startswith("<<< caused by >>>"):
            take_next = True
        elif line.startswith(("[ERROR]", "ERROR!")):
            lines.append(f"  {line}")
    unique = list(dict.fromkeys(lines))
    return "\n".join(unique) if unique else "  " + "\n  ".join(stderr.strip().splitlines()[-5:])


def default_inventory() -> list[str]:
    value = os.environ.get("ANSIBLE_INVENTORY")
    return [part for part in value.split(",") if part] if value else [DEFAULT_INVENTORY]


# ------------------------------------------------------------------------------------------- SSH


def connect(host: Host, timeout: float) -> Any:
    """A Fabric Connection with host keys checked as OpenSSH would with the inventory's options."""
    import paramiko
    from fabric import Connection

    connect_kwargs: dict[str, Any] = {"banner_timeout": timeout, "auth_timeout": timeout}
    if host.key_file:
        try:  # the key as what it is: paramiko would try every key type and report the last parse error
            connect_kwargs["pkey"] = paramiko.PKey.from_path(host.key_file)
        except (OSError, paramiko.SSHException):  # unreadable here or encrypted: paramiko and the agent try
            connect_kwargs["key_filename"] = [host.key_file]
    conn = Connection(
        host.address,
        user=host.user,
        port=host.port,
        connect_timeout=max(1, round(host.connect_timeout or timeout)),
        connect_kwargs=connect_kwargs,
    )
    client = conn.client
    client.load_system_host_keys()
    for path in host.known_hosts:
        if os.path.exists(path):
            client.load_host_keys(path)
    if host.strict_host_keys in ("no", "off", "accept-new"):
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    else:
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


def describe_error(exc: BaseException) -> str:
    """Why a host could not be reached, in a few words."""
    import paramiko
    from invoke.exceptions import CommandTimedOut

    if isinstance(exc, CommandTimedOut):
        return f"remote command timed out after {exc.timeout}s"
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication failed ({exc})"
    if isinstance(exc, paramiko.BadHostKeyException):
        return "host key mismatch (the known_hosts entry differs)"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        refused = all(isinstance(e, ConnectionRefusedError) for e in exc.errors.values())
        return "connection refused" if refused else f"cannot connect ({exc})"
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return "host key unknown (not in known_hosts; StrictHostKeyChecking)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "connect timeout"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed ({exc.strerror})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _script_command(script: str, *args: object) -> str:
    return "sh -c " + shlex.quote(script) + " sh " + " ".join(shlex.quote(str(a)) for a in args)


# ------------------------------------------------------------------------------------------- status


def split_sections(output: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("@@"):
            current = sections.setdefault(line[2:].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def _first_line(text: str, limit: int = 60) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:limit]


def parse_status_output(output: str) -> dict[str, Any]:
    """The status script's sections -> facts; what could not be read is None, with the reason in `problems`."""
    sections = split_sections(output)
    problems: list[str] = []
    status: dict[str, Any] = {}
    status["l4t"] = parse_l4t(sections.get("l4t"))
    status["power_mode"] = parse_power_mode(sections.get("nvpmodel"))
    if status["power_mode"] is None:
        problems.append(f"nvpmodel: {_first_line(sections.get('nvpmodel', '')) or 'no output'}")
    status["clocks_pinned"] = parse_clocks_pinned(sections.get("clocks"))
    if status["clocks_pinned"] is None:
        problems.append(f"jetson_clocks: {_first_line(sections.get('clocks', '')) or 'no output'}")
    words = sections.get("container", "").split()
    if len(words) == 2 and words[0].isalpha() and words[1].replace("-", "").isalpha():
        status["container"], status["health"] = words[0], (None if words[1] == "none" else words[1])
    else:
        text = sections.get("container", "")
        status["container"] = "absent" if "No such" in text else None
        status["health"] = None
        if status["container"] is None:
            problems.append(f"docker: {_first_line(text) or 'no output'}")
    try:
        release = json.loads(sections.get("release") or "")
        model = release.get("model") or {}
        status["release"] = {
            "id": release.get("id"),
            "image": release.get("image"),
            "model": model.get("filename"),
            "model_sha256": model.get("sha256"),
        }
    except (ValueError, AttributeError):
        status["release"] = None
        problems.append(f"release: {_first_line(sections.get('release', '')) or 'no output'}")
    metrics_text = sections.get("metrics", "")
    code = next((line.split("=", 1)[1] for line in metrics_text.splitlines() if line.startswith("http_code=")), "")
    metrics = parse_metrics("\n".join(line for line in metrics_text.splitlines() if line.startswith("llamacpp:")))
    status["gen_tps"] = metrics.get("llamacpp:predicted_tokens_seconds")
    status["requests_processing"] = metrics.get("llamacpp:requests_processing")
    if code != "200":
        body = _first_line("\n".join(ln for ln in metrics_text.splitlines() if not ln.startswith("http_code=")))
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
    try:
        with connect(host, timeout) as conn:
            command = _script_command(STATUS_SCRIPT, host.server_port, host.container, host.config_dir)
            result = conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
    except Exception as exc:  # an unreachable host never breaks the table
        return {**base, "reachable": False, "error": describe_error(exc)}
    if "@@end" not in result.stdout:
        error = _first_line(result.stderr or result.stdout) or f"exit status {result.exited}"
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


def status_table(rows: list[dict[str, Any]]) -> str:
    header = ["HOST", "ADDRESS", "L4T", "POWER", "CLOCKS", "SERVER", "RELEASE", "MODEL", "GEN TOK/S", "UPTIME"]
    lines = [header]
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
                release.get("id") or "-",
                release.get("model") or "-",
                f"{gen:.1f}" if isinstance(gen, (int, float)) else "-",
                _uptime(row.get("uptime_s")),
            ]
        )
        notes += [f"{row['host']}: {problem}" for problem in row.get("problems", [])]
    # Unreachable rows (host, address, reason) take part in the widths of the first two columns only.
    widths = [max(len(line[i]) for line in lines if len(line) == len(header) or i < 2) for i in range(len(header))]
    out = []
    for line in lines:
        if len(line) == len(header):
            out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        else:  # unreachable: host and address columns, then the reason
            out.append("  ".join([line[0].ljust(widths[0]), line[1].ljust(widths[1]), line[2]]))
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def status_ok(rows: list[dict[str, Any]]) -> bool:
    return all(row["reachable"] and row.get("container") == "running" for row in rows)


# ------------------------------------------------------------------------------------------- commands


def cmd_status(inventory: Inventory, args: argparse.Namespace) -> int:
    rows = gather_status(inventory.resolve(args.target), args.timeout)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(status_table(rows))
    return 0 if status_ok(rows) else 1


def cmd_logs(inventory: Inventory, args: argparse.Namespace) -> int:
    if args.host not in inventory.hosts:
        raise CliError(f"no host named {args.host!r} in the inventory (logs takes one host)")
    host = inventory.hosts[args.host]
    command = _script_command(LOGS_SCRIPT, host.container, int(args.tail), "--follow" if args.follow else "")
    try:
        with connect(host, args.timeout) as conn:
            # A pty for --follow, so Ctrl-C reaches `docker logs` on the device.
            result = conn.run(command, warn=True, pty=args.follow, in_stream=None if args.follow else False)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        print(f"{host.name}: unreachable: {describe_error(exc)}", file=sys.stderr)
        return 1
    return 0 if result.exited == 0 else 1


def cmd_restart(inventory: Inventory, args: argparse.Namespace) -> int:
    hosts = inventory.resolve(args.target)
    for index, host in enumerate(hosts):
        started = time.monotonic()
        print(f"{host.name}: restarting {SERVICE} ...", flush=True)
        try:
            with connect(host, args.connect_timeout) as conn:
                command = _script_command(RESTART_SCRIPT, host.server_port, int(args.timeout))
                result = conn.run(command, hide=True, warn=True, timeout=args.timeout + 60, in_stream=False)
            ok, message = result.exited == 0, _first_line(result.stdout + "\n" + result.stderr, 200)
        except Exception as exc:
            ok, message = False, f"unreachable: {describe_error(exc)}"
        if not ok:
            rest = [h.name for h in hosts[index + 1 :]]
            print(f"{host.name}: FAILED: {message}", file=sys.stderr)
            if rest:
                print(f"stopped; not restarted: {', '.join(rest)}", file=sys.stderr)
            return 1
        print(f"{host.name}: {message} ({time.monotonic() - started:.0f}s in all)", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jetson-fleet", description="Status, logs and restarts of the fleet.")
    parser.add_argument(
        "-i",
        "--inventory",
        action="append",
        help=f"Ansible inventory (repeatable; default $ANSIBLE_INVENTORY or {DEFAULT_INVENTORY})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="one line per host: L4T, power, clocks, server, release, tok/s")
    status.add_argument("target", nargs="?", default=DEFAULT_GROUP, help=f"host or group (default {DEFAULT_GROUP})")
    status.add_argument("--json", action="store_true", help="JSON for scripts")
    status.add_argument("--timeout", type=float, default=15, help="seconds per host (connect and run), default 15")
    logs = commands.add_parser("logs", help="the server container's logs on one host")
    logs.add_argument("host")
    logs.add_argument("-f", "--follow", action="store_true", help="keep following (Ctrl-C stops)")
    logs.add_argument("--tail", type=int, default=100, help="lines from the end (default 100)")
    logs.add_argument("--timeout", type=float, default=15, help="connect timeout in seconds (default 15)")
    restart = commands.add_parser("restart", help="rolling restart: one host at a time, stop at the first failure")
    restart.add_argument("target", help="host or group")
    restart.add_argument("--timeout", type=float, default=300, help="seconds to wait for /health 200 (default 300)")
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
