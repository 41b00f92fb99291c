"""Per-host checks of the llama-server deployment (llama_server role).

See conftest.py for how to run them and where the expected values come from. HTTP requests run on the device
against its own loopback, through a small Python script run with sudo that reads the API key file itself when
one is configured, so the key never appears on a command line.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

RELEASE_FILE = "release.json"
# Runs on the device: one HTTP request to the server, the API key (if any) read from its file.
HTTP_SCRIPT = r"""
import json, os, sys, urllib.request, urllib.error
url, body, key_file = sys.argv[1], sys.argv[2], sys.argv[3]
request = urllib.request.Request(url, data=body.encode() if body else None, method="POST" if body else "GET")
request.add_header("Content-Type", "application/json")
if os.path.exists(key_file):
    request.add_header("Authorization", "Bearer " + open(key_file).read().strip())
try:
    with urllib.request.urlopen(request, timeout=120) as response:
        status, text = response.status, response.read().decode()
except urllib.error.HTTPError as error:
    status, text = error.code, error.read().decode()
print(json.dumps({"status": status, "body": text}))
"""


def inspect(host: Any, name: str) -> dict[str, Any]:
    with host.sudo():
        out = host.run(f"docker inspect {shlex.quote(name)}")
    assert out.rc == 0, f"no container {name}: {out.stderr}"
    return dict(json.loads(out.stdout)[0])


def http(host: Any, settings: Any, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    address = settings["llama_server_host"]
    address = "127.0.0.1" if address in ("0.0.0.0", "::", "", "localhost") else address
    url = f"http://{address}:{settings['llama_server_port']}{path}"
    key_file = f"{settings['llama_server_config_dir']}/api-key"
    args = " ".join(shlex.quote(a) for a in (HTTP_SCRIPT, url, json.dumps(body) if body else "", key_file))
    with host.sudo():
        out = host.run(f"python3 -c {args}")
    assert out.rc == 0, out.stderr
    result = json.loads(out.stdout)
    return int(result["status"]), str(result["body"])


@pytest.fixture(scope="module")
def container(host: Any, settings: Any) -> dict[str, Any]:
    return inspect(host, settings["llama_server_container_name"])


@pytest.fixture(scope="module")
def release(host: Any, settings: Any) -> dict[str, Any]:
    with host.sudo():
        return dict(json.loads(host.file(f"{settings['llama_server_config_dir']}/{RELEASE_FILE}").content_string))


def test_container_running_and_healthy(container: dict[str, Any]) -> None:
    assert container["State"]["Running"], container["State"]
    assert container["State"]["Health"]["Status"] == "healthy", container["State"]["Health"]["Log"][-1:]


def test_service_restarts_it_and_starts_at_boot(host: Any) -> None:
    show = host.check_output("systemctl show -p Restart -p UnitFileState -p ActiveState llama-server.service")
    state = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    assert state == {"Restart": "always", "UnitFileState": "enabled", "ActiveState": "active"}


def test_service_is_not_crash_looping(host: Any) -> None:
    # NRestarts counts systemd's automatic restarts since the last deliberate start (a deploy or a reboot resets
    # it): a release that crashes, or that the liveness probe found hung, shows here while /health may answer.
    show = host.check_output("systemctl show -p NRestarts -p Result llama-server.service")
    state = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    assert state == {"NRestarts": "0", "Result": "success"}, f"{state}: see journalctl -u llama-server -t llama-server"


def test_backend_is_the_one_the_release_requires(release: dict[str, Any]) -> None:
    # What llama-server itself reported at load, recorded by the gate (see the README: how the GPU is proven).
    backend = release.get("backend") or {}
    assert backend.get("name") in ("CUDA", "CPU"), f"release {release['id']} has no recorded backend: {backend}"
    if release.get("require_gpu"):
        assert backend["name"] == "CUDA" and backend["gpu_layers"] == backend["layers"], backend


def test_runs_as_non_root_without_privileges(container: dict[str, Any], settings: Any) -> None:
    assert container["Config"]["User"] == str(settings["llama_server_user"])
    assert not container["Config"]["User"].startswith("0")
    assert "no-new-privileges" in container["HostConfig"]["SecurityOpt"]
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    log = container["HostConfig"]["LogConfig"]
    assert log["Type"] == settings["llama_server_log_driver"]
    if log["Type"] == "journald":  # kept after the container is gone: journalctl -t llama-server
        assert log["Config"].get("tag") == "llama-server"
    else:
        assert log["Config"].get("max-size") == settings["llama_server_log_max_size"]


def test_model_mounted_read_only(container: dict[str, Any], release: dict[str, Any]) -> None:
    mounts = {mount["Destination"]: mount for mount in container["Mounts"]}
    model = mounts[f"/models/{release['model']['filename']}"]
    assert model["Source"] == release["model"]["path"] and model["RW"] is False


def test_port_listening(host: Any, settings: Any) -> None:
    address = settings["llama_server_host"] or "0.0.0.0"
    assert host.socket(f"tcp://{address}:{settings['llama_server_port']}").is_listening


def test_health_answers_ok(host: Any, settings: Any) -> None:
    status, body = http(host, settings, "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_models_lists_the_model(host: Any, settings: Any, release: dict[str, Any]) -> None:
    status, body = http(host, settings, "/v1/models")
    assert status == 200, body
    alias = settings["llama_server_alias"] or release["model"]["filename"]
    assert alias in [model["id"] for model in json.loads(body)["data"]]


def test_metrics_exposed(host: Any, settings: Any) -> None:
    if not settings["llama_server_metrics"]:
        pytest.skip("llama_server_metrics is false")
    status, body = http(host, settings, "/metrics")
    assert status == 200 and "llamacpp:prompt_tokens_total" in body and "llamacpp:tokens_predicted_total" in body


def test_completion_works(host: Any, settings: Any) -> None:
    body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}
    status, text = http(host, settings, "/v1/chat/completions", body)
    assert status == 200, text
    answer = json.loads(text)
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"]["completion_tokens"] > 0 and answer["timings"]["predicted_n"] > 0


def test_release_matches_the_inventory(
    host: Any, settings: Any, container: dict[str, Any], release: dict[str, Any]
) -> None:
    expected = {
        "ctx_size": int(settings["llama_server_ctx_size"]),
        "n_gpu_layers": str(settings["llama_server_n_gpu_layers"]),
        "parallel": int(settings["llama_server_parallel"]),
        "batch_size": int(settings["llama_server_batch_size"]),
        "ubatch_size": int(settings["llama_server_ubatch_size"]),
        "flash_attn": str(settings["llama_server_flash_attn"]),
        "port": int(settings["llama_server_port"]),
    }
    recorded = {key: release["settings"][key] for key in expected}
    recorded["n_gpu_layers"] = str(recorded["n_gpu_layers"])
    assert recorded == expected
    # threads "auto" = the cores the power mode keeps online, resolved at deploy time.
    threads = str(settings["llama_server_threads"])
    if threads == "auto":
        assert int(release["settings"]["threads"]) >= 1
    else:
        assert release["settings"]["threads"] == int(threads)
    # What runs is what is recorded: image, arguments, model bytes.
    assert container["Config"]["Image"] == release["image"]
    assert container["Args"] == release["args"]
    with host.sudo():
        digest = host.check_output(f"sha256sum {shlex.quote(release['model']['path'])}").split()[0]
    assert digest == release["model"]["sha256"]


# Character devices every container gets from Docker itself; anything else in the container's /dev was passed in
# (by the NVIDIA runtime's CSV mode on a Jetson: /dev/nvmap, /dev/nvhost-*, /dev/nvgpu/igpu0/*, or --device).
DOCKER_DEFAULT_DEVICES = {"null", "zero", "full", "random", "urandom", "tty", "console", "ptmx"}
# Runs on the device (sudo): the llama-server process's credentials from /proc/<pid>/status, and every character
# device under its /dev as it sees it (its mount namespace, through /proc/<pid>/root), as JSON.
DEVICES_SCRIPT = r"""
import json, os, stat, sys
pid = sys.argv[1]
status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
uid, gid = int(status["Uid"].split()[1]), int(status["Gid"].split()[1])
groups = [int(g) for g in status["Groups"].split()]
base = f"/proc/{pid}/root/dev"
nodes = []
for folder, dirs, files in os.walk(base):
    dirs[:] = [d for d in dirs if d not in ("pts", "shm", "mqueue")]
    for name in files:
        info = os.lstat(os.path.join(folder, name))
        if stat.S_ISCHR(info.st_mode):
            path = "/dev" + os.path.join(folder, name)[len(base):]
            nodes.append({"path": path, "uid": info.st_uid, "gid": info.st_gid, "mode": stat.S_IMODE(info.st_mode)})
