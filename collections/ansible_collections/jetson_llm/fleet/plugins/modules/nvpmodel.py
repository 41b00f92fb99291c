#!/usr/bin/python
# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Set the Jetson power mode by name with nvpmodel, without ever answering a reboot prompt."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvpmodel
short_description: Set the NVIDIA Jetson power mode by name
version_added: "0.1.0"
description:
  - Resolves the power mode O(mode) by NAME in the nvpmodel configuration (IDs differ between
    boards, DTBs and vendor images), queries the current mode with C(nvpmodel -q) and switches with
    C(nvpmodel -m ID) when it differs.
  - C(nvpmodel) asks interactively for a reboot when the number of online CPU cores changes. The module
    answers C(no) on stdin, so nothing hangs and the board is not rebooted; it then returns
    RV(reboot_required=true) with RV(ignore:changed=false) (the mode did not change yet) and the caller
    reboots and confirms the mode.
  - C(nvpmodel -q) reports the mode of its status file (C(/var/lib/nvpmodel/status)), not what the hardware runs.
    A board whose C(nvpmodel.service) failed at boot keeps a status naming one mode while the CPUs, GPU and
    power-gating masks are those of another. The module therefore also reads C(nvpmodel -q --verbose) (REAL_VAL against
    CONF_VAL per setting) and C(systemctl is-failed) of O(service); the mode counts as set only when the status
    names the target, the hardware matches its table entry and the service did not fail. Otherwise it applies the
    mode again with C(nvpmodel -m ID).
  - Every C(nvpmodel) call is bounded by O(timeout).
author:
  - jetson-llm-fleet developers (!UNKNOWN)
