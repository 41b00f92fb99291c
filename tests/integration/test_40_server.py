"""llama-server on a 3-host jetsim fleet: rollout, rolling restart, canary rollback, on-demand rollback, an
unreachable host, reboot, API key.

The tests run in file order and share the fleet. jetsim serves the tiny test GGUF from its hub imitation and
runs the CPU build of llama.cpp; the role code path is the one of a real fleet (the jetsim inventory only says
that its internal network may be served without an API key: llama_server_open_access).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import harness
import pytest
from conftest import REPO, TIMINGS, Fleet, PlayResult, command, role, service

pytestmark = pytest.mark.jetsim
PORT = 8080
CONFIG = "/etc/llama-server"
BUILD = command("docker", "build")  # the compile, on the build host
LOAD = command("docker", "load")  # the image moved to a device
MODEL = role("hf_model")  # any change by hf_model means the model moved
RESTART = service("llama-server.service", "restarted")
KEY = "sk-jetsim-e2e-Hq72LmX0pW"


def _ok(result: PlayResult, hosts: list[str]) -> None:
    assert result.rc == 0, result.output[-6000:]
    for host in hosts:
        stats = result.recap[host]
        assert stats["failed"] == 0 and stats["unreachable"] == 0, f"{host}: {stats}\n{result.output[-3000:]}"


def _flat(result: PlayResult) -> str:
    return " ".join(result.output.split())


def _release(fleet: Fleet, host: str, name: str = "release.json") -> dict[str, object]:
    return dict(json.loads(fleet.exec(host, "cat", f"{CONFIG}/{name}")))


def _container(fleet: Fleet, host: str) -> dict[str, object]:
    return dict(json.loads(fleet.exec(host, "docker", "inspect", "llama-server"))[0])


def _http(fleet: Fleet, host: str, path: str, *curl: str) -> tuple[int, str]:
    out = fleet.exec(host, "curl", "-s", "-w", "\n%{http_code}", *curl, f"http://127.0.0.1:{PORT}{path}", check=False)
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


def _chat(fleet: Fleet, host: str, *curl: str) -> tuple[int, str]:
    payload = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    return _http(fleet, host, "/v1/chat/completions", "-H", "Content-Type: application/json", "-d", payload, *curl)


def _healthy(fleet: Fleet, host: str) -> bool:
    state = _container(fleet, host)["State"]
    assert isinstance(state, dict)
    return bool(state["Running"]) and state["Health"]["Status"] == "healthy" and _http(fleet, host, "/health")[0] == 200


def _recap(result: PlayResult) -> str:
    """The ROLLOUT RECAP the jetson_llm.fleet.rollout_recap callback prints when the run ends."""
    return result.output.split("ROLLOUT RECAP", 1)[1] if "ROLLOUT RECAP" in result.output else ""


def _ready_seconds(result: PlayResult) -> list[float]:
    return [float(s) for s in re.findall(r"ready in ([\d.]+) s", result.output)]


@pytest.fixture(scope="module")
def converged(fleet: Fleet) -> Fleet:
    # Earlier modules leave jetson-3 as another board and remove the models: converge the default fleet.
    host_json = json.loads(fleet.exec("jetson-3", "cat", "/etc/jetsim/host.json", check=False) or "{}")
    if host_json.get("variant") != "orin-nx-16-super":
        fleet.recreate("jetson-3", variant="orin-nx-16-super")
    result = fleet.playbook("site.yml", timing="server: site.yml converge")
    _ok(result, fleet.hosts)
    ready = _ready_seconds(result)
    if ready:
        TIMINGS["server: container start -> ready (max of hosts)"] = max(ready)
    return fleet


def test_every_host_serves_the_model(converged: Fleet) -> None:
    for host in converged.hosts:
        assert _healthy(converged, host), host
        code, body = _chat(converged, host)
        answer = json.loads(body)
        assert code == 200 and answer["usage"]["completion_tokens"] > 0 and "timings" in answer, body
        release = _release(converged, host)
        container = _container(converged, host)
        assert container["Args"] == release["args"] and container["Config"]["Image"] == release["image"]  # type: ignore[index]
        assert "--parallel" in release["args"]  # type: ignore[operator]
    # The pinned llama-server ACCEPTS every argument of the release (--help also lists removed flags): started with
    # them and a model that does not exist, it gets past argument parsing and fails only at the model load.
    release = _release(converged, "jetson-1")
    args = [str(arg) for arg in release["args"]]  # type: ignore[union-attr]
    args[args.index("--model") + 1] = "/nonexistent.gguf"
    out = converged.exec("jetson-1", "sh", "-c", " ".join(
        ["docker", "run", "--rm", "--network=none", str(release["image"]), *args, "2>&1"]), check=False)  # fmt: skip
    assert "failed to load model" in out or "failed to open" in out, out[-2000:]
    assert not re.search(r"invalid argument|has been removed|error while handling argument", out), out[-2000:]


def test_parallel_change_is_a_rolling_restart_without_build_or_download(converged: Fleet) -> None:
    before = {host: _release(converged, host) for host in converged.hosts}

    result = converged.playbook("site.yml", "-e", "llama_server_parallel=4", timing="server: rolling restart (3 hosts)")

    _ok(result, converged.hosts)
    assert "changed" not in result.ran(BUILD).values() and "changed" not in result.ran(LOAD).values()
    assert not result.changed_batches(MODEL), result.changed_batches(MODEL)
    # One batch at a time, canary first: [1, 25%, 100%] of 3 hosts.
    assert result.changed_batches(RESTART) == [["jetson-1"], ["jetson-2"], ["jetson-3"]], result.output[-3000:]
    for host in converged.hosts:
        release = _release(converged, host)
        args = release["args"]
        assert isinstance(args, list)
        assert args[args.index("--parallel") + 1] == "4"
        assert release["image"] == before[host]["image"] and release["model"] == before[host]["model"]
        assert _release(converged, host, "previous.json")["id"] == before[host]["id"]
        assert _healthy(converged, host), host


def test_canary_fault_is_rolled_back_and_stops_the_rollout(converged: Fleet) -> None:
    before = {host: _release(converged, host) for host in converged.hosts}
    started = {host: _container(converged, host)["State"]["StartedAt"] for host in converged.hosts}  # type: ignore[index]
    bad = json.dumps({"llama_server_extra_args": ["--no-such-flag"], "llama_server_parallel": 4,
                      "llama_server_health_timeout": 20})  # fmt: skip

    result = converged.playbook("site.yml", "-e", bad, timing="server: canary fault + automatic rollback")

    assert result.rc != 0
    assert result.recap["jetson-1"]["failed"] == 1 and result.recap["jetson-1"]["rescued"] == 1, result.recap
    previous = before["jetson-1"]["id"]
    rolled_back = rf"jetson-1: release \w+ .*failed the health gate .*Rolled back to release {previous}"
    assert re.search(rolled_back, _flat(result)), result.output[-4000:]
    # The failed start and the rollback, both on the canary only.
    assert result.changed_batches(RESTART) == [["jetson-1"], ["jetson-1"]], result.output[-3000:]
    recap = _recap(result)
    assert re.search(rf"^jetson-1 : ROLLED BACK to release {previous} \(healthy\)", recap, re.M), recap
    assert re.search(r"^jetson-2 : not reached", recap, re.M) and re.search(r"^jetson-3 : not reached", recap, re.M)
    assert _release(converged, "jetson-1") == before["jetson-1"]
    assert "--no-such-flag" not in _container(converged, "jetson-1")["Args"]  # type: ignore[operator]
    assert _healthy(converged, "jetson-1")
    for host in ("jetson-2", "jetson-3"):  # never reached
        assert _release(converged, host) == before[host]
        assert _container(converged, host)["State"]["StartedAt"] == started[host]  # type: ignore[index]
        assert host not in result.ran(RESTART)


def test_gpu_required_on_a_cpu_release_is_refused_and_rolled_back(converged: Fleet) -> None:
    # jetsim runs the CPU build: a release that must run on the GPU cannot pass the gate's backend proof.
    before = {host: _release(converged, host) for host in converged.hosts}
    started = {host: _container(converged, host)["State"]["StartedAt"] for host in converged.hosts}  # type: ignore[index]
    forced = json.dumps({"llama_server_require_gpu": True, "llama_server_parallel": 2})

    result = converged.playbook("site.yml", "-e", forced, timing="server: GPU required on a CPU release")

    assert result.rc != 0 and result.recap["jetson-1"]["rescued"] == 1, result.recap
    flat = _flat(result)
    assert re.search(r"must run on the GPU but llama-server reports CPU with 0/\? layers", flat), result.output[-4000:]
    assert "Likely cause: no CUDA backend" in flat and "llama_cpp_build_cuda: true" in flat
    assert re.search(rf"Rolled back to release {before['jetson-1']['id']}", flat)
    assert _release(converged, "jetson-1") == before["jetson-1"] and _healthy(converged, "jetson-1")
    assert before["jetson-1"]["backend"]["name"] == "CPU"  # type: ignore[index]
    for host in ("jetson-2", "jetson-3"):  # never reached
        assert _release(converged, host) == before[host]
        assert _container(converged, host)["State"]["StartedAt"] == started[host]  # type: ignore[index]


def test_release_with_its_own_port_name_and_draft_rolls_back_to_its_own(converged: Fleet) -> None:
    # A release that moved the port and renamed the container, with speculative decoding (the test GGUF is its own
    # draft: same vocabulary). Rolling back must gate the restored release on ITS port and container.
    before = _release(converged, "jetson-1")
    model = str(before["model"]["path"])  # type: ignore[index]
    converged.exec("jetson-1", "install", "-D", "-m", "0644", model, "/opt/llm/draft/tiny-draft.gguf")
    moved = json.dumps({"llama_server_port": 8091, "llama_server_container_name": "llama-alt",
                        "llama_server_draft_model": "/opt/llm/draft/tiny-draft.gguf"})  # fmt: skip
    try:
        result = converged.playbook("site.yml", "--limit", "jetson-1", "--tags", "llama_server", "-e", moved,
                                    timing="server: release on another port and name, with a draft model")  # fmt: skip
        _ok(result, ["jetson-1"])
        release = _release(converged, "jetson-1")
        assert release["container"] == "llama-alt" and release["url"].endswith(":8091")  # type: ignore[union-attr]
        assert "--spec-draft-model" in release["args"]  # type: ignore[operator]
        out = converged.exec("jetson-1", "docker", "ps", "--format", "{{.Names}}")
        assert out.split() == ["llama-alt"], out  # the old container went with the old release

        result = converged.playbook("playbooks/rollback.yml", "--limit", "jetson-1")

        _ok(result, ["jetson-1"])
        assert _release(converged, "jetson-1")["id"] == before["id"]
        assert converged.exec("jetson-1", "docker", "ps", "--format", "{{.Names}}").split() == ["llama-server"]
        assert _healthy(converged, "jetson-1")
        restarts = converged.exec("jetson-1", "systemctl", "show", "-p", "NRestarts", "--value", "llama-server")
        assert restarts.strip() == "0"
    finally:
        converged.exec("jetson-1", "rm", "-f", "/opt/llm/draft/tiny-draft.gguf")


def test_rollback_playbook_swaps_to_the_previous_release(converged: Fleet) -> None:
    current, previous = _release(converged, "jetson-2"), _release(converged, "jetson-2", "previous.json")

    result = converged.playbook("playbooks/rollback.yml", "--limit", "jetson-2", timing="server: rollback.yml (1 host)")

    _ok(result, ["jetson-2"])
    now = _release(converged, "jetson-2")
    assert now["id"] == previous["id"] and _release(converged, "jetson-2", "previous.json")["id"] == current["id"]
    args = _container(converged, "jetson-2")["Args"]
    assert isinstance(args, list) and args[args.index("--parallel") + 1] == "8"
    assert _healthy(converged, "jetson-2")
    ready = _ready_seconds(result)
    if ready:
        TIMINGS["server: rollback start -> ready"] = ready[0]


def test_rollback_without_a_previous_release_changes_nothing(converged: Fleet) -> None:
    converged.exec("jetson-3", "mv", f"{CONFIG}/previous.json", f"{CONFIG}/previous.json.bak")
    try:
        result = converged.playbook("playbooks/rollback.yml", "--limit", "jetson-3")
    finally:
        converged.exec("jetson-3", "mv", f"{CONFIG}/previous.json.bak", f"{CONFIG}/previous.json")

    assert result.rc != 0 and result.recap["jetson-3"]["changed"] == 0
    assert "jetson-3: cannot roll back: no previous release is recorded" in _flat(result), result.output[-3000:]


def test_unreachable_host_mid_rollout_honours_max_fail_percentage(converged: Fleet) -> None:
    # Once the canary (jetson-1) passed its gate, jetson-3 goes away; batch 2 = jetson-2 + jetson-3, where one
    # unreachable host of two is 50 %: not above fleet_max_fail_percentage 50, so jetson-2 is still rolled out.
    fault = {
        "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "tests/fixtures/callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "jetson_llm.fleet.rollout_recap,jetsim_fault",
        "JETSIM_FAULT_AFTER_TASK": "Check the completion",
        "JETSIM_FAULT_ON_HOST": "jetson-1",
        "JETSIM_FAULT_COMMAND": json.dumps([sys.executable, str(REPO / "tests/jetsim/jetsim"), "stop", "jetson-3"]),
    }
    variables = json.dumps({"fleet_serial": [1, "100%"], "fleet_max_fail_percentage": 50, "llama_server_parallel": 2})
    try:
        result = converged.playbook("site.yml", "-e", variables, env=fault, timing="server: rollout, one host lost")

        assert result.rc != 0
        assert result.recap["jetson-3"]["unreachable"] == 1, result.recap
        assert result.recap["jetson-1"]["failed"] == 0 and result.recap["jetson-2"]["failed"] == 0
        assert re.search(r"jetson-3: .*server not deployed in this run", _flat(result)), result.output[-3000:]
        assert re.search(r"^jetson-3 : UNREACHABLE", _recap(result), re.M), _recap(result)
        assert re.search(r"^jetson-2 : release \w+ healthy, restarted, ready in", _recap(result), re.M), _recap(result)
        for host in ("jetson-1", "jetson-2"):
            args = _release(converged, host)["args"]
            assert isinstance(args, list) and args[args.index("--parallel") + 1] == "2", host
            assert _healthy(converged, host)
    finally:
        harness.start_host("jetson-3")


def _wait(condition, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    """Poll condition() until it holds or the deadline passes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1)
    return bool(condition())


