"""The llama_server role's settings for one host, resolved as Ansible would for the values the CLI needs.

Precedence (Ansible's, for what applies here): the role's defaults/main.yml < the inventory's hostvars < the
role's vars/main.yml. Only plain literals are taken from the role files (a Jinja expression there is skipped);
inventory values are literal anyway (the inventory module refuses Jinja where it matters).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jetson_fleet.repo import role_dir

ROLE = "llama_server"
# roles/llama_server/vars/main.yml: _llama_server_check_address (the checks reach a server listening on every
# address through loopback).
_LOOPBACK_FOR = ("0.0.0.0", "127.0.0.1", "::", "", "localhost")


class SettingsError(Exception):
    """A setting is missing or not of the type it needs; the message names the host and the variable."""


@functools.cache
def role_literals(role: str, which: str) -> dict[str, Any]:
    """The plain-literal variables of roles/<role>/<which>/main.yml (which: defaults or vars)."""
    path: Path = role_dir(role) / which / "main.yml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read the {role} role's {which} ({path}): {exc}") from None
    return {key: value for key, value in data.items() if not (isinstance(value, str) and "{{" in value)}


@dataclass(frozen=True)
class ServerSettings:
    """What status, logs and restart need of a host's llama_server."""

    port: int
    address: str  # where checks on the device reach the server
    container: str
    config_dir: str
    unit: str
    docker: str
    health_timeout: int
    health_delay: int
    smoke_prompt: str
    smoke_max_tokens: int
    smoke_timeout: int


def server_settings(host: str, hostvars: dict[str, Any]) -> ServerSettings:
    merged = {**role_literals(ROLE, "defaults"), **hostvars, **role_literals(ROLE, "vars")}

    def value(name: str, kind: type) -> Any:
        key = f"{ROLE}_{name}" if not name.startswith("_") else f"_{ROLE}{name}"
        if key not in merged:
            raise SettingsError(f"{host}: {key} is not set (not in the inventory, nor a literal in the role)")
        if isinstance(merged[key], str) and "{{" in merged[key]:
            raise SettingsError(
                f"{host}: {key} is a Jinja expression ({merged[key]}); jetson-fleet reads inventory values literally"
            )
        try:
            return kind(merged[key])
        except (TypeError, ValueError):
            what = name.strip("_").replace("_", " ")
            raise SettingsError(f"{host}: a {what} is not a number ({key}={merged[key]!r})") from None

    listen = value("host", str)
    return ServerSettings(
        port=value("port", int),
        address="127.0.0.1" if listen in _LOOPBACK_FOR else listen,
        container=value("container_name", str),
        config_dir=value("config_dir", str),
        unit=value("_unit", str),
        docker=value("_docker", str),
        health_timeout=value("health_timeout", int),
        health_delay=max(1, value("health_delay", int)),
        smoke_prompt=value("smoke_prompt", str),
        smoke_max_tokens=value("smoke_max_tokens", int),
        smoke_timeout=value("smoke_timeout", int),
    )
