"""roles/tune: the device script's server command line and the report templates, on a recorded sweep.

The templates are rendered with plain Jinja2 set up like ansible.builtin.template (trim_blocks, undefined
variables are errors) and the Ansible filters they use; the sweep result is shaped like roles/tune/tasks/choose.yml
publishes it (tune_result), the choice made by jetson_llm.fleet.tune_choose itself.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import jinja2
import yaml
from ansible_collections.jetson_llm.fleet.plugins.filter.tune import tune_choose

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("tune_sweep", REPO / "roles/tune/files/tune_sweep.py")
assert _spec and _spec.loader
sweep = importlib.util.module_from_spec(_spec)
sys.modules["tune_sweep"] = sweep
_spec.loader.exec_module(sweep)

RELEASE_ARGS = [
    "--model", "/models/m.gguf", "--alias", "m", "--host", "0.0.0.0", "--port", "8080", "--ctx-size", "2048",
    "--threads", "8", "--parallel", "8", "--batch-size", "512", "--ubatch-size", "256", "--cont-batching",
    "--kv-unified", "--flash-attn", "on", "--metrics", "--spec-draft-model", "/models/draft/d.gguf",
    "--spec-draft-ngl", "all", "--api-key-file", "/run/secrets/llama-api-key",
]  # fmt: skip


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_the_tuning_server_runs_the_release_with_the_setting_on_loopback_without_the_key() -> None:
    args = sweep.server_args(
        RELEASE_ARGS, {"parallel": 2, "kv_unified": False, "host": "127.0.0.1", "port": 8099}, draft=False
    )

    assert flag(args, "--parallel") == "2" and args.count("--parallel") == 1
    assert "--no-kv-unified" in args and "--kv-unified" not in args
    assert flag(args, "--host") == "127.0.0.1" and flag(args, "--port") == "8099"
    assert flag(args, "--threads") == "8" and flag(args, "--model") == "/models/m.gguf"  # the release's own
    assert "--api-key-file" not in args and "/run/secrets/llama-api-key" not in args
    assert "--spec-draft-model" not in args and "all" not in args  # without the draft: its values gone too
    with_draft = sweep.server_args(RELEASE_ARGS, {"cache_reuse": 256}, draft=True)
    assert flag(with_draft, "--spec-draft-model") == "/models/draft/d.gguf"
    assert flag(with_draft, "--cache-reuse") == "256" and "--kv-unified" in with_draft
    assert "--cache-reuse" not in sweep.server_args([*RELEASE_ARGS, "--cache-reuse", "64"], {"cache_reuse": 0}, True)


def test_the_tuning_container_drops_the_release_name_label_and_healthcheck() -> None:
    docker = ["--detach", "--name", "llama-server", "--label", "io.jetson-llm-fleet.role=llama-server", "--init",
              "--network", "host", "--health-cmd", "bash -c x", "--log-driver", "journald", "--log-opt",
              "tag=llama-server", "--mount", "type=bind,source=/m,target=/models/m.gguf,readonly"]  # fmt: skip

    kept = sweep.docker_args(docker)

    assert kept == ["--init", "--network", "host", "--mount", "type=bind,source=/m,target=/models/m.gguf,readonly"]


def bench(threads: int, gen: float | None, **extra: Any) -> dict[str, Any]:
    settings = {"threads": threads, "batch_size": 512, "ubatch_size": 256, "flash_attn": "on", "cache_type": "f16"}
    return {"settings": settings, "gen_tps": gen, "prompt_tps": 100.0, "fit_ok": True, "backend_ok": True,
            "backend": "CUDA", "elapsed_s": 5.0, "error": None, **extra}  # fmt: skip


def server(parallel: int, tps: float) -> dict[str, Any]:
    return {"settings": {"parallel": parallel, "kv_unified": True, "ctx_size": 2048}, "fit_ok": True,
            "backend_ok": True, "backend": "CUDA", "elapsed_s": 20.0, "error": None,
            "clients": {"1": {"aggregate_tps": 20.0, "latency_s": 2.0, "ttft_s": 0.2},
                        "4": {"aggregate_tps": tps, "latency_s": 4.0, "ttft_s": 0.5}}}  # fmt: skip


def tune_result() -> dict[str, Any]:
    benches = [bench(6, 18.0), bench(8, 24.5), bench(4, None, fit_ok=False, error="not run: does not fit the memory")]
    servers = [server(4, 60.0), server(8, 75.0)]
    current_bench, current_server = benches[0]["settings"], servers[0]["settings"]
    bench_choice = tune_choose(benches, "latency", 4, 0, 0, 600, current_bench, 3)
    server_choice = tune_choose(servers, "throughput", 4, 0, 0, 600, current_server, 3)
    return {
        "host": "orin-1", "class": "p3767_0000_l4t36_4_3_2", "hosts": ["orin-1", "orin-2"], "release": "r1",
        "image": "img", "model": "m.gguf", "backend": "CUDA", "objective": "throughput", "clients": 4,
        "budget_s": 600, "elapsed_s": 321.5,
        "current": {**current_bench, **current_server},
        "chosen": {**current_bench, **bench_choice["chosen"], **current_server, **server_choice["chosen"]},
        "bench": {"choice": bench_choice, "results": benches},
        "server": {"choice": server_choice, "results": servers},
        "features": [{"name": "cache_reuse", "error": None, "elapsed_s": 400.0, "runs": {
            "without": {"error": None, "requests": 4, "gen_tps": 20.0, "prompt_ms_mean": 900.0, "ttft_s_mean": 1.0,
                        "latency_s_mean": 3.0},
            "with": {"error": None, "requests": 4, "gen_tps": 20.0, "prompt_ms_mean": 120.0, "ttft_s_mean": 0.2,
                     "latency_s_mean": 2.2}}}],
    }  # fmt: skip


def render(name: str, result: dict[str, Any]) -> str:
    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = json.dumps
    defaults = yaml.safe_load((REPO / "roles/tune/defaults/main.yml").read_text())
    names = yaml.safe_load((REPO / "roles/tune/vars/main.yml").read_text())["_tune_var_names"]
    variables = {**defaults, "tune_client_counts": [1, 4], "ansible_managed": "Ansible managed",
                 "_tune_run_time": "20261203T160000Z", "_tune_var_names": names, "tune_result": result,
                 "_tune_all": [result]}  # fmt: skip
    return env.from_string((REPO / "templates" / f"{name}.j2").read_text()).render(variables)


def test_the_settings_file_holds_the_chosen_values_and_says_what_changed() -> None:
    text = render("tune_group_vars.yml", tune_result())
    values = yaml.safe_load(text)

    assert values["llama_server_threads"] == 8 and values["llama_server_parallel"] == 8
    assert values["llama_server_batch_size"] == 512 and values["llama_server_kv_unified"] is True
    assert "llama_server_threads: 8  # was 6" in text and "llama_server_batch_size: 512\n" in text
    assert "gain 36.1 %" in text and "gain 25.0 %" in text and "orin-1, orin-2" in text
    assert "llama_server_extra_args" not in values  # f16 KV: nothing extra


def test_the_reports_show_the_sweeps_the_choice_and_the_features() -> None:
    result = tune_result()
    markdown = render("tune.md", result)
    html = render("tune.html", result)

    assert "| threads | 6 | **8** |" in markdown and "| parallel | 4 | **8** |" in markdown
    assert "18.00 → 24.50 (gain 36.10 %)" in markdown
    assert "| 8 | True | 2048 | 20.00 · 2.00 · 0.20 | 75.00 · 4.00 · 0.50 | ok | CUDA | chosen |" in markdown
    assert "not run: does not fit the memory" in markdown
    assert "prompt 900.00 ms" in markdown and "prompt 120.00 ms" in markdown
    # Two charts, a bar per measured setting, the chosen one marked, the unfit one not drawn.
    assert html.count("<svg") == 2
    bars = re.findall(r'<rect [^>]*class="(\w+)"', html)
    assert bars == ["current", "chosen", "current", "chosen"], bars
    assert "not counted" in html and "◀ chosen" in html
    assert "<script" not in html and "src=" not in html  # self-contained
