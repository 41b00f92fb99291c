"""The Ansible inventory as the fleet CLI sees it: `ansible-inventory --list`, hosts, groups, SSH options.

Values are used literally (Jinja expressions are not evaluated: a connection variable holding one is refused when
its host is asked for). The llama_server settings of each host come from the role's defaults with the hostvars
taking precedence (jetson_fleet.settings).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jetson_fleet.settings import ServerSettings, SettingsError, server_settings

DEFAULT_INVENTORY = "inventory/hosts.yml"
DEFAULT_GROUP = "jetsons"


class CliError(Exception):
    """A usage error reported as one message; exit status 2."""


@dataclass
class Host:
    name: str
    address: str
    settings: ServerSettings
    user: str | None = None
    port: int = 22
    key_file: str | None = None
    known_hosts: list[str] = field(default_factory=list)
    strict_host_keys: str = "yes"
    connect_timeout: float | None = None
    hostvars: dict[str, Any] = field(default_factory=dict)

    @property
    def server_port(self) -> int:
        return self.settings.port

    @property
    def container(self) -> str:
        return self.settings.container

    @property
    def config_dir(self) -> str:
        return self.settings.config_dir


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
    except ValueError as exc:
        raise CliError(f"{name}: a port is not a number ({exc})") from None
    try:
        settings = server_settings(name, {key: value for key, value in hostvars.items() if value not in (None, "")})
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    return Host(
        name=name,
        address=str(var("ansible_host", "ansible_ssh_host") or name),
        settings=settings,
        user=var("ansible_user", "ansible_ssh_user"),
        port=port,
        key_file=os.path.expanduser(str(key_file)) if key_file else None,
        known_hosts=[os.path.expanduser(p) for p in ssh.get("userknownhostsfile", "").split() if p != "/dev/null"],
        strict_host_keys=strict,
        connect_timeout=float(timeout) if timeout and timeout.isdigit() else None,
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