options:
  mode:
    description: Power mode NAME as written in the configuration, for example V(MAXN_SUPER), V(25W) or V(15W).
    type: str
    required: true
  conf:
    description:
      - nvpmodel configuration used to resolve the mode name. It must be the file that C(nvpmodel) itself
        uses (the module does not pass C(-f)).
    type: path
    default: /etc/nvpmodel.conf
  binary:
    description: C(nvpmodel) executable, a name looked up in C(/usr/sbin), C(/usr/bin) and PATH, or a path.
    type: str
    default: nvpmodel
  timeout:
    description: Seconds after which a single C(nvpmodel) call is killed and the module fails.
    type: int
    default: 60
  service:
    description:
      - systemd unit that applies the mode at boot; its failed state is reported in RV(service_failed) and makes
        the mode count as not set. Empty to skip the check (no systemd).
    type: str
    default: nvpmodel.service
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details:
      - Reports the change and predicts RV(reboot_required) from O(conf) (online CPU core counts and the GPU
        power-gating masks TPC_PG_MASK, FBP_PG_MASK of the two modes, or the hardware's mismatches).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
notes:
  - A mode set with C(nvpmodel -m) persists across reboots and power cycles.
seealso:
  - module: jetson_llm.fleet.jetson_facts
"""

EXAMPLES = r"""
- name: Select the power mode
  jetson_llm.fleet.nvpmodel:
    mode: "{{ jetson_power_mode }}"
  register: jetson_nvpmodel_result

- name: Reboot when the new mode changes the number of online CPU cores
  ansible.builtin.reboot:
    reboot_timeout: 900
  when: jetson_nvpmodel_result.reboot_required

- name: Apply the mode after the reboot (no core count change any more)
  jetson_llm.fleet.nvpmodel:
    mode: "{{ jetson_power_mode }}"
  when: jetson_nvpmodel_result.reboot_required
"""

RETURN = r"""
previous:
  description: Mode reported by C(nvpmodel -q) before any change.
  returned: success
  type: dict
  sample: {"id": 2, "name": "15W"}
current:
  description:
    - Mode reported by C(nvpmodel -q) at the end (unchanged when a reboot is required).
    - In check mode the predicted mode (the target, or the previous mode when a reboot would be required).
  returned: success
  type: dict
  sample: {"id": 0, "name": "MAXN_SUPER"}
target:
  description: Requested mode resolved in O(conf).
  returned: success
  type: dict
  sample: {"id": 0, "name": "MAXN_SUPER", "cpu_online": 8}
reboot_required:
  description:
    - True when C(nvpmodel) asked for a reboot to apply the mode (the prompt was declined and the mode is
      unchanged), or in check mode when the online CPU core count or a GPU power-gating mask would change (then
      with RV(ignore:changed=true)).
  returned: success
  type: bool
  sample: false
modes:
  description: Modes defined in O(conf).
  returned: success
  type: list
  elements: dict
  sample: [{"id": 0, "name": "MAXN_SUPER", "cpu_online": 8}, {"id": 1, "name": "10W", "cpu_online": 4}]
applied:
  description:
    - Whether the hardware matched the table entry of the mode the status names, before any change (from
      C(nvpmodel -q --verbose)); null when nvpmodel printed no settings.
  returned: success
  type: bool
  sample: true
mismatches:
  description: Settings whose hardware value contradicted the table, before any change.
  returned: success
  type: list
  elements: str
  sample: ["CPU_ONLINE CORE_4 is 0, the mode sets 1"]
service_failed:
  description: O(service) was in the failed state before any change; null when not checked.
  returned: success
  type: bool
  sample: false
reboot_reasons:
  description: Why the switch needs a reboot (core count, TPC_PG_MASK, FBP_PG_MASK), as predicted from O(conf).
  returned: success
  type: list
  elements: str
  sample: ["online CPU cores 4 -> 8"]
stdout:
  description: Standard output of the last C(nvpmodel) call.
  returned: always
  type: str
stderr:
  description: Standard error of the last C(nvpmodel) call.
  returned: always
  type: str
"""


import os
import subprocess
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.jetson_llm.fleet.plugins.module_utils.jetson import (
    UnknownPowerModeError,
    mode_summaries,
    nvpmodel_mismatches,
    output_requests_reboot,
    parse_nvpmodel_conf,
    parse_nvpmodel_query,
    parse_nvpmodel_verbose,
    reboot_reasons,
    resolve_mode,
)
from ansible_collections.jetson_llm.fleet.plugins.module_utils.result import fail

BIN_DIRS = ["/usr/sbin", "/usr/bin"]
DECLINE_REBOOT = "no\n"


class Runner:
    """Runs nvpmodel with a timeout, keeping the output of the last call for the result."""

    def __init__(self, module: AnsibleModule, binary: str, timeout: int) -> None:
        self.module = module
        self.binary = binary
        self.timeout = timeout
        self.stdout = ""
        self.stderr = ""

    def fail(self, msg: str, **extra: Any) -> NoReturn:
        fail(self.module, msg, stdout=self.stdout, stderr=self.stderr, **extra)

    def run(self, *args: str) -> int:
        argv = [self.binary, *args]
        try:
            proc = subprocess.run(
                argv,
                input=DECLINE_REBOOT,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            self.stdout, self.stderr = _as_text(exc.stdout), _as_text(exc.stderr)
            self.fail(f"{' '.join(argv)} did not finish within {self.timeout} s")
        except OSError as exc:
            self.fail(f"cannot run {' '.join(argv)}: {exc}")
        self.stdout, self.stderr = proc.stdout, proc.stderr
        return proc.returncode

    def query(self) -> dict[str, Any]:
        rc = self.run("-q")
        if rc != 0:
            self.fail(f"{self.binary} -q failed with rc={rc}", rc=rc)
        try:
            return parse_nvpmodel_query(self.stdout + "\n" + self.stderr)
        except ValueError as exc:
            self.fail(str(exc))

    def hardware_mismatches(self) -> tuple[bool | None, list[str]]:
        """(applied, mismatches) from `nvpmodel -q --verbose`; (None, []) when it lists no settings."""
        stdout, stderr = self.stdout, self.stderr
        rc = self.run("-q", "--verbose")
        entries = parse_nvpmodel_verbose(self.stdout + "\n" + self.stderr) if rc == 0 else []
        self.stdout, self.stderr = stdout, stderr
        if not entries:
            return None, []
        mismatches = nvpmodel_mismatches(entries)
        return not mismatches, mismatches


def service_failed(module: AnsibleModule, unit: str) -> bool | None:
    """`systemctl is-failed UNIT`: True when failed, None without systemctl or without a unit to check."""
    systemctl = module.get_bin_path("systemctl") if unit else None
    if not systemctl:
        return None
    rc, _out, _err = module.run_command([systemctl, "is-failed", "--quiet", unit])
    return rc == 0


def _as_text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


def load_conf(module: AnsibleModule, path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError as exc:
        fail(module, f"cannot read nvpmodel configuration {path}: {exc}")
    try:
        return parse_nvpmodel_conf(text)
    except ValueError as exc:
        fail(module, f"cannot parse nvpmodel configuration {path}: {exc}")


def resolve_target(module: AnsibleModule, conf: dict[str, Any], name: str, path: str) -> dict[str, Any]:
    try:
        mode = resolve_mode(conf, name)
    except UnknownPowerModeError as exc:
        real = os.path.realpath(path)
        where = path if real == path else f"{path} (-> {real})"
        fail(
            module,
            f"power mode {name!r} is not defined in {where}; available modes: "
            f"{', '.join(exc.available)}. Set jetson_power_mode to one of these names.",
            available_modes=exc.available,
            modes=mode_summaries(conf),
        )
    return {"id": mode["id"], "name": mode["name"], "cpu_online": mode["cpu_online"]}


def apply_mode(runner: Runner, target: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Run nvpmodel -m (declining any reboot prompt); return (mode reported afterwards, reboot required)."""
    rc = runner.run("-m", str(target["id"]))
    stdout, stderr = runner.stdout, runner.stderr
    reboot = output_requests_reboot(stdout + "\n" + stderr)
    if rc != 0 and not reboot:
        runner.fail(f"{runner.binary} -m {target['id']} failed with rc={rc}", rc=rc)
    current = runner.query()
    runner.stdout, runner.stderr = stdout, stderr
    if not reboot and current["id"] != target["id"]:
        runner.fail(
            f"nvpmodel still reports {current['name']} ({current['id']}) after switching to "
            f"{target['name']} ({target['id']})"
        )
    if not reboot:
        applied, mismatches = runner.hardware_mismatches()
        if applied is False:
            runner.fail(
                f"nvpmodel -m {target['id']} reported success, but the hardware does not run "
                f"{target['name']}: {'; '.join(mismatches)}",
                mismatches=mismatches,
            )
    return current, reboot


def predict(
    conf: dict[str, Any], previous: dict[str, Any], target: dict[str, Any], mismatches: list[str]
) -> tuple[dict, bool]:
    """Check mode: (mode expected afterwards, reboot required)."""
    if previous["id"] == target["id"]:  # re-applying the same mode: a reboot when the hardware's core set differs
        reboot = any(problem.startswith("CPU_ONLINE") or "_PG_MASK" in problem for problem in mismatches)
    else:
        reboot = bool(reboot_reasons(conf, previous["id"], target["id"]))
    current = previous if reboot else {"id": target["id"], "name": target["name"]}
    return current, reboot


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "mode": {"type": "str", "required": True},
            "conf": {"type": "path", "default": "/etc/nvpmodel.conf"},
            "binary": {"type": "str", "default": "nvpmodel"},
            "timeout": {"type": "int", "default": 60},
            "service": {"type": "str", "default": "nvpmodel.service"},
        },
        supports_check_mode=True,
    )
    params = module.params
    conf = load_conf(module, params["conf"])
    target = resolve_target(module, conf, params["mode"], params["conf"])
    binary = module.get_bin_path(params["binary"], required=True, opt_dirs=BIN_DIRS)
    runner = Runner(module, binary, params["timeout"])
    previous = runner.query()
    applied, mismatches = runner.hardware_mismatches()
    failed_unit = service_failed(module, params["service"])
    reasons = reboot_reasons(conf, previous["id"], target["id"])

    if previous["id"] == target["id"] and applied is not False and not failed_unit:
        current, reboot, changed = previous, False, False
    elif module.check_mode:
        current, reboot = predict(conf, previous, target, mismatches)
        changed = True
    else:
        current, reboot = apply_mode(runner, target)
        changed = not reboot
    module.exit_json(
        changed=changed,
        previous=previous,
        current=current,
        target=target,
        reboot_required=reboot,
        reboot_reasons=reasons,
        applied=applied,
        mismatches=mismatches,
        service_failed=failed_unit,
        modes=mode_summaries(conf),
        stdout=runner.stdout,
        stderr=runner.stderr,
    )


if __name__ == "__main__":
    main()
