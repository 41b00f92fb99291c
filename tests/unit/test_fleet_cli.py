"""The fleet CLI (jetson_fleet: cli, inventory, settings, status, restart, logs): inventory through ansible-inventory,
the role's settings, the status script and its parsing, the status table with an unreachable host, the restart's
health gate. SSH only ever goes to 127.0.0.1: a local SSH server, or ports nothing listens on."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
import yaml
from fake_llama_server import FakeLlamaServer
from ssh_server import SshServer

from jetson_fleet import cli, restart, ssh
from jetson_fleet import inventory as fleet_inventory
from jetson_fleet import status as fleet_status
from jetson_fleet.jetson import parse_clocks_pinned, parse_l4t, parse_power_mode
from jetson_fleet.probe import parse_metrics

REPO = Path(__file__).resolve().parents[2]
ROLE_DEFAULTS = yaml.safe_load((REPO / "roles/llama_server/defaults/main.yml").read_text())
ROLE_VARS = yaml.safe_load((REPO / "roles/llama_server/vars/main.yml").read_text())

PINNED_SHOW = """SOC family:tegra234  Machine:NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super
Online CPUs: 0-7
cpu0: Online=1 Governor=schedutil MinFreq=1984000 MaxFreq=1984000 CurrentFreq=1984000 IdleStates: WFI=0 c7=0
cpu1: Online=1 Governor=schedutil MinFreq=1984000 MaxFreq=1984000 CurrentFreq=1984000 IdleStates: WFI=0 c7=0
GPU MinFreq=1173000000 MaxFreq=1173000000 CurrentFreq=1173000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
FAN Dynamic Speed control=active hwmon2_pwm1=77
NV Power Mode: MAXN_SUPER"""
RELEASE = {
    "id": "9b2e41c07a55",
    "image": "jetson-llm-fleet/llama-server:b11312-3f2a9c1d0e4b",
    "model": {"sha256": "6c1a2b41" * 8, "filename": "Llama-3.2-3B-Instruct-Q4_K_M.gguf", "path": "/opt/llm/x"},
    "flags_digest": "a41c07d29b3e",
    "settings": {"ctx_size": 2048},
}
STATUS_OUTPUT = f"""@@l4t
# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025
@@nvpmodel
NV Power Mode: MAXN_SUPER
0
@@clocks
{PINNED_SHOW}
@@container
running healthy
@@release
{json.dumps(RELEASE, indent=2)}
@@metrics
llamacpp:prompt_tokens_total 1234
llamacpp:prompt_seconds_total 2.01469
llamacpp:tokens_predicted_total 217
llamacpp:tokens_predicted_seconds_total 8
llamacpp:prompt_tokens_seconds 0
llamacpp:predicted_tokens_seconds 0
llamacpp:requests_processing 1

