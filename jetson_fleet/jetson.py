"""The collection's Jetson parsers (jetson_llm.fleet, plugins/module_utils/jetson.py) for the controller tools.

The collection is found where Ansible finds it: the collections_path of the repository's ansible.cfg. The
adapters below give the status table and the benchmark report the one value each of them shows.
"""

from __future__ import annotations

import sys

from jetson_fleet.repo import REPO, ansible_cfg_paths

for _path in ansible_cfg_paths("collections_path", "collections"):
    if str(_path) not in sys.path:
        sys.path.append(str(_path))

try:
    from ansible_collections.jetson_llm.fleet.plugins.module_utils import jetson as module_utils
except ImportError as exc:  # a copy of the package without its repository
    raise ImportError(
        "jetson_fleet needs the collection jetson_llm.fleet of its repository (collections_path of"
        f" {REPO / 'ansible.cfg'}): run it from a checkout, or install it with pip install -e"
    ) from exc

parse_clocks_pinned = module_utils.parse_jetson_clocks_pinned


def parse_l4t(text: str | None) -> str | None:
    """/etc/nv_tegra_release (`# R36 (release), REVISION: 4.3, ...`) -> "36.4.3"; None when not an L4T line."""
    release = module_utils.parse_nv_tegra_release(text)
    return str(release["version"]) if release else None


def parse_power_mode(nvpmodel_q: str | None) -> str | None:
    """`nvpmodel -q` output -> the mode name (`NV Power Mode: MAXN_SUPER`), None when it names none."""
    try:
        return str(module_utils.parse_nvpmodel_query(nvpmodel_q or "")["name"])
    except ValueError:
        return None


def backend_cell(backend: object) -> str:
    """A release record's `backend` in brief: "CUDA 29/29" (in use, layers on the GPU / layers); "?" when the
    record does not say (records older than the field)."""
    if not isinstance(backend, dict) or not backend.get("name"):
        return "?"
    gpu_layers, layers = backend.get("gpu_layers"), backend.get("layers")
    return f"{backend['name']} {'?' if gpu_layers is None else gpu_layers}/{'?' if layers is None else layers}"
