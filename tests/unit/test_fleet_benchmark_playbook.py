"""playbooks/benchmark.yml run for real against a stand-in device on this machine (connection local, no become):
stub nvpmodel / jetson_clocks / docker (whose `run` prints llama-bench JSON), a release record and API key file, the
fake llama-server, and jetsim's tegrastats emulator. It checks the playbook's own work (templating, the llama-bench
command line, the probe's arguments, report build and render, the gate), not the server: that is the jetsim e2e's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fake_llama_server import FakeLlamaServer

from jetson_fleet import probe, report

REPO = Path(__file__).resolve().parents[2]
TEGRASTATS_EMULATOR = REPO / "tests/jetsim/rootfs/usr/bin/tegrastats"
BENCH_RUNS = json.loads((REPO / "tests/fixtures/benchmark/jetson-01.json").read_text())["llama_bench"]["runs"]
RELEASE = {
    "id": "9b2e41c07a55",
    "image": "jetson-llm-fleet/llama-server:b11312-3f2a9c1d0e4b",
    "model": {"sha256": "ab" * 32, "filename": "tiny.gguf", "path": "/opt/llm/models/abab/tiny.gguf"},
    "args": ["--model", "/models/tiny.gguf", "--alias", "tiny-alias", "--port", "8080"],
    "flags_digest": "a41c07d29b3e",
    "deployed_at": "2026-10-01T17:42:10Z",
    "settings": {"ctx_size": 2048, "n_gpu_layers": "all", "threads": 6, "parallel": 8, "batch_size": 512,
                 "ubatch_size": 128, "flash_attn": "on", "port": 8080},
}  # fmt: skip


def make_device(tmp: Path) -> dict[str, object]:
    """Stand-in tools and files; returns the host's inventory variables (the release record is the test's)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (tmp / "bench.json").write_text(json.dumps(BENCH_RUNS))
    show = "cpu0: Online=1 Governor=schedutil MinFreq=1984000 MaxFreq=1984000 CurrentFreq=1984000\n"
    show += "GPU MinFreq=1173000000 MaxFreq=1173000000 CurrentFreq=1173000000\n"
    show += "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1\n"
    (tmp / "show.txt").write_text(show)
    stubs = {
        "docker": f"""case "$1" in
  inspect) echo '[{{"Name": "/llama-server", "HostConfig": {{"Runtime": "runc"}}}}]';;
  run) printf '%s\\n' "$@" > "{tmp}/docker-run.args"; cat "{tmp}/bench.json";;
  *) exit 1;;
esac""",
        "nvpmodel": 'printf "NV Power Mode: MAXN_SUPER\\n0\\n"',
        "jetson_clocks": f'cat "{tmp}/show.txt"',
        "tegrastats": f'JETSIM_ROOT="{tmp}/root" exec "{sys.executable}" "{TEGRASTATS_EMULATOR}" "$@"',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (tmp / "root/proc").mkdir(parents=True)
    (tmp / "root/proc/meminfo").write_text("MemTotal: 16031744 kB\nMemAvailable: 12000000 kB\n")  # 3937 MB used
    (tmp / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n")
    conf = tmp / "etc-llama-server"
    conf.mkdir()
    (conf / "api-key").write_text("pb-s3cret\n")
    return {
        "ansible_connection": "local",
        "ansible_become": False,
        "ansible_python_interpreter": sys.executable,
        "llama_server_config_dir": str(conf),
        "jetson_preflight_release_file": str(tmp / "nv_tegra_release"),
        "jetson_power_nvpmodel_binary": str(bin_dir / "nvpmodel"),
        "jetson_power_clocks_binary": str(bin_dir / "jetson_clocks"),
        "benchmark_tegrastats": str(bin_dir / "tegrastats"),
        "benchmark_tegrastats_interval_ms": 100,
        "benchmark_repetitions": 2,
    }


def test_benchmark_playbook_writes_reports_and_gates(tmp_path: Path) -> None:
    hostvars = make_device(tmp_path)
    reports = tmp_path / "reports"
    with FakeLlamaServer(api_key="pb-s3cret", burst_prompts=probe.BURST_PROMPTS) as server:
        # The server listens where the deployed release says; the inventory's port (changed since) is not probed.
        release = {**RELEASE, "settings": {**RELEASE["settings"], "port": server.port}}
        (tmp_path / "etc-llama-server/release.json").write_text(json.dumps(release))
        hostvars["llama_server_port"] = 9
        inventory = tmp_path / "inventory.json"
        inventory.write_text(json.dumps({"all": {"children": {"jetsons": {"hosts": {"jetson-1": hostvars}}}}}))
        env = {
            **os.environ,
            "PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
        }
        extra = {"benchmark_report_dir": str(reports), "benchmark_gate": True, "benchmark_target_gen_tps": 30}
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "playbooks/benchmark.yml",
             "-e", json.dumps(extra)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    output = proc.stdout + proc.stderr

    # The gate: 27.5 tok/s misses the raised 30 tok/s target, so the render task fails the play, naming it.
    assert proc.returncode != 0, output[-4000:]
    assert "jetson-1: generation 27.51 tok/s, target >= 30 tok/s (llama_bench.tg_tps)" in output
    (run_dir,) = reports.iterdir()
    assert {p.name for p in run_dir.iterdir()} == {"jetson-1.json", "fleet.md", "fleet.html", "fleet.json"}
    host = json.loads((run_dir / "jetson-1.json").read_text())
    assert report.validate(host) == []
    assert run_dir.name == host["timestamp"].replace("-", "").replace(":", "")
    assert host["device"] == {"l4t": "36.4.3", "jetpack": "6.2", "module": None, "power_mode": "MAXN_SUPER",
                              "clocks_pinned": True}  # fmt: skip
    assert host["targets"]["generation_tps_min"] == 30 and host["targets"]["memory_mb_max"] == 4096
    assert host["memory"]["ram_used_mb_max"] == 3937
    assert host["settings"] == release["settings"]
    # llama-bench: the deployed image and model, the release's settings in llama-bench's terms, the server's runtime
    args = (tmp_path / "docker-run.args").read_text().splitlines()
    assert args[:6] == ["run", "--rm", "--network=none", "--runtime", "runc", "--volume"]
    assert args[6] == "/opt/llm/models/abab/tiny.gguf:/models/model.gguf:ro"
    assert args[7:16] == ["--entrypoint", "/usr/local/bin/llama-bench", RELEASE["image"], "-m", "/models/model.gguf",
                          "-p", "512", "-n", "128"]  # fmt: skip
    flags = dict(zip(args[16::2], args[17::2], strict=True))
    assert flags == {"-r": "2", "-ngl": "999", "-fa": "on", "-b": "512", "-ub": "128", "-t": "6", "-o": "json"}
    # the probe: the alias as model name, the key from the file as a Bearer header, never on a command line
    assert {r.get("model") for r in server.requests} == {"tiny-alias"}
    assert set(server.auth_headers) == {"Bearer pb-s3cret"}
    assert "pb-s3cret" not in output
