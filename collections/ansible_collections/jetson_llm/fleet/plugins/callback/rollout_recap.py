"""Rollout recap: one line per host after a run that deployed llama-server, even when the rollout stopped.

A failed batch ends the whole playbook, so a summary play at the end never runs just when it matters most.
This callback collects, while the run goes on, what the llama_server role publishes (the fact
llama_server_status), the last failure and unreachability of each host, and prints them when the run ends.
Hosts of the rollout play that the run never reached (a stopped rollout) are named as such.
"""

from __future__ import annotations

DOCUMENTATION = """
name: rollout_recap
type: aggregate
short_description: one line per host on the llama-server release after a rollout
description:
  - After a run in which the llama_server role ran, prints per host the release, its health and time to ready,
    whether it was rolled back, or why the host failed, was unreachable or was not reached.
requirements:
  - enabled in ansible.cfg (callbacks_enabled = jetson_llm.fleet.rollout_recap)
"""

from typing import Any  # noqa: E402

from ansible.plugins.callback import CallbackBase  # noqa: E402

STATUS_FACT = "llama_server_status"
ROLLOUT_ROLE = "llama_server"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "jetson_llm.fleet.rollout_recap"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, dict[str, Any]] = {}
        self.failure: dict[str, str] = {}
        self.unreachable: dict[str, str] = {}
        self.rollout_hosts: list[str] = []
        self.rollout_ran = False
        self.play: Any = None

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self.play = play

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        role = getattr(task, "_role", None)
        if self.rollout_ran or role is None or role.get_name() != ROLLOUT_ROLE:
            return
        self.rollout_ran = True
        manager = self.play.get_variable_manager() if self.play is not None else None
        if manager is not None:  # every host of the rollout play (--limit applies), not only this serial batch
            hosts = manager._inventory.get_hosts(self.play.hosts, ignore_restrictions=True)
            self.rollout_hosts = [host.get_name() for host in hosts]

    def v2_runner_on_ok(self, result: Any) -> None:
        facts = result._result.get("ansible_facts") or {}
        if STATUS_FACT in facts:
            self.status[result._host.get_name()] = dict(facts[STATUS_FACT])

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if not ignore_errors:
            self.failure[result._host.get_name()] = " ".join(str(result._result.get("msg", "failed")).split())[:400]

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self.unreachable[result._host.get_name()] = " ".join(str(result._result.get("msg", "")).split())[:200]

    def line(self, host: str) -> str:
        if host in self.unreachable:
            return f"UNREACHABLE ({self.unreachable[host]})"
        status = self.status.get(host)
        failure = self.failure.get(host)
        if status and status.get("rolled_back"):
            text = f"ROLLED BACK to release {status['release']['id']} ({status.get('health', '?')})"
            if status.get("failed_release"):
                text += f" after release {status['failed_release']} failed the health gate (host failed: see above)"
            return text
        if failure:
            return f"FAILED: {failure}"
        if status:
            ready = status.get("ready_seconds")
            restarted = f", restarted, ready in {ready} s" if status.get("restarted") and ready else ", unchanged"
            release = status["release"]
            health = status.get("health", "?")
            backend = status.get("backend", "?")
            return f"release {release['id']} {health}{restarted} | {backend} | {release['image']} | {release['model']}"
        return "not reached (the rollout stopped before its batch, or it was not part of this run)"

    def v2_playbook_on_stats(self, stats: Any) -> None:
        if not self.rollout_ran:
            return
        self._display.banner("ROLLOUT RECAP")
        hosts = self.rollout_hosts or sorted(set(self.status) | set(self.failure) | set(self.unreachable))
        for host in hosts:
            self._display.display(f"{host} : {self.line(host)}")
