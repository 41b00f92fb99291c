"""Fixtures for end-to-end tests on a jetsim fleet (emulated Orin NX hosts in privileged containers).

Needs root (dockerd, debootstrap, routes). The fleet is started once per session and removed at the end.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests/jetsim"))

import harness  # noqa: E402

RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.M,
)
TIMINGS: dict[str, float] = {}


@dataclass
class PlayResult:
    rc: int
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)

    def changed(self) -> dict[str, int]:
        return {host: stats["changed"] for host, stats in self.recap.items()}

    def ran(self, what: Call) -> dict[str, str]:
        """host -> status (ok, changed, skipped, failed, unreachable) of the last task that matched what."""
        return {event["host"]: event["status"] for event in self.events if what(event)}

    def changed_batches(self, what: Call) -> list[list[str]]:
        """Hosts on which each occurrence of a matching task changed something, in order (one per serial batch)."""
        batches: dict[int, list[str]] = {}
        for event in self.events:
            if what(event) and event["status"] == "changed":
                batches.setdefault(event["n"], []).append(event["host"])
        return [batches[n] for n in sorted(batches)]


# What a task did, from the jetsim_events callback (tests/fixtures/callback_plugins): independent of task titles.
Event = dict[str, Any]
Call = Callable[[Event], bool]


def command(*subcommand: str) -> Call:
    """A command task running `<program> <subcommand...>`, e.g. command("docker", "build"); or a shell task whose
    command line runs it (the image build runs in the background through a shell, tasks/build.yml)."""

    def matches(event: Event) -> bool:
        argv = event["args"].get("argv") or []
        if event["action"].endswith("shell"):  # a shell task: the words of its command line, anywhere in it
            words = re.findall(r"[^\s;|&()]+", str(event["args"].get("cmd") or event["args"].get("_raw_params") or ""))
            return any(words[i : i + len(subcommand)] == list(subcommand) for i in range(len(words)))
        return (
            event["action"].endswith("command")
            and len(argv) > len(subcommand) - 1
            and [Path(str(argv[0])).name, *map(str, argv[1 : len(subcommand)])] == list(subcommand)
        )

    return matches


def service(name: str, state: str) -> Call:
    """A systemd_service task bringing the unit name (with or without .service) to state."""
    units = {name, name.removesuffix(".service"), f"{name}.service"}
    return lambda event: (
        event["action"].endswith(("systemd_service", "systemd"))
        and event["args"].get("name") in units
        and event["args"].get("state") == state
    )


def role(name: str) -> Call:
    return lambda event: event["role"] == name


@dataclass
class Fleet:
    inventory: Path
    hosts: list[str]

    def playbook(
        self, playbook: str, *args: str, timing: str | None = None, env: dict[str, str] | None = None
    ) -> PlayResult:
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0", **(env or {})}  # fmt: skip
        callbacks = env.get("ANSIBLE_CALLBACKS_ENABLED", "jetson_llm.fleet.rollout_recap")
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl", prefix="jetsim-events-") as events:
            env.update(
                ANSIBLE_CALLBACK_PLUGINS=str(REPO / "tests/fixtures/callback_plugins"),
                ANSIBLE_CALLBACKS_ENABLED=f"{callbacks},jetsim_events",
                JETSIM_EVENTS_FILE=events.name,
            )
            started = time.monotonic()
            proc = subprocess.run(
                ["ansible-playbook", "-i", str(self.inventory), playbook, *args],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
            )  # fmt: skip
            seconds = time.monotonic() - started
            recorded = [json.loads(line) for line in events.read().splitlines() if line.strip()]
        if timing:
            TIMINGS[timing] = round(seconds, 1)
        output = proc.stdout + proc.stderr
        recap = {  # the fleet's hosts; the summary play's localhost is left out
            m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
            for m in RECAP.finditer(output)
            if m["host"] != "localhost"
        }
        return PlayResult(proc.returncode, output, recap, seconds, recorded)

    @functools.cached_property
    def docker(self) -> harness.Docker:
        return harness.ensure_daemon()

    def exec(self, host: str, *command: str, check: bool = True, input: str | None = None) -> str:
        """Run a command on a host through the container runtime (a back door independent of SSH)."""
        if input is not None:
            return self.docker("exec", "-i", harness.container(host), *command, check=check, input=input)
        return self.docker("exec", harness.container(host), *command, check=check)

    def boot_id(self, host: str) -> str:
        return self.exec(host, "cat", "/proc/sys/kernel/random/boot_id").strip()

    def power_mode(self, host: str) -> str:
        for line in self.exec(host, "nvpmodel", "-q").splitlines():
            if line.startswith("NV Power Mode:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"nvpmodel -q on {host} printed no power mode")

    def clocks(self, host: str) -> dict[str, object]:
        return json.loads(self.exec(host, "cat", "/run/jetsim/clocks.json", check=False) or "{}")

    def exists(self, host: str, path: str) -> bool:
        return self.exec(host, "sh", "-c", f"test -e {path} && echo yes", check=False).strip() == "yes"

    def reboot(self, host: str) -> None:
        """Reboot from inside (systemd), then wait for the new boot to finish."""
        harness.reboot_host(host)

    def recreate(self, host: str, **settings: str) -> None:
        harness.recreate(host, settings.get("variant"), settings.get("power_mode"))


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("jetsim needs root (dockerd, debootstrap, routes)")


@pytest.fixture(scope="session")
def fleet() -> Iterator[Fleet]:
    _require_root()
    started = time.monotonic()
    inventory = harness.up(3, "orin-nx-16-super", {"jetson-3": {"power_mode": "15W"}})
    TIMINGS["jetsim up (3 hosts)"] = round(time.monotonic() - started, 1)
    try:
        yield Fleet(inventory, ["jetson-1", "jetson-2", "jetson-3"])
    finally:
        harness.down()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("jetsim timings (seconds)")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name:45} {seconds:8.1f}")
