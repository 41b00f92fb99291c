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
TOKEN = "hf_role_secret_5Rt8uQ2wXy"
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
# What playbooks/deploy.yml passes from llama_server's defaults (a CPU build, as on jetsim).
FIT_SERVER = {"ctx_size": 2048, "parallel": 8, "ubatch_size": 256, "n_gpu_layers": "all", "flash_attn": "on",
              "load_mode": "none", "cache_ram_mib": 1024, "draft_model": "", "draft_n_gpu_layers": "all",
              "backend": "cpu"}  # fmt: skip
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
            "hf_model_fit_server": FIT_SERVER,
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
    with hubsim.HubSim(tokens=[TOKEN]) as hub:
        for seed, name in enumerate("ABC"):
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
    assert env.hub.count("GET", f"/lfs/{REPO_ID}/") == 1  # the download, from the host the Hub redirects to


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


def device_state(env: Env) -> tuple[str, set[str]]:
    return env.link("current.gguf"), env.stores() if env.models.is_dir() else set()


def test_the_fit_needs_the_server_settings(env: Env) -> None:
    before = device_state(env)
    result = env.run("B", hf_model_fit_server={"ctx_size": 2048})

    assert result.rc != 0 and device_state(env) == before
    flat = " ".join(result.output.split())
    missing = "parallel, ubatch_size, n_gpu_layers, load_mode, cache_ram_mib"
    assert f"hf_model_fit_server lacks {missing}" in flat, flat[-3000:]
    assert "playbooks/deploy.yml" in flat and "hf_model_fit_check: false" in flat


def test_the_fit_counts_the_draft_read_on_the_device(env: Env) -> None:
    # A "2 GB" draft (header and tensor infos of Llama-3.2-3B, sparse): the tiny model alone fits 4,000 MiB of RAM
    # (1,952 available after the reserve), with the draft it does not.
    tensors = tiny.q4_k_m_tensors(n_layer=28, n_embd=3072, n_ff=8192, n_head=24, n_head_kv=8, n_vocab=128256, tied=True)
    meta = {"llama.block_count": 28, "llama.embedding_length": 3072, "llama.attention.head_count": 24,
            "llama.attention.head_count_kv": 8, "llama.vocab_size": 128256}  # fmt: skip
    draft = tiny.write_gguf_header(env.tmp / "draft.gguf", "llama", meta, tensors=tensors)
    alone = env.run("B", "--check", hf_model_fit_memtotal_mb=4000)
    assert alone.rc == 0, alone.output[-3000:]
    before = device_state(env)
    result = env.run("B", hf_model_fit_memtotal_mb=4000, hf_model_fit_server={**FIT_SERVER, "draft_model": str(draft)})

    assert result.rc != 0 and device_state(env) == before
    flat = " ".join(result.output.split())
    assert re.search(r"localhost \(4000 MiB RAM\): \S+ does not fit: .* \+ draft model 2,\d{3} MiB", flat), flat[-3000:]
    assert f"draft {draft}" in flat


def test_device_download_does_not_take_the_token_across_the_redirect(env: Env) -> None:
    # hf_model_download_on: device runs get_url on the "device" (localhost here): the Hub's 302 goes to the second
    # host, which (like signed storage) refuses a request that still carries Authorization.
    env.hub.clear_log()
    result = env.run("C", hf_model_download_on="device", hf_model_token=TOKEN)

    _ok(result)
    assert TOKEN not in result.output
    assert env.link("current.gguf") == f"{env.digests['C']}/{FILE}"
    resolve = [(e.status, e.has_auth) for e in env.hub.matching("GET", f"/{REPO_ID}/resolve/")]
    cdn = [(e.status, e.has_auth) for e in env.hub.matching("GET", f"/lfs/{REPO_ID}/{env.digests['C']}")]
    assert resolve == [(302, True)] and cdn == [(200, False)], list(env.hub.summary())
