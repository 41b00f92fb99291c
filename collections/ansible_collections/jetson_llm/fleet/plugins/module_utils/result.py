# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""AnsibleModule's fail_json and exit_json, typed as NoReturn (AnsibleModule itself is untyped for mypy)."""

from __future__ import annotations

from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule


def fail(module: AnsibleModule, msg: str, **extra: Any) -> NoReturn:
    """End the module with a failure (fail_json exits the process)."""
    module.fail_json(msg=msg, **extra)
    raise AssertionError("fail_json returned")


def done(module: AnsibleModule, **result: Any) -> NoReturn:
    """End the module with its result (exit_json exits the process)."""
    module.exit_json(**result)
    raise AssertionError("exit_json returned")
