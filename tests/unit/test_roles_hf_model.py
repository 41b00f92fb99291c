"""hf_model's logic without a fleet: both entry points against localhost (local connection) and HubSim.

The controller play fetches into a temporary cache, the "device" play (the same localhost) installs into a
temporary hf_model_dir: store layout, record, links, upgrade with previous.gguf,
and a rollback to a stored model that transfers and hashes nothing (pruning and the derived paths are
covered in test_roles_hf_model_templates.py, refusals on the jetsim fleet). Needs root (the role installs
files owned by root), like the end-to-end tier.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hub as hubsim
import pytest
import tiny_gguf as tiny

REPO = Path(__file__).resolve().parents[2]
REPO_ID = "jetson-llm/tiny-llama-GGUF"
FILE = "tiny-llama-test.F32.gguf"
PLAYBOOK = """\
---
- name: Fetch the model on the controller
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Fetch
      ansible.builtin.import_role:
        name: hf_model
        tasks_from: fetch

- name: Distribute the model (localhost plays the device)
  hosts: localhost
  gather_facts: false
  roles:
    - role: hf_model
"""
RECAP = re.compile(r"^localhost\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)", re.M)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hf_model installs root-owned files")


@dataclass
class Run:
    rc: int
    output: str
    changed: int
    failed: int


@dataclass
class Env:
    hub: Any
    tmp: Path
    digests: dict[str, str]

    @property
    def models(self) -> Path:
        return self.tmp / "models"

    def run(self, revision: str, *args: str, **variables: Any) -> Run:
        extra = {
            "hf_model_endpoint": self.hub.endpoint,
            "hf_model_repo_id": REPO_ID,
            "hf_model_filename": FILE,
            "hf_model_revision": revision,
            "hf_model_controller_cache_dir": str(self.tmp / "cache"),
            "hf_model_dir": str(self.models),
            "ansible_python_interpreter": sys.executable,
            **variables,
        }
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
        env.pop("HF_TOKEN", None)
        proc = subprocess.run(
            ["ansible-playbook", "-i", "localhost,", "-c", "local", str(self.tmp / "play.yml"), "-e", json.dumps(extra),
             *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        output = proc.stdout + proc.stderr
        recap = RECAP.search(output)
        assert recap, output[-3000:]
        return Run(proc.returncode, output, int(recap[1]), int(recap[2]))

    def link(self, name: str) -> str:
        path = self.models / name
        return os.readlink(path) if path.is_symlink() else ""

    def stores(self) -> set[str]:
        return {path.name for path in self.models.iterdir() if path.is_dir()}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("hf_model_role")
    (tmp / "play.yml").write_text(PLAYBOOK)
    digests = {}
    with hubsim.HubSim() as hub:
        for seed, name in enumerate("AB"):
            data = tiny.write_tiny_llama_gguf(tmp / f"{name}.gguf", seed=seed).read_bytes()
            hub.add_file(REPO_ID, FILE, data, revision=name, commit=hashlib.sha1(data).hexdigest())
            digests[name] = hashlib.sha256(data).hexdigest()
        yield Env(hub, tmp, digests)


def _ok(run: Run) -> None:
    assert run.rc == 0 and run.failed == 0, run.output[-5000:]


def test_first_deployment(env: Env) -> None:
    result = env.run("A")

    _ok(result)
    digest = env.digests["A"]
    store = env.models / digest
    assert env.link("current.gguf") == f"{digest}/{FILE}"
    assert not (env.models / "previous.gguf").exists()
    assert hashlib.sha256((env.models / "current.gguf").read_bytes()).hexdigest() == digest
    assert (store / f"{FILE}.sha256").read_text() == f"{digest}  {FILE}\n"
    assert oct((store / FILE).stat().st_mode & 0o777) == "0o444"
    assert oct(store.stat().st_mode & 0o777) == "0o755"
    assert oct((env.tmp / "cache").stat().st_mode & 0o777) == "0o700"
    assert env.hub.count("GET", f"/{REPO_ID}/resolve/") == 1


def test_upgrade_keeps_the_previous_model(env: Env) -> None:
    _ok(env.run("B"))

    assert env.link("current.gguf") == f"{env.digests['B']}/{FILE}"
    assert env.link("previous.gguf") == f"{env.digests['A']}/{FILE}"
    assert env.stores() == {env.digests["A"], env.digests["B"]}


def test_rollback_to_a_stored_model_transfers_and_hashes_nothing(env: Env) -> None:
    env.hub.clear_log()
    result = env.run("A", hf_model_sha256=env.digests["A"], hf_model_keep=1)

    _ok(result)
    assert env.hub.count() == 0  # pinned and in the controller cache
    for task in ("Copy the model from the controller cache", "Hash the copied model on the device"):
        assert re.search(rf"TASK \[hf_model : {task}\] \**\nskipping", result.output), result.output[-4000:]
    assert env.link("current.gguf") == f"{env.digests['A']}/{FILE}"
    assert env.link("previous.gguf") == f"{env.digests['B']}/{FILE}"
    assert env.stores() == {env.digests["A"], env.digests["B"]}  # link targets survive hf_model_keep: 1