http_code=200
@@uptime
93784.52 361002.11
@@end
"""


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port that is bound but not listening: connections are refused, and nobody else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def write_inventory(directory: Path, text: str) -> Path:
    path = directory / "hosts.yml"
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------------------- device output


def test_device_output_parsers() -> None:
    assert parse_l4t("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic") == "36.4.3"
    assert parse_l4t("# R35 (release), REVISION: 6, GCID: 1") == "35.6.0"
    assert parse_l4t("head: cannot open '/etc/nv_tegra_release'") is None
    assert parse_power_mode("NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n2") == "15W"
    assert parse_power_mode("sudo: a password is required") is None
    assert parse_clocks_pinned(PINNED_SHOW) is True
    unpinned = PINNED_SHOW.replace("cpu1: Online=1 Governor=schedutil MinFreq=1984000", "cpu1: Online=1 MinFreq=729600")
    assert parse_clocks_pinned(unpinned) is False
    assert parse_clocks_pinned(PINNED_SHOW.replace("FreqOverride=1", "FreqOverride=0")) is False
    assert parse_clocks_pinned(PINNED_SHOW + "\ncpu4: Online=0") is True  # offline cores do not count
    assert parse_clocks_pinned("Error: Run this script(/usr/bin/jetson_clocks) as a root user") is None


# ------------------------------------------------------------------------------------------- inventory


def test_ssh_options_from_ansible_args() -> None:
    options = fleet_inventory.parse_ssh_args(
        '-o UserKnownHostsFile=/s/known_hosts -oStrictHostKeyChecking=accept-new -o "ConnectTimeout 7" -C'
    )
    assert options == {
        "userknownhostsfile": "/s/known_hosts",
        "stricthostkeychecking": "accept-new",
        "connecttimeout": "7",
    }


def test_inventory_groups_hostvars_key_and_port(tmp_path: Path) -> None:
    inventory = write_inventory(
        tmp_path,
        """\
        all:
          children:
            jetsons:
              vars:
                ansible_user: jetson
                ansible_ssh_private_key_file: ~/.ssh/fleet_ed25519
                ansible_ssh_common_args: -o UserKnownHostsFile=/srv/fleet/known_hosts -o StrictHostKeyChecking=yes
              children:
                lab:
                  hosts:
                    jetson-1: {ansible_host: 127.0.0.1, ansible_port: 2201}
                    jetson-2: {ansible_host: 127.0.0.1, ansible_port: 2202, llama_server_port: 9000}
                shop:
                  hosts:
                    jetson-3: {ansible_host: 127.0.0.1}
            other:
              hosts:
                builder: {ansible_host: 127.0.0.1}
        """,
    )
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars/shop.yml").write_text("---\nllama_server_port: 8081\n")

    inv = fleet_inventory.load_inventory([str(inventory)])

    assert inv.groups["jetsons"] == ["jetson-1", "jetson-2", "jetson-3"]
    assert inv.groups["lab"] == ["jetson-1", "jetson-2"]
    assert [h.name for h in inv.resolve("shop")] == ["jetson-3"]
    one, two, three = inv.resolve("jetsons")
    assert (one.address, one.port, one.user) == ("127.0.0.1", 2201, "jetson")
    assert one.key_file == os.path.expanduser("~/.ssh/fleet_ed25519")
    assert one.known_hosts == ["/srv/fleet/known_hosts"]
    assert one.strict_host_keys == "yes"
    assert [h.server_port for h in (one, two, three)] == [8080, 9000, 8081]  # default, host var, group_vars
    assert inv.hosts["builder"].user is None and inv.hosts["builder"].port == 22


def test_missing_inventory_is_a_clear_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yml"

    assert cli.main(["-i", str(missing), "status"]) == 2
    assert f"jetson-fleet: inventory not found: {missing}" in capsys.readouterr().err


def test_malformed_inventory_is_a_clear_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = write_inventory(
        tmp_path, "all:\n  children:\n    jetsons:\n      hosts: {jetson-1: {ansible_host: x}\n"
    )

    assert cli.main(["-i", str(inventory), "status"]) == 2
    err = capsys.readouterr().err
    assert f"jetson-fleet: malformed inventory {inventory}:" in err
    assert "YAML parsing failed" in err


def test_unknown_host_or_group(tmp_path: Path) -> None:
    inv = fleet_inventory.parse_inventory(
        {"_meta": {"hostvars": {"jetson-1": {}}}, "all": {"children": ["jetsons"]}, "jetsons": {"hosts": ["jetson-1"]}}
    )
    with pytest.raises(
        fleet_inventory.CliError, match=r"no host or group named 'jetson-9' in the inventory \(groups: jetsons\)"
    ):
        inv.resolve("jetson-9")
    with pytest.raises(fleet_inventory.CliError, match="logs takes one host"):
        cli.cmd_logs(inv, cli.build_parser().parse_args(["logs", "jetsons"]))


def test_jinja_values_are_refused_not_guessed_when_the_host_is_asked_for() -> None:
    inv = fleet_inventory.parse_inventory(
        {
            "_meta": {"hostvars": {"jetson-1": {"ansible_host": "{{ lookup('env', 'IP') }}"}, "jetson-2": {}}},
            "jetsons": {"hosts": ["jetson-1", "jetson-2"]},
        }
    )
    assert [h.name for h in inv.resolve("jetson-2")] == ["jetson-2"]
    with pytest.raises(fleet_inventory.CliError, match="jetson-1: ansible_host is a Jinja expression"):
        inv.resolve("jetsons")
    with pytest.raises(fleet_inventory.CliError, match="jetson-1: a port is not a number"):
        fleet_inventory.make_host("jetson-1", {"llama_server_port": "http"})


def test_server_settings_are_the_role_defaults_with_hostvars_winning() -> None:
    plain = fleet_inventory.make_host("jetson-1", {}).settings
    tuned = fleet_inventory.make_host(
        "jetson-2",
        {
            "llama_server_config_dir": "/srv/llama",
            "llama_server_smoke_max_tokens": "4",
            "llama_server_host": "10.0.0.5",
        },
    ).settings

    # what the role itself uses when the inventory says nothing: its defaults/main.yml, its vars/main.yml
    assert (plain.port, plain.container, plain.config_dir) == (
        ROLE_DEFAULTS["llama_server_port"], ROLE_DEFAULTS["llama_server_container_name"],
        ROLE_DEFAULTS["llama_server_config_dir"],
    )  # fmt: skip
    assert (plain.smoke_prompt, plain.smoke_max_tokens, plain.smoke_timeout, plain.health_timeout) == (
        ROLE_DEFAULTS["llama_server_smoke_prompt"], ROLE_DEFAULTS["llama_server_smoke_max_tokens"],
        ROLE_DEFAULTS["llama_server_smoke_timeout"], ROLE_DEFAULTS["llama_server_health_timeout"],
    )  # fmt: skip
    assert plain.unit == ROLE_VARS["_llama_server_unit"] == "llama-server.service"
    assert plain.address == "127.0.0.1"  # the server listens on 0.0.0.0: checks go through loopback
    # the inventory wins, types as the role casts them
    assert (tuned.config_dir, tuned.smoke_max_tokens, tuned.address) == ("/srv/llama", 4, "10.0.0.5")
    assert tuned.container == plain.container
    with pytest.raises(fleet_inventory.CliError, match="jetson-3: llama_server_config_dir is a Jinja expression"):
        fleet_inventory.make_host("jetson-3", {"llama_server_config_dir": "{{ base }}/llama"})


# ------------------------------------------------------------------------------------------- status


def test_status_output_is_parsed() -> None:
    status = fleet_status.parse_status_output(STATUS_OUTPUT)

    assert status["l4t"] == "36.4.3"
    assert status["power_mode"] == "MAXN_SUPER"
    assert status["clocks_pinned"] is True
    assert (status["container"], status["health"]) == ("running", "healthy")
    assert status["release"]["id"] == "9b2e41c07a55"
    assert status["release"]["model"] == "Llama-3.2-3B-Instruct-Q4_K_M.gguf"
    assert status["gen_tps"] == 27.125 and status["requests_processing"] == 1
    assert status["uptime_s"] == 93784
    assert status["problems"] == []


def test_status_reports_what_it_could_not_read() -> None:
    output = STATUS_OUTPUT.replace("NV Power Mode: MAXN_SUPER\n0", "sudo: a password is required")
    output = output.replace("running healthy", "Error: No such object: llama-server")
    metrics = output[output.index("@@metrics") : output.index("@@uptime")]
    output = output.replace(
        metrics,
        '@@metrics\n{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}\nhttp_code=401\n',
    )

    status = fleet_status.parse_status_output(output)

    assert status["power_mode"] is None and status["container"] == "absent" and status["gen_tps"] is None
    assert status["problems"] == [
        "nvpmodel: sudo: a password is required",
        'metrics: HTTP 401 {"error":{"code":401,"message":"Invalid API Key","type":"aut',  # first 60 characters
    ]


# /metrics of llama-server b11312 as tools/server/server-task.cpp (to_metrics) prints it, two scrapes of one idle
# server: the gauges were reset by the first scrape (by anyone: Prometheus, another `status`), the counters go on.
B11312_METRICS = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 52311
# HELP llamacpp:prompt_tokens_cached_total Number of prompt tokens reused from the cache
# TYPE llamacpp:prompt_tokens_cached_total counter
llamacpp:prompt_tokens_cached_total 0
# HELP llamacpp:prompt_seconds_total Total time spent processing prompts
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 84.2113
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 1.23456e+06
# HELP llamacpp:tokens_predicted_seconds_total Total time spent generating tokens
# TYPE llamacpp:tokens_predicted_seconds_total counter
llamacpp:tokens_predicted_seconds_total 45728.1
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds {prompt_gauge}
# HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds {gen_gauge}
# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 0
"""


