"""container_runtime, run for real on localhost against a daemon.json in a temporary directory.

nvidia-ctk is jetsim's emulator of the NVIDIA Container Toolkit 1.16.2 (JetPack 6) CLI, which prints what the real
one prints (tests/jetsim/rootfs/usr/bin/nvidia-ctk, checked against the real code in test_jetsim_nvidia.py).
`docker` and `systemctl` are fakes on PATH that record their calls: `systemctl restart docker` makes the fake
daemon load the daemon.json of that moment, and `docker info` reports the runtimes of the loaded one, so the
role's own check sees whether the restart really happened. One ansible-playbook run plays every scenario (one
play each, failures caught by a rescue that records the message); a second run is the check mode one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "container_runtime"
NVIDIA_CTK = REPO / "tests/jetsim/rootfs/usr/bin/nvidia-ctk"
NVIDIA_RUNTIME = {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}
# What Docker 28.0.1 prints on L4T R36.4.3 without iptable_raw (moby/moby#49557).
DOCKER_28_ERROR = (
    "docker: Error response from daemon: failed to set up container networking: driver failed programming external "
    "connectivity on endpoint smoke (3c5f): (iptables failed: iptables --wait -t raw -A PREROUTING -p tcp -d "
    "172.17.0.2 --dport 9 ! -i docker0 -j DROP: iptables v1.8.7 (legacy): can't initialize iptables table `raw': "
    "Table does not exist (do you need to insmod?)\nPerhaps iptables or your kernel needs to be upgraded.\n"
    " (exit status 3))"
)

NO_DOCKER_INIT = 'docker: Error response from daemon: exec: "docker-init": executable file not found in $PATH: unknown.'

FAKE_DOCKER = r"""#!/usr/bin/env python3
import json, os, shlex, sys
state = os.environ["FAKE_DOCKER_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as log:
    log.write(json.dumps(["docker", *args]) + "\n")
def loaded():
    try:
        with open(os.path.join(state, "loaded.json")) as handle:
            return json.loads(handle.read() or "{}")
    except FileNotFoundError:
        return {}
images = os.path.join(state, "images")
if args[:1] == ["info"]:
    config = loaded()
    runtimes = {"io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"}, **config.get("runtimes", {})}
    print(json.dumps({"ServerVersion": "28.0.1", "Runtimes": runtimes,
                      "DefaultRuntime": config.get("default-runtime", "runc")}))
elif args[:2] == ["image", "inspect"]:
    sys.exit(0 if os.path.exists(images) and args[-1] in open(images).read().split() else 1)
elif args[:1] == ["import"]:
    for index, arg in enumerate(args[:-1]):  # Docker parses --change as a Dockerfile line: LABEL k=v needs quoting
        if arg in ("-c", "--change") and args[index + 1].startswith("LABEL "):
            if any("=" not in word for word in shlex.split(args[index + 1][6:])):
                sys.exit("Error response from daemon: Syntax error - can't find = in LABEL")
    with open(images, "a") as handle:
        handle.write(args[-1] + "\n")
    print("sha256:" + "0" * 64)
elif args[:1] == ["run"]:
    runtime = args[args.index("--runtime") + 1]
    if runtime == "runc" and os.environ.get("FAKE_DOCKER_BRIDGE_ERROR"):
        print(os.environ["FAKE_DOCKER_BRIDGE_ERROR"], file=sys.stderr)
        sys.exit(125)
    if runtime not in loaded().get("runtimes", {}) and runtime != "runc":
        print(f"docker: Error response from daemon: unknown or invalid runtime name: {runtime}.", file=sys.stderr)
        sys.exit(125)
    print("tini version 0.19.0")
else:
    sys.exit(f"fake docker: unexpected {args}")
"""

FAKE_SYSTEMCTL = r"""#!/usr/bin/env python3
import json, os, shutil, sys
state = os.environ["FAKE_DOCKER_STATE"]
args = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
with open(os.path.join(state, "calls.jsonl"), "a") as log:
    log.write(json.dumps(["systemctl", *args]) + "\n")
