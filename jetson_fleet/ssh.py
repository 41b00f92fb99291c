"""SSH to the devices with Fabric, host keys checked as OpenSSH would with the inventory's options."""

from __future__ import annotations

import os
import shlex
import socket
from typing import Any

from jetson_fleet.inventory import Host


def connect(host: Host, timeout: float) -> Any:
    """A Fabric Connection to the host (not yet opened)."""
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


def script_command(script: str, *args: object) -> str:
    """`sh -c SCRIPT sh ARGS...`, every part quoted: the script sees its arguments as $1, $2, ..."""
    return "sh -c " + shlex.quote(script) + " sh " + " ".join(shlex.quote(str(a)) for a in args)


def split_sections(output: str) -> dict[str, str]:
    """A remote script's output, each section introduced by a line `@@name` -> {name: its text, stripped}."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("@@"):
            current = sections.setdefault(line[2:].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def first_line(text: str, limit: int = 60) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:limit]


# Shell prelude of the remote scripts: sudo -n unless root, and `section NAME` on a line of its own (even after
# output without a final newline).
PRELUDE = r"""
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
section() { printf '\n@@%s\n' "$1"; }
"""
