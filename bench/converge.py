#!/usr/bin/env python3
"""Converge benchmark on jetsim: site.yml from scratch and the no-op re-converge, for fleets of N hosts, with the
project's ansible.cfg and with Ansible's defaults (an empty config file; only the roles and collections paths set, so
that it runs). Medians of repeated runs; the ratios come from the same run. Prints a table and the top tasks of the
no-op run (bench/callback_plugins/bench_profile.py, what profile_tasks measures), and writes converge.json.

    JETSIM_FLEET=bench JETSIM_SUBNET_INDEX=30 python bench/converge.py --hosts 1 3 [6] [--repeats 3]

Needs root and Docker like every jetsim run; starts the fleet of each size (removing that fleet's previous hosts)
and removes it at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/jetsim"))

import harness  # noqa: E402

CONFIGS = ("project", "defaults")
VARIANT = "orin-nx-16-super"
# The ansible-playbook next to this Python (the venv's), else the one on PATH.
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"


@dataclass
class Run:
    hosts: int
    config: str
    kind: str  # "scratch" (a new fleet) or "noop" (a converged one)
    seconds: float
    rc: int
    changed: int  # summed over the fleet's hosts
    log: str
    tasks: list[dict[str, Any]] = field(default_factory=list)


def environment(config: str, profile: Path, empty_cfg: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's tools first
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_PLUGINS=str(REPO / "bench/callback_plugins"))
    env["BENCH_PROFILE_FILE"] = str(profile)
    if config == "project":
        env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
        env["ANSIBLE_CALLBACKS_ENABLED"] = "jetson_llm.fleet.rollout_recap,bench_profile"
    else:  # Ansible's defaults, except where the project's files are
        env.update(ANSIBLE_CONFIG=str(empty_cfg), ANSIBLE_ROLES_PATH=str(REPO / "roles"))
        env.update(ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"), ANSIBLE_CALLBACKS_ENABLED="bench_profile")
    return env


def converge(inventory: Path, hosts: int, config: str, kind: str, out: Path, number: int) -> Run:
    log = out / "logs" / f"n{hosts}-{kind}-{config}-{number}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        profile, empty_cfg = Path(tmp) / "profile.json", Path(tmp) / "empty.cfg"
        empty_cfg.write_text("")
        started = time.monotonic()
        with log.open("w") as output:
            proc = subprocess.run(
                [PLAYBOOK, "-i", str(inventory), "site.yml"], cwd=REPO, stdout=output,
                stderr=subprocess.STDOUT, env=environment(config, profile, empty_cfg), timeout=3600, check=False,
            )  # fmt: skip
        seconds = time.monotonic() - started
        result = json.loads(profile.read_text()) if profile.exists() else {"recap": {}, "tasks": []}
    changed = sum(stats["changed"] for host, stats in result["recap"].items() if host != "localhost")
    run = Run(hosts, config, kind, round(seconds, 1), proc.returncode, changed, str(log), result["tasks"])
    harness.log(f"N={hosts} {kind:7} {config:8} {run.seconds:7.1f} s rc={run.rc} changed={run.changed}")
    return run


def bench(sizes: list[int], repeats: int, noop_only: bool, out: Path, keep: bool) -> list[Run]:
    runs: list[Run] = []
    try:
        for hosts in sizes:
            scratch = ("project",) if noop_only else CONFIGS
            for number, config in enumerate(scratch):
                inventory = harness.up(hosts, VARIANT, {})
                runs.append(converge(inventory, hosts, config, "scratch", out, number))
                if runs[-1].rc != 0:
                    raise SystemExit(f"converge from scratch failed, see {runs[-1].log}")
            for number in range(repeats):  # interleaved, so that a slow spell of the machine hits both alike
                for config in CONFIGS:
                    runs.append(converge(inventory, hosts, config, "noop", out, number))
    finally:
        if not keep:
            harness.down()
    return runs


def median(runs: list[Run], hosts: int, kind: str, config: str) -> float | None:
    seconds = [run.seconds for run in runs if (run.hosts, run.kind, run.config) == (hosts, kind, config)]
    return round(statistics.median(seconds), 1) if seconds else None


def top_tasks(runs: list[Run], hosts: int, count: int = 10) -> list[dict[str, Any]]:
    """The no-op run's costliest tasks with the project's settings, mean seconds over the repeats."""
    chosen = [run for run in runs if (run.hosts, run.kind, run.config) == (hosts, "noop", "project")]
    total: dict[str, dict[str, Any]] = {}
    for run in chosen:
        for task in run.tasks:
            entry = total.setdefault(task["task"], {"task": task["task"], "seconds": 0.0, "runs": task["runs"]})
            entry["seconds"] += task["seconds"] / len(chosen)
    ranked = sorted(total.values(), key=lambda entry: -entry["seconds"])[:count]
    return [{**entry, "seconds": round(entry["seconds"], 2)} for entry in ranked]


def summary(runs: list[Run], sizes: list[int]) -> dict[str, Any]:
    rows = []
    for hosts in sizes:
        for kind in ("scratch", "noop"):
            project, defaults = median(runs, hosts, kind, "project"), median(runs, hosts, kind, "defaults")
            if project is None:
                continue
            samples = [r for r in runs if (r.hosts, r.kind) == (hosts, kind)]
            rows.append({
                "hosts": hosts, "kind": kind, "project_s": project, "defaults_s": defaults,
                "defaults_over_project": round(defaults / project, 2) if defaults and project else None,
                "samples": len(samples), "all_ok": all(r.rc == 0 for r in samples),
                "noop_changed": sum(r.changed for r in samples) if kind == "noop" else None,
            })  # fmt: skip
    base = median(runs, sizes[0], "noop", "project")
    scaling = {
        f"noop N={n} / N={sizes[0]}": round(m / base, 2)
        for n in sizes[1:]
        if base and (m := median(runs, n, "noop", "project"))
    }
    return {"rows": rows, "scaling": scaling, "top_noop_tasks": {n: top_tasks(runs, n) for n in sizes}}


def table(result: dict[str, Any]) -> str:
    lines = [
        "| N | run | project ansible.cfg (s) | Ansible defaults (s) | defaults / project | runs | ok |",
        "|---|-----|------------------------:|---------------------:|-------------------:|-----:|----|",
    ]
    for row in result["rows"]:
        ok = "yes" if row["all_ok"] and not row["noop_changed"] else f"NO (changed={row['noop_changed']})"
        lines.append(
            f"| {row['hosts']} | {row['kind']} | {row['project_s']} | {row['defaults_s'] or '-'} | "
            f"{row['defaults_over_project'] or '-'} | {row['samples']} | {ok} |"
        )
    lines += [f"{name}: {ratio}" for name, ratio in result["scaling"].items()]
    for hosts, tasks in result["top_noop_tasks"].items():
        lines += ["", f"No-op N={hosts}, project settings: top tasks (mean s over repeats, occurrences)"]
        lines += [f"  {task['seconds']:7.2f}  x{task['runs']:<2} {task['task']}" for task in tasks]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 3], help="fleet sizes (default: 1 3)")
    parser.add_argument("--repeats", type=int, default=3, help="no-op runs per size and config (default 3)")
    parser.add_argument("--noop-only", action="store_true", help="from scratch once (project settings), then no-ops")
    parser.add_argument("--out", type=Path, help="result dir (default reports/bench-converge/<UTC time>)")
    parser.add_argument("--keep", action="store_true", help="leave the last fleet up")
    args = parser.parse_args(argv)
    out = args.out or REPO / "reports/bench-converge" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    runs = bench(args.hosts, args.repeats, args.noop_only, out, args.keep)
    result = {"settings": vars(args) | {"out": str(out)}, **summary(runs, args.hosts)}
    result["bench_seconds"] = round(time.monotonic() - started, 1)
    result["runs"] = [asdict(run) for run in runs]
    (out / "converge.json").write_text(json.dumps(result, indent=1, default=str))
    text = table(result)
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"\nwritten: {out / 'converge.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