if args[:1] == ["show"]:
    print("Id=docker.service\nLoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled")
elif args[:1] == ["is-enabled"]:
    print("enabled")
elif args[:1] in (["restart"], ["start"]):
    daemon_json = os.environ["FAKE_DAEMON_JSON"]
    if os.path.exists(daemon_json):
        shutil.copyfile(daemon_json, os.path.join(state, "loaded.json"))
"""

RECORDER = r"""
import json, os
from ansible.plugins.callback import CallbackBase
class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record_changes"
    CALLBACK_NEEDS_ENABLED = True
    play = ""
    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name()
    def v2_runner_on_ok(self, result):
        if result._result.get("changed"):
            with open(os.environ["RECORD_CHANGES_FILE"], "a") as out:
                out.write(json.dumps([self.play, result._host.get_name(), result._task.get_name()]) + "\n")
"""

# Each scenario is a host (local connection) of one play, so that they run side by side:
# name -> (initial daemon.json text or None for no file, role variables, fake docker environment)
SCENARIOS: dict[str, tuple[str | None, dict[str, Any], dict[str, str]]] = {
    "empty_file": ("", {}, {}),
    "no_file_smoke_off": (None, {"container_runtime_smoke_test": False}, {}),
    "user_edited": (
        json.dumps(
            {"bip": "10.203.250.1/24", "log-opts": {"max-file": "2"}, "runtimes": {"crun": {"path": "/usr/bin/crun"}}}
        ),
        {"container_runtime_daemon_options": {"log-opts": {"max-size": "10m"}}},
        {},
    ),
    "not_default_removes_nvidia_default": (
        json.dumps({"default-runtime": "nvidia", "runtimes": NVIDIA_RUNTIME, "data-root": "/ssd/docker"}),
        {"container_runtime_nvidia_default": False},
        {},
    ),
    "not_default_keeps_another_default": (
        json.dumps({"default-runtime": "crun", "runtimes": {"crun": {"path": "/usr/bin/crun"}}}),
        {"container_runtime_nvidia_default": False},
        {},
    ),
    "no_gpu_host": ('{"bip": "10.203.250.1/24"}', {"container_runtime_nvidia": False}, {}),
    "docker_28_bridge": ("", {}, {"FAKE_DOCKER_BRIDGE_ERROR": DOCKER_28_ERROR}),
    "no_docker_init": ("", {}, {"FAKE_DOCKER_BRIDGE_ERROR": NO_DOCKER_INIT}),
    "broken_json": ('{"bip": "10.203.250.1/24",', {}, {}),
    "json_array": ("[]", {}, {}),
}
RECORD_FAILURE = {
    "dest": "{{ scenario_dir }}/failure.txt",
    "mode": "0644",
    "content": "{{ ansible_failed_result.msg }}",
}
ROLE_TASKS = [
    {
        "block": [{"ansible.builtin.include_role": {"name": str(ROLE)}}],
        "rescue": [{"name": "Record the failure", "ansible.builtin.copy": RECORD_FAILURE}],
    }
]


def _write_fakes(root: Path) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (root / "callbacks").mkdir()
    (root / "callbacks/record_changes.py").write_text(RECORDER)
    for name, text in (("docker", FAKE_DOCKER), ("systemctl", FAKE_SYSTEMCTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _host(directory: Path, role_vars: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    daemon_json = directory / "daemon.json"
    return {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "scenario_dir": str(directory),
        "scenario_env": {"FAKE_DOCKER_STATE": str(directory), "FAKE_DAEMON_JSON": str(daemon_json), **env},
        "container_runtime_daemon_json": str(daemon_json), "container_runtime_nvidia_ctk": str(NVIDIA_CTK),
        "container_runtime_install": False, **role_vars,
    }  # fmt: skip


def _play(name: str, hosts: str) -> dict[str, Any]:
    return {"name": name, "hosts": hosts, "gather_facts": False, "environment": "{{ scenario_env }}",
            "tasks": ROLE_TASKS}  # fmt: skip


def _setup(root: Path, name: str, initial: str | None) -> Path:
    directory = root / name
    directory.mkdir()
    if initial is not None:
        (directory / "daemon.json").write_text(initial)
        (directory / "loaded.json").write_text(initial)  # what the running daemon was started with
    return directory


def _run(root: Path, hosts: dict[str, Any], plays: list[dict[str, Any]], bin_dir: Path, *extra: str) -> list[Any]:
    """Run the plays; [play, host, task] for each task that changed something."""
    run = f"run-{len(list(root.glob('run-*.yml')))}"
    (root / f"{run}.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    (root / f"{run}.inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    record = root / f"{run}.changes"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORKS": "10",
           "ANSIBLE_CALLBACK_PLUGINS": str(root / "callbacks"), "ANSIBLE_CALLBACKS_ENABLED": "record_changes",
           "RECORD_CHANGES_FILE": str(record), "PATH": f"{bin_dir}:{os.environ['PATH']}"}  # fmt: skip
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(root / f"{run}.inventory.yml"), *extra,
         str(root / f"{run}.yml")],
        cwd=REPO, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


class Outcome:
    def __init__(self, directory: Path, changed: list[str]) -> None:
        self.directory = directory
        self.changed = changed
        path = directory / "daemon.json"
        self.text = path.read_text() if path.exists() else None
        calls = directory / "calls.jsonl"
        self.calls = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
        failure = directory / "failure.txt"
        self.failure = failure.read_text() if failure.exists() else ""

    @property
    def config(self) -> Any:
        return json.loads(self.text or "{}")

    def ran(self, *prefix: str) -> list[list[str]]:
        return [call for call in self.calls if call[: len(prefix)] == list(prefix)]


def _titles(changes: list[Any], play: str, host: str) -> list[str]:
    titles = [task.split(" : ", 1)[-1] for p, h, task in changes if (p, h) == (play, host)]
    return [title for title in titles if title != "Record the failure"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("container_runtime")
    bin_dir = _write_fakes(root)
    hosts = {}
    for name, (initial, role_vars, env) in SCENARIOS.items():
        hosts[name] = _host(_setup(root, name, initial), role_vars, env)
    # The first scenario's host converges once more: nothing may change.
    changes = _run(root, hosts, [_play("converge", "all"), _play("again", "empty_file")], bin_dir)
    result = {name: Outcome(root / name, _titles(changes, "converge", name)) for name in SCENARIOS}
    result["empty_file_again"] = Outcome(root / "empty_file", _titles(changes, "again", "empty_file"))
    # Check mode on a host without Docker (a JetPack image with the toolkit but no docker CLI yet).
    name = "check_without_docker"
    host = _host(_setup(root, name, None), {"container_runtime_install": True, "container_runtime_packages": ["bash"]},
                 {})  # fmt: skip
    changes = _run(root, {name: host}, [_play("check", "all")], bin_dir, "--check", "-e",
                   f"_container_runtime_docker_cli={root / 'absent/docker'}")  # fmt: skip
    result[name] = Outcome(root / name, _titles(changes, "check", name))
    return result


def test_empty_daemon_json_gets_the_nvidia_runtime_and_one_restart(outcomes: dict[str, Outcome]) -> None:
    for name in ("empty_file", "no_file_smoke_off"):
        outcome = outcomes[name]
        assert not outcome.failure, outcome.failure
        assert outcome.config == {"default-runtime": "nvidia", "runtimes": NVIDIA_RUNTIME}, name
        assert outcome.ran("systemctl", "restart") == [["systemctl", "restart", "docker"]], name


def test_second_converge_changes_nothing_and_smoke_test_reports_no_change(outcomes: dict[str, Outcome]) -> None:
    first, again = outcomes["empty_file"], outcomes["empty_file_again"]
    assert first.changed == ["Write the daemon configuration", "Restart docker", "Import the empty smoke test image"]
    assert again.changed == []
    # The calls file is shared by both runs: one restart and one import in all, two smoke runs each.
    assert len(again.ran("systemctl", "restart")) == 1 and len(again.ran("docker", "import")) == 1
    runs = again.ran("docker", "run")
    assert len(runs) == 4
    bridge, nvidia = runs[0], runs[1]
    assert bridge[bridge.index("--runtime") + 1] == "runc" and bridge[bridge.index("--network") + 1] == "bridge"
    assert bridge[bridge.index("--publish") + 1] == "127.0.0.1::9"
    assert nvidia[nvidia.index("--runtime") + 1] == "nvidia" and "NVIDIA_VISIBLE_DEVICES=all" in nvidia
    assert "--init" in bridge and bridge[-3:] == ["jetson-llm-fleet/runtime-smoke:empty", "/sbin/docker-init",
                                                  "--version"]  # fmt: skip


def test_user_edited_daemon_json_keeps_every_key(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["user_edited"]
    assert outcome.config == {
        "bip": "10.203.250.1/24",
        "log-opts": {"max-file": "2", "max-size": "10m"},
        "runtimes": {"crun": {"path": "/usr/bin/crun"}, **NVIDIA_RUNTIME},
        "default-runtime": "nvidia",
    }


def test_nvidia_not_default_removes_the_nvidia_default_only(outcomes: dict[str, Outcome]) -> None:
    removed = outcomes["not_default_removes_nvidia_default"]
    assert removed.config == {"runtimes": NVIDIA_RUNTIME, "data-root": "/ssd/docker"}
    assert removed.ran("systemctl", "restart")
    kept = outcomes["not_default_keeps_another_default"]
    assert kept.config == {"default-runtime": "crun", "runtimes": {"crun": {"path": "/usr/bin/crun"}, **NVIDIA_RUNTIME}}


def test_host_without_gpu_is_left_alone_and_smoke_tests_the_bridge_only(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["no_gpu_host"]
    assert outcome.text == '{"bip": "10.203.250.1/24"}' and not outcome.ran("systemctl", "restart")
    runs = outcome.ran("docker", "run")
    assert [run[run.index("--runtime") + 1] for run in runs] == ["runc"]


def test_smoke_test_can_be_skipped(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["no_file_smoke_off"]
    assert outcome.config["default-runtime"] == "nvidia"
    assert not outcome.ran("docker", "run") and not outcome.ran("docker", "import")


def test_docker_28_without_iptable_raw_fails_with_cause_and_fix(outcomes: dict[str, Outcome]) -> None:
    message = outcomes["docker_28_bridge"].failure
    assert message.startswith("docker_28_bridge: Docker 28.0.1 cannot start a container on its default bridge"), message
    for needle in ("Table does not exist", "moby/moby#49557", "iptable_raw", "JetPack 6.2.1", "27.5.1",
                   "container_runtime_smoke_test: false"):  # fmt: skip
        assert needle in message, needle


def test_other_bridge_failures_are_not_blamed_on_docker_28(outcomes: dict[str, Outcome]) -> None:
    message = outcomes["no_docker_init"].failure
    assert "docker-init" in message and "journalctl -u docker" in message, message
    assert "moby/moby#49557" not in message and "container_runtime_smoke_test: false" in message


@pytest.mark.parametrize("name", ["broken_json", "json_array"])
def test_daemon_json_that_is_not_an_object_fails_before_any_change(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes[name]
    assert "is not a JSON object" in outcome.failure and str(outcome.directory / "daemon.json") in outcome.failure
    assert outcome.text == SCENARIOS[name][0]
    assert outcome.changed == [] and outcome.calls == []  # not even nvidia-ctk's dry run reached docker


def test_check_mode_on_a_host_without_docker_does_not_fail(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["check_without_docker"]
    assert not outcome.failure, outcome.failure
    assert outcome.text is None and outcome.calls == []
    assert "Write the daemon configuration" in outcome.changed  # what a real run would do