def status_with_metrics(metrics: str) -> dict[str, object]:
    before, rest = STATUS_OUTPUT.split("@@metrics\n", 1)
    return fleet_status.parse_status_output(
        f"{before}@@metrics\n{metrics}\nhttp_code=200\n@@uptime{rest.split('@@uptime', 1)[1]}"
    )


def test_generation_throughput_does_not_depend_on_who_scraped_last() -> None:
    first = B11312_METRICS.format(prompt_gauge="612.503", gen_gauge="26.9981")
    second = B11312_METRICS.format(prompt_gauge="0", gen_gauge="0")  # the same idle server, scraped again

    assert parse_metrics(second)["llamacpp:predicted_tokens_seconds"] == 0  # what status showed before
    assert fleet_status.generation_tps(parse_metrics(first)) == fleet_status.generation_tps(parse_metrics(second))
    assert status_with_metrics(second)["gen_tps"] == pytest.approx(1.23456e06 / 45728.1, abs=0.001)  # 27.0 tok/s
    assert status_with_metrics(second)["gen_tokens_total"] == 1234560
    # a server that has not generated yet: no rate, "-" in the table
    fresh = second.replace("1.23456e+06", "0").replace("45728.1", "0")
    row = {"host": "jetson-1", "address": "10.0.0.11", "reachable": True, "error": None, **status_with_metrics(fresh)}
    assert row["gen_tps"] is None
    assert fleet_status.status_table([row]).splitlines()[1].split()[-2] == "-"


