"""Where the repository's Ansible content is, as its ansible.cfg says (roles_path, collections_path)."""

from __future__ import annotations

import configparser
import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def ansible_cfg_paths(key: str, default: str) -> tuple[Path, ...]:
    """The directories of one path setting of [defaults] in the repository's ansible.cfg (relative to it)."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "ansible.cfg")
    value = config.get("defaults", key, fallback=default)
    return tuple((REPO / Path(part).expanduser()).resolve() for part in value.split(":") if part.strip())


def role_dir(name: str) -> Path:
    """The first roles_path directory holding the role (ansible.cfg's order), else the first candidate."""
    candidates = [path / name for path in ansible_cfg_paths("roles_path", "roles")]
    return next((path for path in candidates if path.is_dir()), candidates[0])
