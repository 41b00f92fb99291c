"""bench/converge.py: medians, the ratios of one run, the no-op check, and the environment each config runs with."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_converge", REPO / "bench/converge.py")
assert spec and spec.loader
converge = importlib.util.module_from_spec(spec)
sys.modules["bench_converge"] = converge
spec.loader.exec_module(converge)


def run(hosts: int, kind: str, config: str, seconds: float, changed: int = 0, tasks: list | None = None):  # type: ignore[no-untyped-def]
    return converge.Run(hosts, config, kind, seconds, 0, changed, "log", tasks or [])


def test_medians_ratios_and_scaling_come_from_the_same_runs() -> None:
    runs = [run(1, "noop", "project", s) for s in (10.0, 12.0, 30.0)]
    runs += [run(1, "noop", "defaults", s) for s in (25.0, 24.0, 26.0)]
    runs += [run(3, "noop", "project", s) for s in (18.0, 15.0, 16.0)]
    result = converge.summary(runs, [1, 3])
    row = next(r for r in result["rows"] if (r["hosts"], r["kind"]) == (1, "noop"))
    assert (row["project_s"], row["defaults_s"], row["defaults_over_project"]) == (12.0, 25.0, 2.08)
    assert result["scaling"] == {"noop N=3 / N=1": 1.33}


def test_a_noop_run_that_changed_something_is_flagged_in_the_table() -> None:
    runs = [run(1, "noop", "project", 10.0, changed=2), run(1, "noop", "defaults", 20.0)]
    assert "NO (changed=2)" in converge.table(converge.summary(runs, [1]))


def test_top_tasks_are_the_mean_over_the_project_noop_runs() -> None:
    slow, fast = {"task": "gate : smoke", "runs": 1}, {"task": "facts", "runs": 1}
    runs = [
        run(1, "noop", "project", 10.0, tasks=[{**slow, "seconds": 4.0}, {**fast, "seconds": 1.0}]),
        run(1, "noop", "project", 10.0, tasks=[{**slow, "seconds": 6.0}, {**fast, "seconds": 1.0}]),
        run(1, "noop", "defaults", 10.0, tasks=[{**fast, "seconds": 99.0}]),
    ]
    assert converge.top_tasks(runs, 1) == [{**slow, "seconds": 5.0}, {**fast, "seconds": 1.0}]


def test_defaults_config_is_an_empty_file_with_only_the_project_paths(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ANSIBLE_PIPELINING", "True")  # a caller's setting must not leak into either config
    empty = tmp_path / "empty.cfg"
    defaults = converge.environment("defaults", tmp_path / "p.json", empty)
    project = converge.environment("project", tmp_path / "p.json", empty)
    assert defaults["ANSIBLE_CONFIG"] == str(empty) and project["ANSIBLE_CONFIG"] == str(REPO / "ansible.cfg")
    assert defaults["ANSIBLE_ROLES_PATH"] == str(REPO / "roles")
    assert "ANSIBLE_PIPELINING" not in defaults and "ANSIBLE_PIPELINING" not in project