print(json.dumps({"uid": uid, "gid": gid, "groups": groups, "nodes": nodes}))
"""


def _can_read_write(node: dict[str, Any], uid: int, groups: set[int]) -> bool:
    """The kernel's permission check for open(O_RDWR) without capabilities (the container drops them all)."""
    if node["uid"] == uid:
        bits = node["mode"] >> 6
    elif node["gid"] in groups:
        bits = node["mode"] >> 3
    else:
        bits = node["mode"]
    return bits & 0o6 == 0o6


def test_server_process_can_open_every_gpu_device_node(host: Any, container: dict[str, Any], settings: Any) -> None:
    # Issue 11: a non-root server without the group that owns the GPU nodes (root:video 0660 on L4T) cannot open
    # them, so CUDA init fails and llama-server serves from the CPU while /health still answers.
    name = settings["llama_server_container_name"]
    with host.sudo():
        top = host.check_output(f"docker top {shlex.quote(name)} -eo pid,comm")
        pids = [line.split()[0] for line in top.splitlines()[1:] if line.split()[1:] == ["llama-server"]]
        assert pids, f"no llama-server process in {name}: {top}"
        seen = json.loads(host.check_output(f"python3 -c {shlex.quote(DEVICES_SCRIPT)} {pids[0]}"))
    passed = [node for node in seen["nodes"] if node["path"].removeprefix("/dev/") not in DOCKER_DEFAULT_DEVICES]
    if not passed:
        # The NVIDIA runtime passes the nodes only to a container that asks for them (the toolkit's rule): CUDA
        # images set NVIDIA_VISIBLE_DEVICES, or are "legacy" (CUDA_VERSION without NVIDIA_REQUIRE_CUDA).
        env = dict(item.partition("=")[::2] for item in container["Config"]["Env"] or [])
        devices = [item.strip() for item in env.get("NVIDIA_VISIBLE_DEVICES", "").split(",") if item.strip()]
        legacy = "NVIDIA_VISIBLE_DEVICES" not in env and env.get("CUDA_VERSION") and not env.get("NVIDIA_REQUIRE_CUDA")
        asked = bool(legacy) or (bool(devices) and "void" not in devices)
        runtime = container["HostConfig"]["Runtime"]
        assert not (asked and runtime == "nvidia"), f"{name} asks for GPU devices, the nvidia runtime passed none"
        pytest.skip(f"no device node passed into {name} (runtime {runtime}, GPU devices asked for: {asked})")
    groups = {seen["gid"], *seen["groups"]}
    denied = [node for node in passed if not _can_read_write(node, seen["uid"], groups)]
    assert not denied, (
        f"llama-server (uid {seen['uid']}, groups {sorted(groups)}) cannot open for read+write: "
        + ", ".join(f"{n['path']} ({n['uid']}:{n['gid']} {n['mode']:o})" for n in denied)
        + ". Fix: start the container with --group-add for the group owning them (llama_server_extra_groups)."
    )
