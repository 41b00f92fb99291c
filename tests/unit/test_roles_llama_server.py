"""llama_server: the release the role derives from its variables, rendered by Ansible itself on localhost.

One ansible-playbook run renders every scenario (one play each): the llama-server and docker arguments, the
run script (executed through `sh -n` and parsed back into argv) and the HEALTHCHECK command, which is run for
real under bash against a local HTTP server answering 200 or 503.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "llama_server"
MODEL = {"path": "/opt/llm/models/" + "a" * 64 + "/tiny.gguf", "filename": "tiny.gguf", "sha256": "a" * 64}
KEY = "sk-unit-test-key-8d1f"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SCENARIOS: dict[str, dict[str, Any]] = {
    # What deploy.yml passes on an Orin NX 16GB in MAXN_SUPER (8 cores online), with the GPU nodes' group found.
    "defaults": {"llama_server_mode_cpus": 8, "_llama_server_gpu_gids": ["44"]},
    "ten_watt_fake_docker": {"llama_server_mode_cpus": 4, "llama_server_extra_groups": ["render", 1000]},
    "api_key_and_limits": {"llama_server_api_key": KEY, "llama_server_memory_limit": "12g", "llama_server_port": 9931},
    "draft_cache_extra": {
        "llama_server_draft_model": "/opt/llm/draft/small.gguf",
        "llama_server_cache_reuse": 256,
        "llama_server_extra_args": ["--temp", "0.7", "--seed", 42],
        "llama_server_load_mode": "mmap+mlock",
        "llama_server_cache_ram_mib": 0,
        "llama_server_cont_batching": False,
        "llama_server_kv_unified": False,
        "llama_server_docker_runtime": "",
        "llama_server_threads": 6,
        "llama_server_log_driver": "json-file",
    },
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("llama_server")
    plays = []
    for name, overrides in SCENARIOS.items():
        release = {"id": "0123456789ab", "image": "jetson-llm-fleet/llama-server:b1-x", "model": MODEL,
                   "flags_digest": "f" * 12, "args": "{{ _llama_server_args }}",
                   "docker_args": "{{ _llama_server_docker_args }}"}  # fmt: skip
        plays.append({
            "name": name, "hosts": "localhost", "gather_facts": False,
            "vars_files": [str(ROLE / "vars/main.yml")],
            "vars": {**DEFAULTS, **overrides, "_llama_server_model": MODEL, "_llama_server_release": release},
            "tasks": [
                {"name": "Render the release", "ansible.builtin.copy": {
                    "dest": str(out / f"{name}.json"), "mode": "0644",
                    "content": "{{ {'args': _llama_server_args, 'docker': _llama_server_docker_args, "
                               "'health': _llama_server_health_cmd, 'settings': _llama_server_settings, "
                               "'mounts': _llama_server_release_mounts, "
                               "'keyed': _llama_server_release_keyed} | to_json }}"}},
                {"name": "Render the run script", "ansible.builtin.template": {
                    "src": str(ROLE / "templates/run.sh.j2"), "dest": str(out / f"{name}.sh"), "mode": "0755"}},
                {"name": "Render the unit", "ansible.builtin.template": {
                    "src": str(ROLE / "templates/llama-server.service.j2"), "dest": str(out / f"{name}.service"),
                    "mode": "0644"}},
            ],
        })  # fmt: skip
    playbook = out / "render.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        cwd=REPO, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    result = {}
    for name in SCENARIOS:
        data = json.loads((out / f"{name}.json").read_text())
        data["script"] = (out / f"{name}.sh").read_text()
        data["script_path"] = out / f"{name}.sh"
        data["unit"] = (out / f"{name}.service").read_text()
        result[name] = data
    return result


def options(args: list[str]) -> dict[str, str | None]:
    """--flag value pairs (a flag followed by another flag has the value None)."""
    found: dict[str, str | None] = {}
    for index, arg in enumerate(args):
        if arg.startswith("-"):
            following = args[index + 1] if index + 1 < len(args) else None
            found[arg] = None if following is None or following.startswith("--") else following
    return found


def test_defaults_are_the_tuned_orin_nx_settings(rendered: dict[str, dict[str, Any]]) -> None:
    args = rendered["defaults"]["args"]
    opts = options(args)
    assert opts["--model"] == "/models/tiny.gguf" and opts["--alias"] == "tiny.gguf"
    expected = {"--host": "0.0.0.0", "--port": "8080", "--ctx-size": "2048", "--n-gpu-layers": "all",
                "--threads": "8", "--parallel": "8", "--batch-size": "512", "--ubatch-size": "256",
                "--flash-attn": "on", "--load-mode": "none", "--cache-ram": "1024"}  # fmt: skip
    assert {key: opts.get(key) for key in expected} == expected
    assert {"--cont-batching", "--kv-unified", "--metrics"} <= set(args)
    # Names the pinned llama.cpp rejects or that would swallow the next argument.
    assert not {"--mlock", "--no-mmap", "-fa", "--api-key"} & set(args)
    assert "--api-key-file" not in args and "--spec-draft-model" not in args


def test_threads_follow_the_power_mode(rendered: dict[str, dict[str, Any]]) -> None:
    # "auto": the cores the mode keeps online (10 W and 15 W keep 4 of the Orin NX's 8), unless a number is given.
    assert options(rendered["ten_watt_fake_docker"]["args"])["--threads"] == "4"
    assert options(rendered["draft_cache_extra"]["args"])["--threads"] == "6"
    assert rendered["defaults"]["settings"]["threads"] == 8


def test_container_is_hardened_and_mounts_the_model_read_only(rendered: dict[str, dict[str, Any]]) -> None:
    docker = rendered["defaults"]["docker"]
    opts = options(docker)
    assert opts["--user"] == "10001:10001" and opts["--network"] == "host" and opts["--runtime"] == "nvidia"
    assert opts["--security-opt"] == "no-new-privileges" and opts["--cap-drop"] == "ALL" and "--read-only" in docker
    # --mount fails on a missing source where --volume would create an empty directory.
    assert f"type=bind,source={MODEL['path']},target=/models/tiny.gguf,readonly" in docker and "--volume" not in docker
    # Logs outlive the container (journald), a missing image is never pulled, an init forwards SIGTERM.
    assert opts["--log-driver"] == "journald" and "tag=llama-server" in docker and "max-size=10m" not in docker
    assert (
        opts["--pull"] == "never" and "--init" in docker and opts["--label"] == "io.jetson-llm-fleet.role=llama-server"
    )
    # --load-mode none locks nothing: no memlock ulimit (a locking mode gets one: test_load_mode_and_prompt_cache)
    assert "--ulimit" not in opts
    assert "--memory" not in docker
    # The GPU device nodes' group (read on the device), never a hard-coded one.
    assert [arg for arg in docker if arg.startswith("--group-add")] == ["--group-add=44"]
    assert opts["--env"] == "NVIDIA_VISIBLE_DEVICES=all"  # the runtime passes the nodes only when asked
    assert [arg for arg in rendered["ten_watt_fake_docker"]["docker"] if arg.startswith("--group-add")] == [
        "--group-add=render", "--group-add=1000"]  # fmt: skip


def test_api_key_travels_as_a_file_never_as_an_argument(rendered: dict[str, dict[str, Any]]) -> None:
    case = rendered["api_key_and_limits"]
    assert KEY not in json.dumps(case["args"]) + json.dumps(case["docker"]) + case["script"] + case["unit"]
    assert options(case["args"])["--api-key-file"] == "/run/secrets/llama-api-key"
    assert "type=bind,source=/etc/llama-server/api-key,target=/run/secrets/llama-api-key,readonly" in case["docker"]
    assert rendered["api_key_and_limits"]["keyed"] and not rendered["defaults"]["keyed"]
    assert options(case["docker"])["--memory"] == "12g"
    # One port everywhere: the server flag and the HEALTHCHECK.
    assert options(case["args"])["--port"] == "9931" and "/dev/tcp/127.0.0.1/9931" in case["health"]


def test_optional_features_and_extra_args(rendered: dict[str, dict[str, Any]]) -> None:
    case = rendered["draft_cache_extra"]
    args, docker = case["args"], case["docker"]
    opts = options(args)
    # b11312 removed --draft-max (common/arg.cpp: "the argument has been removed. use --spec-draft-n-max").
    assert opts["--spec-draft-model"] == "/models/draft/small.gguf" and opts["--spec-draft-n-max"] == "16"
    assert opts["--spec-draft-ngl"] == "all" and opts["--cache-reuse"] == "256"
    assert not {"--draft", "--draft-n", "--draft-max", "--draft-min", "--model-draft"} & set(args)
    assert args[-4:] == ["--temp", "0.7", "--seed", "42"]
    assert {"--no-cont-batching", "--no-kv-unified"} <= set(args)
    assert "type=bind,source=/opt/llm/draft/small.gguf,target=/models/draft/small.gguf,readonly" in docker
    assert "max-size=10m" in docker and "max-file=3" in docker and options(docker)["--log-driver"] == "json-file"
    assert "--runtime" not in docker


def test_release_check_looks_for_the_model_and_draft_not_the_key_file(rendered: dict[str, dict[str, Any]]) -> None:
    # The files the deploy and the rollback require on the device before a start: what the release mounts,
    # except the API key file (written by the role itself after the check).
    assert rendered["defaults"]["mounts"] == [MODEL["path"]]
    assert rendered["api_key_and_limits"]["mounts"] == [MODEL["path"]]
    assert rendered["draft_cache_extra"]["mounts"] == [MODEL["path"], "/opt/llm/draft/small.gguf"]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_run_script_runs_exactly_the_release(rendered: dict[str, dict[str, Any]], scenario: str) -> None:
    case = rendered[scenario]
    subprocess.run(["bash", "-n", str(case["script_path"])], check=True)
    start = case["script"].split("  start)", 1)[1].split(";;", 1)[0]
    command = " ".join(line.rstrip("\\").strip() for line in start.split("exec ", 1)[1].splitlines() if line.strip())
    command = "exec " + command
    argv = shlex.split(command)
    assert argv[:3] == ["exec", "$docker", "run"]
    image = argv.index("jetson-llm-fleet/llama-server:b1-x")
    assert argv[3:image] == case["docker"] and argv[image + 1 :] == [str(a) for a in case["args"]]


def test_unit_waits_on_the_container_and_restarts_it(rendered: dict[str, dict[str, Any]]) -> None:
    unit = rendered["defaults"]["unit"]
    assert "ExecStartPre=/etc/llama-server/run start" in unit and "ExecStart=/etc/llama-server/run wait" in unit
    assert "ExecStop=/etc/llama-server/run stop" in unit
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit and "Requires=docker.service" in unit
    # A crash loop ends as a failed unit (systemctl --failed) instead of restarting forever.
    assert "StartLimitBurst=5" in unit and "StartLimitIntervalSec=900" in unit
    # Nothing release-specific: a release with another container name needs no new unit.
    assert "llama-server wait" not in unit and "docker" not in unit.split("[Service]")[1].replace("docker.service", "")


@pytest.mark.parametrize(
    ("events", "exit_code", "killed"),
    [
        ("health_status: healthy\ndie\n", "3", False),
        ("health_status: healthy\nhealth_status: unhealthy\n", "137", True),
    ],
    ids=["crash-exit-code", "unhealthy-is-killed"],
)
def test_unit_main_process_exits_like_the_container(
    rendered: dict[str, dict[str, Any]], tmp_path: Path, events: str, exit_code: str, killed: bool
) -> None:
    # `docker wait` prints the exit code and exits 0: the unit's main process must exit with the container's code
    # (so systemd counts a crash), and kill the container when the liveness probe turned it unhealthy.
    log = tmp_path / "calls"
    fake_docker = tmp_path / "docker"  # stands in for docker when the run script's wait is run for real
    fake_docker.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {log}\n'
        'case "$1" in\n'
        "  inspect) echo 2026-12-03T12:00:00.000000000Z ;;\n"
        f"  events) printf '{events}'; exec cat ;;\n"  # then blocks like the real stream, until killed
        f"  wait) echo {exit_code} ;;\n"
        "esac\n"
    )
    fake_docker.chmod(0o755)
    script = tmp_path / "run"
    script.write_text(
        rendered["ten_watt_fake_docker"]["script"].replace("docker=/usr/bin/docker", f"docker={fake_docker}")
    )
    proc = subprocess.run(["bash", str(script), "wait"], stdin=subprocess.PIPE, timeout=20, check=False)
    calls = log.read_text()
    assert proc.returncode == int(exit_code), calls
    assert ("kill llama-server" in calls) is killed and "events --since 2026-12-03T12:00:00.000000000Z" in calls


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    key = ""
    hang = threading.Event()
    released = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/slots" and type(self).hang.is_set():
            type(self).released.wait(10)  # a hung inference loop: /slots waits on the task queue, /health does not
        code = type(self).status if self.path in ("/health", "/slots") else 404
        if self.path == "/slots" and type(self).key and self.headers.get("Authorization") != f"Bearer {type(self).key}":
            code = 401
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b'{"status":"ok"}' if code == 200 else b'{"error":"Loading model"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200, "hang": threading.Event(), "released": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        handler.released.set()
        server.shutdown()
        server.server_close()


def test_healthcheck_command_follows_health(rendered: dict[str, dict[str, Any]], health_server: Any) -> None:
    port, handler = health_server
    command = rendered["defaults"]["health"].replace("/8080", f"/{port}")

    def check() -> int:
        # Docker runs a string HEALTHCHECK with /bin/sh -c.
        return subprocess.run(["/bin/sh", "-c", command], timeout=10, check=False).returncode

    assert check() == 0
    handler.status = 503  # loading
    assert check() != 0
    handler.status = 200
    assert check() == 0
    # /health would still answer 200 here: the probe goes through the task queue and times out like Docker's.
    handler.hang.set()
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(["/bin/sh", "-c", command], timeout=2, check=False)


def test_healthcheck_sends_the_key_from_the_key_file(
    rendered: dict[str, dict[str, Any]], health_server: Any, tmp_path: Path
) -> None:
    port, handler = health_server
    handler.key = KEY
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    command = rendered["api_key_and_limits"]["health"]
    assert KEY not in command
    command = command.replace("/9931", f"/{port}").replace("/run/secrets/llama-api-key", str(key_file))
    assert subprocess.run(["/bin/sh", "-c", command], timeout=10, check=False).returncode == 0
    key_file.write_text("wrong\n")
    assert subprocess.run(["/bin/sh", "-c", command], timeout=10, check=False).returncode != 0


def test_load_mode_and_prompt_cache(rendered: dict[str, dict[str, Any]]) -> None:
    # Always passed, so the server runs what hf_model's memory fit counted (llama.cpp's own --cache-ram is 8192).
    extra = rendered["draft_cache_extra"]
    assert options(extra["args"])["--load-mode"] == "mmap+mlock" and options(extra["args"])["--cache-ram"] == "0"
    assert options(extra["docker"])["--ulimit"] == "memlock=-1:-1"  # a mode that locks gets the memlock ulimit
    assert extra["settings"]["load_mode"] == "mmap+mlock" and extra["settings"]["cache_ram_mib"] == 0
    assert rendered["defaults"]["settings"]["load_mode"] == "none"
    assert rendered["defaults"]["settings"]["cache_ram_mib"] == 1024
