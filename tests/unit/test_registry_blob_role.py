"""hf_model with hf_model_transfer: registry, on localhost (controller and "device"), against a real docker-registry.

The controller play pushes the hub download as a blob of the loopback registry (push endpoint, push user); the
device play fetches it from the read-only pull endpoint with the pull user and the CA where the fleet_registry
role installs it (/etc/docker/certs.d/<endpoint>/ca.crt, created here and removed at the end). Needs root.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hub as hubsim
import pytest
import tiny_gguf as tiny
from distribution import REGISTRY_BIN, USERS, Registry, registry_pair
from test_roles_hf_model import FILE, FIT_SERVER, PLAYBOOK, RECAP, REPO, REPO_ID, Run

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="hf_model installs root-owned files"),
    pytest.mark.skipif(not os.access(REGISTRY_BIN, os.X_OK), reason="docker-registry missing: make system-deps"),
]
MODELS_REPO = "jetson-llm-fleet/models"


@dataclass
class Env:
    tmp: Path
    hub: Any
    push: Registry
    pull: Registry
    ca: Path
    digests: dict[str, str]
    sizes: dict[str, int]

    @property
    def models(self) -> Path:
        return self.tmp / "models"

    def fact(self) -> dict[str, str]:
        return {
            "endpoint": self.pull.endpoint,
            "push_endpoint": self.push.endpoint,
            "ca_file": str(self.ca),
            "pull_user": "pull",
            "pull_password": USERS["pull"],
            "push_user": "push",
            "push_password": USERS["push"],
            "model_repository": MODELS_REPO,
        }

    def run(self, revision: str, *args: str, registry: bool = True, **variables: Any) -> Run:
        extra = {
            "hf_model_endpoint": self.hub.endpoint,
            "hf_model_repo_id": REPO_ID,
            "hf_model_filename": FILE,
            "hf_model_revision": revision,
            "hf_model_controller_cache_dir": str(self.tmp / "cache"),
            "hf_model_dir": str(self.models),
            "ansible_python_interpreter": sys.executable,
            "hf_model_fit_server": FIT_SERVER,
            **({"fleet_registry": self.fact()} if registry else {}),
            **variables,
        }
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
        proc = subprocess.run(
            ["ansible-playbook", "-i", "localhost,", "-c", "local", str(self.tmp / "play.yml"), "-e", json.dumps(extra),
             *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        output = proc.stdout + proc.stderr
        recap = RECAP.search(output)
        assert recap, output[-3000:]
        return Run(proc.returncode, output, int(recap[1]), int(recap[2]))

    def blob_gets(self, name: str) -> list[dict[str, str]]:
        return [e for e in self.pull.access() if e["method"] == "GET" and self.digests[name] in e["path"]]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("hf_model_registry")
    (tmp / "play.yml").write_text(PLAYBOOK)
    digests, sizes = {}, {}
    with hubsim.HubSim() as hub, registry_pair(tmp / "registry") as (push, pull, ca):
        for seed, name in enumerate("AB"):
            data = tiny.write_tiny_llama_gguf(tmp / f"{name}.gguf", seed=seed + 10, n_embd=256).read_bytes()
            hub.add_file(REPO_ID, FILE, data, revision=name, commit=hashlib.sha1(data).hexdigest())
            digests[name], sizes[name] = hashlib.sha256(data).hexdigest(), len(data)
        certs = Path("/etc/docker/certs.d") / pull.endpoint
        certs.mkdir(parents=True)
        try:
            shutil.copy(ca, certs / "ca.crt")
            yield Env(tmp, hub, push, pull, ca, digests, sizes)
        finally:
            shutil.rmtree(certs)


def _ok(run: Run) -> None:
    assert run.rc == 0 and run.failed == 0, run.output[-5000:]


def test_the_model_travels_as_a_registry_blob(env: Env) -> None:
    result = env.run("A")

    _ok(result)
    digest = env.digests["A"]
    stored = env.models / digest / FILE
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    assert (env.models / "current.gguf").resolve() == stored.resolve()
    assert (env.models / digest / f"{FILE}.sha256").read_text() == f"{digest}  {FILE}\n"
    assert [e["status"] for e in env.blob_gets("A")] == ["200"]
    assert any(e["method"] == "PATCH" for e in env.push.access())
    assert "Fetch and verify the model blob" in result.output and "Copy the model from the controller" in result.output
    assert USERS["pull"] not in result.output and USERS["push"] not in result.output

    again = env.run("A")
    _ok(again)
    assert again.changed == 0 and len(env.blob_gets("A")) == 1
    check = env.run("A", "--check", "--diff")
    _ok(check)
    assert check.changed == 0


def test_an_interrupted_device_fetch_continues(env: Env) -> None:
    digest, size = env.digests["B"], env.sizes["B"]
    (env.models / digest).mkdir(parents=True)
    half = size // 2
    (env.models / digest / f"{FILE}.partial").write_bytes((env.tmp / "B.gguf").read_bytes()[:half])
    result = env.run("B")

    _ok(result)
    assert hashlib.sha256((env.models / "current.gguf").read_bytes()).hexdigest() == digest
    last = env.blob_gets("B")[-1]
    assert last["status"] == "206" and int(last["bytes"]) == size - half
    assert f"received {size - half} bytes, resumed at {half}, sha256 verified" in " ".join(result.output.split())
    assert not (env.models / digest / f"{FILE}.partial").exists()


def test_registry_transfer_without_a_registry_changes_nothing(env: Env) -> None:
    before = os.readlink(env.models / "current.gguf")
    result = env.run("A", registry=False, hf_model_transfer="registry")

    assert result.rc != 0 and os.readlink(env.models / "current.gguf") == before
    flat = " ".join(result.output.split())
    assert "no fleet registry is known in this run" in flat and "hf_model_transfer: copy" in flat