def test_status_shows_the_backend_and_gpu_layers_of_the_release() -> None:
    backend = {"requested": "cuda", "name": "CUDA", "gpu_layers": 29, "layers": 29, "device": "CUDA0"}
    on_gpu = STATUS_OUTPUT.replace(json.dumps(RELEASE, indent=2), json.dumps({**RELEASE, "backend": backend}))
    on_cpu = STATUS_OUTPUT.replace(
        json.dumps(RELEASE, indent=2), json.dumps({**RELEASE, "backend": {**backend, "name": "CPU", "gpu_layers": 0}})
    )
    base = {"address": "10.0.0.11", "reachable": True, "error": None}
    rows = [
        {**base, "host": "jetson-1", **fleet_status.parse_status_output(on_gpu)},
        {**base, "host": "jetson-2", **fleet_status.parse_status_output(on_cpu)},
        {**base, "host": "jetson-3", **fleet_status.parse_status_output(STATUS_OUTPUT)},  # a record without it
    ]

    table = fleet_status.status_table(rows).splitlines()
    start, end = table[0].index("BACKEND"), table[0].index("RELEASE")
    assert [line[start:end].strip() for line in table[1:]] == ["CUDA 29/29", "CPU 0/29", "?"]
    assert rows[0]["release"]["backend"] == backend  # --json carries the record's field as it is
    assert rows[2]["release"]["backend"] is None


