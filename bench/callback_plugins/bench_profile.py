"""Benchmark callback: where a playbook run's time goes, as JSON (what profile_tasks and timer print, machine-read).

Each task's wall time runs from its start to the next task's start (as ansible.posix.profile_tasks measures it), summed
over its occurrences (a task of a serial play runs once per batch). Also the run's total (timer) and the recap per
host. Written to BENCH_PROFILE_FILE at the end of the run; enabled with ANSIBLE_CALLBACKS_ENABLED=...,bench_profile
and ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins. The pinned ansible-core ships neither profile_tasks nor timer
(they live in the ansible.posix collection), hence this one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_profile"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._started = time.monotonic()
        self._tasks: dict[str, dict[str, Any]] = {}
        self._current: str | None = None
        self._since = self._started

    def _close(self) -> None:
        now = time.monotonic()
        if self._current is not None:
            self._tasks[self._current]["seconds"] += now - self._since
        self._current, self._since = None, now

    def _start(self, task: Any) -> None:
        self._close()
        role = task._role.get_name() if task._role else ""
        name = f"{role} : {task.get_name()}" if role else task.get_name()
        entry = self._tasks.setdefault(task._uuid, {"task": name, "action": task.action, "seconds": 0.0, "runs": 0})
        entry["runs"] += 1
        self._current = task._uuid

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._start(task)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._close()
        path = os.environ.get("BENCH_PROFILE_FILE")
        if not path:
            return
        recap = {host: stats.summarize(host) for host in sorted(stats.processed)}
        tasks = sorted(self._tasks.values(), key=lambda entry: -entry["seconds"])
        for entry in tasks:
            entry["seconds"] = round(entry["seconds"], 3)
        result = {"seconds": round(time.monotonic() - self._started, 3), "recap": recap, "tasks": tasks}
        with open(path, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=1)
