# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Filters ``jetson_llm.fleet.jetpack_for_l4t``, ``nvpmodel_mode_names`` and ``cuda_runs_on_driver``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.jetson_llm.fleet.plugins.module_utils import jetson


def jetpack_for_l4t(l4t: Any) -> str | None:
    """JetPack release for an L4T version string or an ``l4t`` facts dict (None when unknown)."""
    if l4t is None:
        return None
    if isinstance(l4t, Mapping):
        l4t = l4t.get("version")
    return jetson.jetpack_for_l4t(str(l4t)) if l4t else None


def nvpmodel_mode_names(conf: Any) -> list[str]:
    """``["MAXN_SUPER (0)", "10W (1)", ...]`` from a parsed nvpmodel conf (or its ``modes`` list)."""
    if conf is None:
        return []
    if isinstance(conf, list):
        conf = {"modes": conf}
    if not isinstance(conf, Mapping) or not isinstance(conf.get("modes", []), list):
        kind = type(conf).__name__
        raise AnsibleFilterError(f"nvpmodel_mode_names expects a parsed nvpmodel conf, got {kind}")
    try:
        return jetson.mode_names(conf)
    except (KeyError, TypeError) as exc:
        raise AnsibleFilterError(f"nvpmodel_mode_names: malformed mode entry ({exc})") from exc


def cuda_runs_on_driver(image_cuda: Any, driver_cuda: Any) -> bool | None:
    """True when images built with CUDA ``image_cuda`` run on a driver for ``driver_cuda``; None when unknown."""
    if not image_cuda or not driver_cuda:
        return None
    return jetson.cuda_runs_on_driver(str(image_cuda), str(driver_cuda))


class FilterModule:
    """Jetson filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "jetpack_for_l4t": jetpack_for_l4t,
            "nvpmodel_mode_names": nvpmodel_mode_names,
            "cuda_runs_on_driver": cuda_runs_on_driver,
        }