def test_status_table_with_one_unreachable_host(closed_port: int) -> None:
    down = fleet_inventory.make_host("jetson-2", {"ansible_host": "127.0.0.1", "ansible_port": closed_port})
    reachable = {"host": "jetson-1", "address": "10.0.0.11", "reachable": True, "error": None}

    rows = [{**reachable, **fleet_status.parse_status_output(STATUS_OUTPUT)}, fleet_status.host_status(down, timeout=5)]
    table = fleet_status.status_table(rows).splitlines()

    assert rows[1] == {"host": "jetson-2", "address": "127.0.0.1", "reachable": False, "error": "connection refused"}
    assert table[0].split() == ["HOST", "ADDRESS", "L4T", "POWER", "CLOCKS", "SERVER", "BACKEND", "RELEASE", "MODEL",
                                "GEN", "TOK/S", "UPTIME"]  # fmt: skip
    assert table[1].split() == [
        "jetson-1", "10.0.0.11", "36.4.3", "MAXN_SUPER", "pinned", "running", "(healthy)", "?", "9b2e41c07a55",
        "Llama-3.2-3B-Instruct-Q4_K_M.gguf", "27.1", "1d2h",
    ]  # fmt: skip
    assert table[2].split() == ["jetson-2", "127.0.0.1", "unreachable:", "connection", "refused"]
    assert not fleet_status.status_ok(rows)


def test_status_command_json_and_exit_code(
    tmp_path: Path, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_inventory(
        tmp_path,
        f"""\
        all:
          children:
            jetsons:
              hosts:
                jetson-1: {{ansible_host: 127.0.0.1, ansible_port: {closed_port}, ansible_user: jetson}}
        """,
    )

    assert cli.main(["-i", str(inventory), "status", "--json", "--timeout", "5"]) == 1

    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"host": "jetson-1", "address": "127.0.0.1", "reachable": False, "error": "connection refused"}]


