#!/usr/bin/env python3
"""The tuning sweep, run ON a Jetson by roles/tune (stdlib only, Python >= 3.10): tune_sweep.py PLAN.json

The plan (written by roles/tune/tasks/sweep.yml) names the release's image, model, docker arguments and
llama-server arguments, and three lists of settings:

    bench     llama-bench runs in the release's image (docker run --rm --network=none, the model mounted
              read-only): threads, batch/ubatch, flash attention, KV cache type; tokens/s of prompt (pp) and
              generation (tg), and the backends llama-bench used.
    server    a temporary llama-server (container ``tune_container``, 127.0.0.1:port, no API key) started per
              setting with the release's arguments and the setting's overrides (parallel slots, unified KV,
              context): N concurrent streamed chat completions for each N in ``client_counts``: aggregate
              tokens/s, the slowest request's latency and time to first token.
    features  pairs measured on the same prompts, without and with ({"name", "without": {"settings", "draft"},
              "with": {...}}): prompt-cache reuse, the draft model.

Every setting carries ``fit_ok`` (the memory fit, checked by the role before): one that does not fit is never
started. A run is started only while the budget (``budget_s``) is not spent. stdout: one JSON object
``{"bench": [...], "server": [...], "features": [...], "elapsed_s": ...}``, each result as
jetson_llm.fleet.tune_choose reads it, with the server's load log (``log``) or llama-bench's ``backends`` for the
backend proof. The caller removes the temporary container if this script is killed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Server flags that a setting overrides: settings key -> flag (booleans: (on flag, off flag)).
FLAGS: dict[str, str] = {
    "ctx_size": "--ctx-size",
    "threads": "--threads",
    "parallel": "--parallel",
    "batch_size": "--batch-size",
    "ubatch_size": "--ubatch-size",
    "flash_attn": "--flash-attn",
    "cache_type_k": "--cache-type-k",
    "cache_type_v": "--cache-type-v",
    "cache_reuse": "--cache-reuse",
    "port": "--port",
    "host": "--host",
}
SWITCHES: dict[str, tuple[str, str]] = {"kv_unified": ("--kv-unified", "--no-kv-unified")}
# Flags removed from the release's arguments: the key (the tuning server listens on loopback only) and, for a
# run without the draft model, the speculative decoding flags (each with its value).
KEYED = ("--api-key-file", "--api-key")
DRAFT = ("--spec-draft-model", "--spec-draft-ngl", "--spec-draft-n-max")
# Docker arguments of the release not used for a tuning container (each with its value), and flags without one.
DOCKER_DROPPED = ("--name", "--label", "--health-cmd", "--health-interval", "--health-timeout", "--health-retries",
                  "--health-start-period", "--log-driver", "--log-opt")  # fmt: skip
DOCKER_SWITCHES_DROPPED = ("--detach",)
PROMPTS = (
    "Name three colours.",
    "What is 12 times 12?",
    "Give one tip for writing readable code.",
    "Translate 'good morning' into French.",
    "What is the capital of Japan?",
    "Name a prime number larger than 10.",
    "What does CPU stand for?",
    "Say hello in one short sentence.",
)
# A shared document after a varying first line: the prefix differs, so only --cache-reuse (KV shifting of
# matching chunks) can reuse the document's cache.
# Short enough for a small context (a byte-level test vocabulary makes about one token per character).
DOCUMENT = " ".join(f"Item {i}: the board logs its temperature, clocks and memory." for i in range(12))


def server_args(args: list[str], settings: dict[str, Any], draft: bool) -> list[str]:
    """The release's llama-server arguments with the setting's values, no key, and the draft only when wanted."""
    out: list[str] = []
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg in KEYED or (not draft and arg in DRAFT):
            skip = True
            continue
        if arg in (on for on, _off in SWITCHES.values()) or arg in (off for _on, off in SWITCHES.values()):
            continue
        key = next((k for k, flag in FLAGS.items() if flag == arg), None)
        if key is not None and key in settings:
            skip = index + 1 < len(args)
            continue
        out.append(arg)
    for key, value in settings.items():
        if key in FLAGS and value is not None and not (key == "cache_reuse" and int(value) <= 0):
            out += [FLAGS[key], str(value)]
    for key, (on, off) in SWITCHES.items():
        current = any(a == on for a in args) and not any(a == off for a in args)
        out.append(on if settings.get(key, current) else off)
    return out


def docker_args(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in DOCKER_DROPPED:
            skip = True
            continue
        if arg in DOCKER_SWITCHES_DROPPED or arg.split("=", 1)[0] in DOCKER_DROPPED:
            continue
        out.append(arg)
    return out


class Sweep:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.started = time.monotonic()
        self.budget = float(plan.get("budget_s") or 0)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def spent(self) -> bool:
        return self.budget > 0 and self.elapsed() >= self.budget

    def skipped(self, settings: dict[str, Any], why: str) -> dict[str, Any]:
        return {"settings": settings, "fit_ok": settings.get("_fit_ok", True), "backend_ok": False,
                "error": why, "elapsed_s": self.elapsed()}  # fmt: skip

    # --- llama-bench ------------------------------------------------------------------------------------
    def bench(self, entry: dict[str, Any]) -> dict[str, Any]:
        settings = {k: v for k, v in entry.items() if not k.startswith("_")}
        if not entry.get("_fit_ok", True):
            return self.skipped(settings, "not run: does not fit the memory")
        if self.spent():
            return self.skipped(settings, "not run: the budget is spent")
        plan, bench = self.plan, self.plan["bench"]
        cache_type = str(settings.get("cache_type", "f16"))
        argv = ["docker", "run", "--rm", "--network=none"]
        argv += ["--runtime", plan["runtime"]] if plan.get("runtime") else []
        argv += ["--volume", f"{plan['model']}:/models/model.gguf:ro", "--entrypoint", "/usr/local/bin/llama-bench"]
        argv += [plan["image"], "-m", "/models/model.gguf", "-o", "json",
                 "-p", str(bench["prompt_tokens"]), "-n", str(bench["gen_tokens"]), "-r", str(bench["repetitions"]),
                 "-ngl", str(bench["ngl"]), "-t", str(settings["threads"]), "-fa", str(settings["flash_attn"]),
                 "-b", str(settings["batch_size"]), "-ub", str(settings["ubatch_size"]), "-ctk", cache_type,
                 "-ctv", cache_type if str(settings["flash_attn"]) != "off" else "f16"]  # fmt: skip
        result: dict[str, Any] = {"settings": settings, "fit_ok": True, "kind": "bench"}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=bench.get("timeout", 600), check=False)
        except subprocess.TimeoutExpired:
            return {**result, "backend_ok": False, "error": "llama-bench timed out", "elapsed_s": self.elapsed()}
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            return {**result, "backend_ok": False, "error": f"llama-bench exited {done.returncode}: {' | '.join(tail)}",
                    "elapsed_s": self.elapsed()}  # fmt: skip
        rows = json.loads(done.stdout)
        for row in rows:
            if int(row.get("n_prompt") or 0) > 0:
                result["prompt_tps"] = round(float(row["avg_ts"]), 3)
            elif int(row.get("n_gen") or 0) > 0:
                result["gen_tps"] = round(float(row["avg_ts"]), 3)
        result["backends"] = rows[0].get("backends", "") if rows else ""
        result["gpu_layers"] = rows[0].get("n_gpu_layers") if rows else None
        return {**result, "error": None, "elapsed_s": self.elapsed()}

    # --- live server --------------------------------------------------------------------------------------
    def start_server(self, settings: dict[str, Any], draft: bool) -> tuple[str | None, str]:
        plan = self.plan
        name = plan["tune_container"]
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
        overrides = {**settings, "host": "127.0.0.1", "port": plan["server"]["port"]}
        argv = ["docker", "run", "--detach", "--name", name, "--log-driver", "json-file"]
        extra_docker: list[str] = []
        extra_args: list[str] = []
        if draft and not plan.get("draft_in_release") and plan.get("draft_path"):
            target = "/models/draft/" + str(plan["draft_path"]).rsplit("/", 1)[-1]
            extra_docker = ["--mount", f"type=bind,source={plan['draft_path']},target={target},readonly"]
            extra_args = ["--spec-draft-model", target, "--spec-draft-ngl", str(plan.get("draft_ngl", "all"))]
        argv += [*docker_args(plan["docker_args"]), *extra_docker, plan["image"]]
        argv += [*server_args(plan["args"], overrides, draft), *extra_args]
        started = subprocess.run(argv, capture_output=True, text=True, check=False)
        if started.returncode != 0:
            return f"docker run exited {started.returncode}: {started.stderr.strip()[-300:]}", ""
        deadline = time.monotonic() + float(plan["server"].get("load_timeout", 300))
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base()}/health", timeout=5) as response:
                    if response.status == 200:
                        return None, self.logs()
            except (urllib.error.URLError, OSError):
                pass
            state = subprocess.run(["docker", "inspect", "--format", "{{.State.Running}}", name],
                                   capture_output=True, text=True, check=False)  # fmt: skip
            if state.stdout.strip() != "true":
                return "the server exited while loading", self.logs()
            time.sleep(1)
        return "the server did not answer /health in time", self.logs()

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", self.plan["tune_container"]], capture_output=True, text=True,
                              check=False)  # fmt: skip
        return (done.stdout + done.stderr)[-20000:]

    def stop_server(self) -> None:
        subprocess.run(["docker", "rm", "--force", self.plan["tune_container"]], capture_output=True, check=False)

    def base(self) -> str:
        return f"http://127.0.0.1:{self.plan['server']['port']}"

    def chat(self, content: str, max_tokens: int) -> dict[str, Any]:
        body = {"messages": [{"role": "user", "content": content}], "stream": True, "max_tokens": max_tokens,
                "temperature": 0, "stream_options": {"include_usage": True}}  # fmt: skip
        request = urllib.request.Request(f"{self.base()}/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        started = time.perf_counter()
        ttft: float | None = None
        timings: dict[str, Any] = {}
        with urllib.request.urlopen(request, timeout=float(self.plan["server"].get("request_timeout", 300))) as resp:
            for raw in resp:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                chunk = json.loads(line[5:])
                for choice in chunk.get("choices") or []:
                    if ttft is None and (choice.get("delta") or {}).get("content"):
                        ttft = time.perf_counter() - started
                timings = chunk.get("timings") or timings
        latency = time.perf_counter() - started
        return {"latency_s": latency, "ttft_s": ttft if ttft is not None else latency,
                "predicted_n": int(timings.get("predicted_n") or 0),
                "predicted_per_second": timings.get("predicted_per_second"),
                "prompt_ms": timings.get("prompt_ms"), "prompt_n": timings.get("prompt_n")}  # fmt: skip

    def concurrent(self, clients: int, max_tokens: int) -> dict[str, Any]:
        barrier = threading.Barrier(clients)

        def one(index: int) -> dict[str, Any]:
            barrier.wait()
            return self.chat(PROMPTS[index % len(PROMPTS)], max_tokens)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            results = list(pool.map(one, range(clients)))
        wall = time.perf_counter() - started
        generated = sum(r["predicted_n"] for r in results)
        return {"aggregate_tps": round(generated / wall, 3) if wall > 0 else None,
                "latency_s": round(max(r["latency_s"] for r in results), 3),
                "ttft_s": round(max(r["ttft_s"] for r in results), 3),
                "latency_s_mean": round(sum(r["latency_s"] for r in results) / clients, 3)}  # fmt: skip

    def server(self, entry: dict[str, Any]) -> dict[str, Any]:
        settings = {k: v for k, v in entry.items() if not k.startswith("_")}
        if not entry.get("_fit_ok", True):
            return self.skipped(settings, "not run: does not fit the memory")
        if self.spent():
            return self.skipped(settings, "not run: the budget is spent")
        result: dict[str, Any] = {"settings": settings, "fit_ok": True, "kind": "server"}
        error, log = self.start_server(settings, draft=bool(self.plan.get("draft_in_release")))
        result["log"] = log
        try:
            if error is None:
                self.chat("Reply with one word.", 4)  # untimed warm-up
                result["clients"] = {}
                for clients in self.plan["server"]["client_counts"]:
                    if int(clients) > int(settings.get("parallel") or 1) * 4:
                        continue
                    result["clients"][str(clients)] = self.concurrent(int(clients), self.plan["server"]["max_tokens"])
        except urllib.error.HTTPError as exc:
            error = f"request failed: HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')[:300]}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = f"request failed: {exc}"
        finally:
            self.stop_server()
        return {**result, "error": error, "elapsed_s": self.elapsed()}

    # --- with / without -------------------------------------------------------------------------------
    def feature(self, entry: dict[str, Any]) -> dict[str, Any]:
        """One feature, measured on the same prompts without, then with it."""
        name = entry["name"]
        runs: dict[str, Any] = {}
        for label in ("without", "with"):
            settings, draft = entry[label]["settings"], bool(entry[label].get("draft"))
            if self.spent():
                return {
                    "name": name,
                    "error": "not run: the budget is spent",
                    "runs": runs,
                    "elapsed_s": self.elapsed(),
                }
            error, log = self.start_server(settings, draft=draft)
            measured: list[dict[str, Any]] = []
            try:
                if error is None:
                    self.chat("Reply with one word.", 4)
                    for index in range(int(entry.get("requests", 4))):
                        if name == "cache_reuse":
                            prompt = f"Note {index}: answer in one sentence.\n{DOCUMENT}\nHow often is it logged?"
                        else:
                            prompt = PROMPTS[index % len(PROMPTS)]
                        measured.append(self.chat(prompt, self.plan["server"]["max_tokens"]))
            except urllib.error.HTTPError as exc:
                error = f"request failed: HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')[:300]}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                error = f"request failed: {exc}"
            finally:
                self.stop_server()
            runs[label] = {"error": error, "log": log[-4000:], **_summary(measured)}
        return {"name": name, "error": None, "runs": runs, "elapsed_s": self.elapsed()}

    def run(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bench": [], "server": [], "features": []}
        grid = self.plan.get("bench", {}).get("grid", [])
        if grid:  # an untimed first run: the model into the page cache, the image's layers warm
            self.bench(grid[0])
        for entry in grid:
            out["bench"].append(self.bench(entry))
        for entry in self.plan.get("server", {}).get("grid", []):
            out["server"].append(self.server(entry))
        for entry in self.plan.get("features", []):
            out["features"].append(self.feature(entry))
        out["elapsed_s"] = self.elapsed()
        return out


def _summary(measured: list[dict[str, Any]]) -> dict[str, Any]:
    if not measured:
        return {"requests": 0}
    rates = [float(r["predicted_per_second"]) for r in measured if r.get("predicted_per_second") is not None]
    prompt = [float(r["prompt_ms"]) for r in measured if r.get("prompt_ms") is not None]
    return {"requests": len(measured),
            "gen_tps": round(sum(rates) / len(rates), 3) if rates else None,
            "prompt_ms_mean": round(sum(prompt) / len(prompt), 2) if prompt else None,
            "ttft_s_mean": round(sum(r["ttft_s"] for r in measured) / len(measured), 4),
            "latency_s_mean": round(sum(r["latency_s"] for r in measured) / len(measured), 4)}  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: tune_sweep.py PLAN.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        plan = json.load(handle)
    sweep = Sweep(plan)
    try:
        print(json.dumps(sweep.run()))
    finally:
        sweep.stop_server()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