def test_reboot_brings_the_server_back_without_ansible(converged: Fleet) -> None:
    before = converged.boot_id("jetson-3")  # stopped and started by the previous test: reboot it too
    converged.reboot("jetson-3")

    assert converged.boot_id("jetson-3") != before
    assert _wait(lambda: _healthy(converged, "jetson-3"), 180), _container(converged, "jetson-3")["State"]
    assert converged.clocks("jetson-3").get("pinned") is True
    assert converged.power_mode("jetson-3") == "MAXN_SUPER"


def test_api_key_protects_v1_and_never_shows(converged: Fleet, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.yml"  # stands in for an ansible-vault file
    secrets.write_text(f"llama_server_api_key: {KEY}\n")

    result = converged.playbook("site.yml", "-vvv", "-e", f"@{secrets}", timing="server: rollout with API key, -vvv")

    _ok(result, converged.hosts)
    assert KEY not in result.output
    for host in converged.hosts:
        assert _chat(converged, host)[0] == 401
        assert _chat(converged, host, "-H", f"Authorization: Bearer {KEY}")[0] == 200
        assert _http(converged, host, "/health")[0] == 200  # open for health checks
        assert KEY not in converged.exec(host, "ps", "-eo", "args")
        assert converged.exec(host, "stat", "-c", "%a %u", f"{CONFIG}/api-key").split() == ["600", "10001"]
        assert KEY not in json.dumps(_container(converged, host)["Config"])

    # Back to the fleet's settings (no key): the other modules expect an open server.
    result = converged.playbook("site.yml", "-e", '{"fleet_serial": ["100%"]}')
    _ok(result, converged.hosts)
    assert not converged.exists("jetson-1", f"{CONFIG}/api-key")

    # The previous release served with the key, whose file is gone: a rollback must refuse, not serve keyless.
    result = converged.playbook("playbooks/rollback.yml", "--limit", "jetson-1")
    assert result.rc != 0 and result.recap["jetson-1"]["changed"] == 0, result.recap
    assert re.search(r"cannot roll back: .*missing: /etc/llama-server/api-key", _flat(result)), result.output[-3000:]
    assert _chat(converged, "jetson-1")[0] == 200 and _healthy(converged, "jetson-1")