def test_restart_stops_at_the_first_failure(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    hostvars = {"ansible_host": "127.0.0.1", "ansible_port": closed_port}
    inv = fleet_inventory.parse_inventory(
        {
            "_meta": {"hostvars": {"jetson-1": hostvars, "jetson-2": hostvars}},
            "jetsons": {"hosts": ["jetson-1", "jetson-2"]},
        }
    )

    assert cli.cmd_restart(inv, cli.build_parser().parse_args(["restart", "jetsons", "--connect-timeout", "5"])) == 1

    captured = capsys.readouterr()
    assert "jetson-1: FAILED: unreachable: connection refused" in captured.err
    assert "stopped; not restarted: jetson-2" in captured.err
    assert "jetson-2: restarting" not in captured.out


def fake_device(tmp_path: Path, **extra_stubs: str) -> tuple[Path, Path]:
    """Stand-ins for sudo, nvpmodel, jetson_clocks (and extra_stubs) in tmp_path/bin, and a config directory with
    the release record (no final newline: the script copes) and an API key file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "sudo": '[ "$1" = -n ] && shift; exec "$@"',
        "nvpmodel": 'printf "NV Power Mode: MAXN_SUPER\\n0\\n"',
        "jetson_clocks": f"cat <<'EOF'\n{PINNED_SHOW}\nEOF",
        **extra_stubs,
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    conf = tmp_path / "etc-llama-server"
    conf.mkdir()
    (conf / "release.json").write_text(json.dumps(RELEASE))
    (conf / "api-key").write_text("k3y-on-device\n")
    return bin_dir, conf


@pytest.mark.skipif(not shutil.which("curl"), reason="the status script uses curl, as on the devices")
def test_status_script_runs_and_sends_the_key_only_through_stdin(tmp_path: Path) -> None:
    """STATUS_SCRIPT under sh with stand-ins for sudo, nvpmodel, jetson_clocks and docker, and a fake server."""
    bin_dir, conf = fake_device(
        tmp_path, docker='[ "$1" = inspect ] && [ "$4" = llama-server ] && echo "running healthy"'
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    with FakeLlamaServer(api_key="k3y-on-device") as server:
        command = ssh.script_command(fleet_status.STATUS_SCRIPT, server.port, "llama-server", conf)
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, timeout=30, check=False)

    assert "k3y-on-device" not in command
    assert server.auth_headers == ["Bearer k3y-on-device"]
    status = fleet_status.parse_status_output(proc.stdout)
    assert status["power_mode"] == "MAXN_SUPER" and status["clocks_pinned"] is True
    assert (status["container"], status["health"]) == ("running", "healthy")
    assert status["release"]["id"] == "9b2e41c07a55"
    assert status["gen_tps"] == 27.125
    assert status["problems"] == []
    assert isinstance(status["uptime_s"], int)


# ------------------------------------------------------------------------------------------- over SSH (Fabric)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[tuple[SshServer, FakeLlamaServer, Path]]:
    """An SSH server on 127.0.0.1 whose commands see stand-ins for the Jetson tools, the release record, the
    API key file and a fake llama-server that wants the key. `docker inspect` prints tmp_path/docker-state, if
    there is one, else "running healthy"."""
    bin_dir, conf = fake_device(
        tmp_path,
        docker=f'case "$1" in inspect) cat "{tmp_path}/docker-state" 2>/dev/null || echo "running healthy";;'
        ' logs) echo "docker logs $*";; esac',
        systemctl=f'echo "$*" >> "{tmp_path}/systemctl.log"',
    )
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    with FakeLlamaServer(api_key="k3y-on-device") as llama, SshServer(tmp_path, env) as ssh:
        (tmp_path / "known_hosts").write_text(ssh.known_hosts_line)
        yield ssh, llama, conf


def device_hostvars(ssh: SshServer, llama: FakeLlamaServer, conf: Path, known_hosts: Path) -> dict[str, object]:
    return {
        "ansible_host": "127.0.0.1",
        "ansible_port": ssh.port,
        "ansible_ssh_private_key_file": ssh.client_key_file,
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
        "llama_server_port": llama.port,
        "llama_server_config_dir": str(conf),
    }


def test_status_over_ssh_next_to_an_unreachable_host(
    tmp_path: Path,
    device: tuple[SshServer, FakeLlamaServer, Path],
    closed_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ssh, llama, conf = device
    hostvars = device_hostvars(ssh, llama, conf, tmp_path / "known_hosts")
    inventory = tmp_path / "inventory.json"  # ansible-inventory reads JSON inventories too (yaml plugin)
    down = {"ansible_host": "127.0.0.1", "ansible_port": closed_port}
    inventory.write_text(
        json.dumps({"all": {"children": {"jetsons": {"hosts": {"jetson-1": hostvars, "jetson-2": down}}}}})
    )

    assert cli.main(["-i", str(inventory), "status", "--timeout", "10"]) == 1  # one host unreachable

    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:7] == ["jetson-1", "127.0.0.1", "?", "MAXN_SUPER", "pinned", "running", "(healthy)"]
    assert table[1].split()[-3:-1] == ["Llama-3.2-3B-Instruct-Q4_K_M.gguf", "27.1"]
    assert table[2].split()[:3] == ["jetson-2", "127.0.0.1", "unreachable:"]
    assert "jetson-1: nvpmodel" not in "\n".join(table)  # no problems reported for the reachable host
    assert len(ssh.commands) == 1  # one SSH session, one remote script
    assert "k3y-on-device" not in ssh.commands[0]
    assert llama.auth_headers == ["Bearer k3y-on-device"]


def test_a_rejected_key_is_unreachable_with_the_reason(
    tmp_path: Path, device: tuple[SshServer, FakeLlamaServer, Path]
) -> None:
    ssh, llama, conf = device
    other_key = tmp_path / "other_ecdsa"
    paramiko.ECDSAKey.generate().write_private_key_file(str(other_key))
    hostvars = {
        **device_hostvars(ssh, llama, conf, tmp_path / "known_hosts"),
        "ansible_ssh_private_key_file": str(other_key),
    }

    row = fleet_status.host_status(fleet_inventory.make_host("jetson-1", hostvars), timeout=10)

    assert row["reachable"] is False
    assert row["error"].startswith("authentication failed")
    assert ssh.commands == []


def test_an_unknown_host_key_is_refused(tmp_path: Path, device: tuple[SshServer, FakeLlamaServer, Path]) -> None:
    ssh, llama, conf = device
    (tmp_path / "empty_known_hosts").write_text("")
    host = fleet_inventory.make_host("jetson-1", device_hostvars(ssh, llama, conf, tmp_path / "empty_known_hosts"))

    row = fleet_status.host_status(host, timeout=10)

    assert row["reachable"] is False
    assert row["error"] == "host key unknown (not in known_hosts; StrictHostKeyChecking)"
    assert ssh.commands == []
    accept_new = {**device_hostvars(ssh, llama, conf, tmp_path / "empty_known_hosts")}
    accept_new["ansible_ssh_common_args"] = "-o StrictHostKeyChecking=accept-new"
    assert fleet_status.host_status(fleet_inventory.make_host("jetson-1", accept_new), timeout=10)["reachable"] is True


def test_restart_and_logs_over_ssh(
    tmp_path: Path, device: tuple[SshServer, FakeLlamaServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ssh, llama, conf = device
    hostvars = device_hostvars(ssh, llama, conf, tmp_path / "known_hosts")
    inv = fleet_inventory.parse_inventory(
        {"_meta": {"hostvars": {"jetson-1": hostvars}}, "jetsons": {"hosts": ["jetson-1"]}}
    )

    assert cli.cmd_restart(inv, cli.build_parser().parse_args(["restart", "jetson-1", "--timeout", "20"])) == 0
    assert (tmp_path / "systemctl.log").read_text() == "restart llama-server.service\n"
    # The seconds depend on how busy the machine is; what the user reads is the health verdict and its evidence.
    assert re.search(r"^jetson-1: healthy after \d+s \(/health 200, container healthy", capsys.readouterr().out, re.M)

    assert cli.cmd_logs(inv, cli.build_parser().parse_args(["logs", "jetson-1", "--tail", "5"])) == 0
    assert "docker logs logs --tail 5 llama-server" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- restart gate


def gate_output(completion: dict[str, object] | str, code: int = 200, release: dict[str, object] = RELEASE) -> str:
    body = completion if isinstance(completion, str) else json.dumps(completion)
    return (
        "@@restart\n@@health\nHTTP 200\n@@container\nrunning healthy\n@@ready\n7\n"
        f"@@completion\n{body}\nhttp_code={code}\n@@release\n{json.dumps(release)}\n@@end\n"
    )


COMPLETION = {
    "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Yes."}}],
    "usage": {"completion_tokens": 8, "prompt_tokens": 13, "total_tokens": 21},
    "timings": {"predicted_n": 8, "predicted_per_second": 27.3},
}
CUDA = {"requested": "cuda", "name": "CUDA", "gpu_layers": 29, "layers": 29, "device": "CUDA0"}


def test_the_restart_gate_is_the_roles() -> None:
    assert restart.gate_result(gate_output(COMPLETION)) == (
        True,
        "healthy after 7s (/health 200, container healthy, completion of 8 tokens)",
    )
    # the role's checks of the completion: a message, usage.completion_tokens > 0, timings.predicted_n
    no_tokens = {**COMPLETION, "usage": {"completion_tokens": 0}}
    no_timings = {key: value for key, value in COMPLETION.items() if key != "timings"}
    for answer in (no_tokens, no_timings, {**COMPLETION, "choices": []}):
        ok, message = restart.gate_result(gate_output(answer))
        assert not ok and message.startswith("the chat completion came without a completion, usage or timings")
    assert restart.gate_result(gate_output('{"error":{"code":503,"message":"Loading model"}}', code=503)) == (
        False,
        'chat completion: HTTP 503 {"error":{"code":503,"message":"Loading model"}}',
    )
    # the script stopped at a wait: its last word is the reason
    stopped = "@@restart\n@@health\n/health did not answer 200 within 20s (last: HTTP 503)\n"
    assert restart.gate_result(stopped) == (False, "/health did not answer 200 within 20s (last: HTTP 503)")


def test_a_cuda_release_must_say_every_layer_on_cuda() -> None:
    on_gpu = {**RELEASE, "backend": CUDA}
    ok, message = restart.gate_result(gate_output(COMPLETION, release=on_gpu))
    assert ok and message.endswith("completion of 8 tokens, CUDA 29/29 layers)")
    for backend, says in (
        ({**CUDA, "name": "CPU", "gpu_layers": 0}, "CPU with 0/29"),
        ({**CUDA, "gpu_layers": 20}, "CUDA with 20/29"),
    ):
        assert restart.gate_result(gate_output(COMPLETION, release={**RELEASE, "backend": backend})) == (
            False,
            f"release 9b2e41c07a55 asked for CUDA but its record says {says} layers on the GPU",
        )
    cpu_release = {**RELEASE, "backend": {**CUDA, "requested": "cpu", "name": "CPU", "gpu_layers": 0}}
    assert restart.gate_result(gate_output(COMPLETION, release=cpu_release))[0] is True  # CPU asked, CPU served


def test_restart_over_ssh_sends_the_roles_smoke_request_and_refuses_a_cpu_fallback(
    tmp_path: Path, device: tuple[SshServer, FakeLlamaServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ssh_server, llama, conf = device
    hostvars = device_hostvars(ssh_server, llama, conf, tmp_path / "known_hosts")
    inv = fleet_inventory.parse_inventory(
        {
            "_meta": {"hostvars": {"jetson-1": hostvars, "jetson-2": hostvars}},
            "jetsons": {"hosts": ["jetson-1", "jetson-2"]},
        }
    )
    (conf / "release.json").write_text(json.dumps({**RELEASE, "backend": {**CUDA, "name": "CPU", "gpu_layers": 0}}))

    assert cli.cmd_restart(inv, cli.build_parser().parse_args(["restart", "jetsons", "--timeout", "20"])) == 1

    err = capsys.readouterr().err
    assert "jetson-1: FAILED: release 9b2e41c07a55 asked for CUDA but its record says CPU with 0/29 layers" in err
    assert "stopped; not restarted: jetson-2" in err
    (smoke,) = [r for r in llama.requests if "messages" in r]
    assert smoke == {
        "messages": [{"role": "user", "content": ROLE_DEFAULTS["llama_server_smoke_prompt"]}],
        "max_tokens": ROLE_DEFAULTS["llama_server_smoke_max_tokens"],
        "temperature": 0,
    }
    assert llama.auth_headers[-1] == "Bearer k3y-on-device"  # the key from the device's file, through stdin
    assert "k3y-on-device" not in ssh_server.commands[0]


def test_restart_waits_for_dockers_healthcheck_like_the_role(
    tmp_path: Path, device: tuple[SshServer, FakeLlamaServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ssh_server, llama, conf = device
    hostvars = {**device_hostvars(ssh_server, llama, conf, tmp_path / "known_hosts"), "llama_server_health_delay": 1}
    inv = fleet_inventory.parse_inventory(
        {"_meta": {"hostvars": {"jetson-1": hostvars}}, "jetsons": {"hosts": ["jetson-1"]}}
    )
    (tmp_path / "docker-state").write_text("running unhealthy\n")  # /health answers, the HEALTHCHECK does not agree

    assert cli.cmd_restart(inv, cli.build_parser().parse_args(["restart", "jetson-1", "--timeout", "1"])) == 1

    err = capsys.readouterr().err
    assert "jetson-1: FAILED: Docker did not report llama-server healthy within 1s (last: running unhealthy)" in err
    assert not [r for r in llama.requests if "messages" in r]  # no completion asked of an unhealthy container
