#!/usr/bin/python
# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Keep the Jetson clocks pinned to the active power mode's maxima (jetson_clocks), re-pinning when they are not."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jetson_clocks
short_description: Keep the NVIDIA Jetson clocks pinned to the active power mode's maxima
version_added: "0.1.0"
description:
  - Reads C(jetson_clocks --show) and runs C(jetson_clocks) (with C(--fan) when O(fan)) only when the clocks are
    not pinned, that is when an online CPU or the GPU has a MinFreq other than its MaxFreq (nvpmodel sets MaxFreq to the
    mode's cap, jetson_clocks raises MinFreq to it), or an EMC rate that is not locked. With O(fan), also when a
    fan PWM is below 255 or nvfancontrol still controls the fan.
  - Every run of nvpmodel (C(nvpmodel.service) at boot, C(systemctl restart nvpmodel), a mode change from jtop or
    the command line) resets the clock floors; a unit that pinned them once stays "active (exited)" and does not
    notice. This module looks at the clocks themselves, so a re-run repairs them and reports RV(ignore:changed).
  - Fails when C(jetson_clocks) ran and the clocks are still not pinned, naming what is not.
author:
  - jetson-llm-fleet developers (!UNKNOWN)
options:
  binary:
    description: C(jetson_clocks) executable, a name looked up in C(/usr/bin), C(/usr/sbin) and PATH, or a path.
    type: str
    default: jetson_clocks
  fan:
    description: Also require (and set with C(jetson_clocks --fan)) the fan at full speed.
    type: bool
    default: false
  timeout:
    description: Seconds after which a single C(jetson_clocks) call is killed and the module fails.
    type: int
    default: 60
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Reads the clocks and reports whether they would be pinned; runs nothing else.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
notes:
  - C(jetson_clocks --fan) needs C(HOME); the module sets C(HOME=/root) when it is unset.
seealso:
  - module: jetson_llm.fleet.nvpmodel
"""

EXAMPLES = r"""
- name: Re-pin the clocks when nvpmodel ran since they were pinned
  jetson_llm.fleet.jetson_clocks:
    binary: /usr/bin/jetson_clocks
    fan: "{{ jetson_power_clocks_fan_max }}"
"""

RETURN = r"""
pinned:
  description: The clocks (and with O(fan) the fan) are pinned at the end.
  returned: success
  type: bool
  sample: true
problems:
  description: What was not pinned before the run (empty when nothing needed doing).
  returned: success
  type: list
  elements: str
  sample: ["cpu0 MinFreq=729600 MaxFreq=1984000", "GPU MinFreq=306000000 MaxFreq=1173000000"]
show:
  description: The last C(jetson_clocks --show) output.
  returned: success
  type: str
"""

import os
import subprocess
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.jetson_llm.fleet.plugins.module_utils.jetson import (
    jetson_clocks_fan_not_max,
    jetson_clocks_unpinned,
)
from ansible_collections.jetson_llm.fleet.plugins.module_utils.result import done, fail

BIN_DIRS = ["/usr/bin", "/usr/sbin"]


class Clocks:
    """Runs jetson_clocks with a timeout and HOME set."""

    def __init__(self, module: AnsibleModule, binary: str, timeout: int) -> None:
        self.module = module
        self.binary = binary
        self.timeout = timeout
        self.env = {**os.environ, "HOME": os.environ.get("HOME") or "/root"}

    def fail(self, msg: str, **extra: Any) -> NoReturn:
        fail(self.module, msg, **extra)

    def run(self, *args: str) -> str:
        argv = [self.binary, *args]
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.timeout,
                env=self.env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.fail(f"{' '.join(argv)} did not finish within {self.timeout} s")
        except OSError as exc:
            self.fail(f"cannot run {' '.join(argv)}: {exc}")
        if proc.returncode != 0:
            self.fail(f"{' '.join(argv)} failed with rc={proc.returncode}", stdout=proc.stdout, stderr=proc.stderr)
        return proc.stdout + proc.stderr

    def problems(self, fan: bool) -> tuple[str, list[str]]:
        show = self.run("--show")
        problems = jetson_clocks_unpinned(show)
        if fan:
            problems += jetson_clocks_fan_not_max(show)
        return show, problems


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "binary": {"type": "str", "default": "jetson_clocks"},
            "fan": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    params = module.params
    binary = module.get_bin_path(params["binary"], required=True, opt_dirs=BIN_DIRS)
    clocks = Clocks(module, binary, params["timeout"])
    show, problems = clocks.problems(params["fan"])
    if not problems:
        done(module, changed=False, pinned=True, problems=[], show=show)
    if module.check_mode:
        done(module, changed=True, pinned=False, problems=problems, show=show)
    clocks.run(*(["--fan"] if params["fan"] else []))
    show, left = clocks.problems(params["fan"])
    if left:
        clocks.fail(
            f"{binary}{' --fan' if params['fan'] else ''} ran, but the clocks are still not pinned: {'; '.join(left)}",
            problems=problems,
            show=show,
        )
    done(module, changed=True, pinned=True, problems=problems, show=show)


if __name__ == "__main__":
    main()
