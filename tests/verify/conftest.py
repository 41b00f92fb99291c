"""testinfra verification of a Jetson fleet configured by site.yml (real boards or jetsim).

Run against the inventory that site.yml used:

    pytest tests/verify --hosts=ansible://jetsons --ansible-inventory=inventory/hosts.yml

The expected values come from that inventory (group_vars and host_vars, through testinfra's ansible
backend: `host.ansible.get_variables()`), falling back to the role defaults in
roles/*/defaults/main.yml. An inventory value that is a Jinja template is rendered by Ansible on the
host (`ansible.builtin.debug var=...`). Commands that need root run through sudo (`host.sudo()`), so
the inventory user needs passwordless sudo, as site.yml does.

Without --hosts every test is skipped: these tests never run against the machine running pytest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def role_defaults() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted(REPO.glob("roles/*/defaults/main.yml")):
        merged.update(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return merged


ROLE_DEFAULTS = role_defaults()


class Settings:
    """The variables site.yml applied to one host: inventory first, then role defaults."""

    def __init__(self, host: Any) -> None:
        self._host = host
        self._inventory: dict[str, Any] = {}
        if host.backend.NAME == "ansible":
            self._inventory = host.ansible.get_variables()

    def __getitem__(self, name: str) -> Any:
        if name in self._inventory:
            value = self._inventory[name]
        elif name in ROLE_DEFAULTS:
            value = ROLE_DEFAULTS[name]
        else:
            raise KeyError(f"{name} is neither in the inventory nor in roles/*/defaults/main.yml")
        if isinstance(value, str) and "{{" in value:
            value = self._host.ansible("ansible.builtin.debug", f"var={name}", check=False)[name]
        return value


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("hosts"):
        return
    skip = pytest.mark.skip(reason="pass --hosts=ansible://jetsons --ansible-inventory=INVENTORY")
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(skip)


@pytest.fixture(scope="module")  # one inventory lookup per host and test file
def settings(host: Any) -> Settings:
    return Settings(host)
