"""hf_model on a 3-host jetsim fleet: the hub is asked once per fleet, devices get a verified copy.

A HubSim (tests/fixtures/hub.py) listens on the fleet bridge's gateway address, which the controller and,
for hf_model_download_on: device, the emulated devices reach (the fleet network stays --internal). Every
run is `site.yml --tags model` (preflight always runs, then the fetch play on localhost, then the device
play in serial batches). The tests run in file order and share the fleet and the controller cache:

  A (seed 0, main)  first deployment                 -> current A
  B (seed 1, gated) upgrade with a token             -> current B, previous A
  C (seed 2)        corrupt on the hub               -> refused on the controller
  D (seed 3)        corrupt in the controller cache  -> refused on the canary
  E (seed 4)        does not fit / no free space     -> refused before any change
  F (seed 5)        downloaded by the devices        -> current F, previous B, A pruned
  G (seed 6)        a half-fetched partial on every device, from the fleet registry -> resumed, current G
  H (1 GiB, sparse) pushed and fetched through the fleet registry -> peak RSS of both modules recorded

With the fleet registry in site.yml (its plays carry the tag model), hf_model_transfer: auto moves the model as a
blob of that registry: the controller pushes it once, the devices fetch it (D is checked both ways).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import hub as hubsim
import pytest
import tiny_gguf as tiny
from conftest import REPO, Fleet, PlayResult

pytestmark = pytest.mark.jetsim

REPO_ID = "jetson-llm/tiny-llama-GGUF"
GATED = "meta-llama/tiny-llama-gated-GGUF"
FILE = "tiny-llama-test.F32.gguf"
TOKEN = "hf_e2e_secret_Zq81vXk3mP0wLr"
MODELS = "/opt/llm/models"
RELEASES = "/etc/llama-server"  # llama_server's release records
DEVICE_DIRS = ["/opt", "/etc", "/home", "/root", "/var/log", "/tmp"]
DEFAULT_VARIANT = "orin-nx-16-super"
ONE_BATCH = ["100%"]  # fleet_serial for the runs that do not test the canary: one batch is faster
# site.yml runs the preflight (tagged always), the model plays (tagged model) and the summary.
PLAYBOOK = os.environ.get("HF_MODEL_E2E_PLAYBOOK", "site.yml")
# site.yml runs the fleet registry's plays under the tag model: the model then travels as a registry blob.
REGISTRY = "playbooks/registry.yml" in (REPO / "site.yml").read_text()
needs_registry = pytest.mark.skipif(not REGISTRY, reason="site.yml does not run the fleet registry yet")


@dataclass
class Env:
    fleet: Fleet
    hub: Any
    cache: Path
    models: dict[str, bytes]
    tmp: Path

    def sha(self, name: str) -> str:
        return hashlib.sha256(self.models[name]).hexdigest()

    def run(self, *args: str, timing: str | None = None, **variables: Any) -> PlayResult:
        """site.yml --tags model with the hub, the controller cache and the given variables."""
        extra = {
            "hf_model_endpoint": self.hub.endpoint,
            "hf_model_repo_id": REPO_ID,
            "hf_model_filename": FILE,
            "hf_model_revision": "main",
            "hf_model_controller_cache_dir": str(self.cache),
            **variables,
        }
        return self.fleet.playbook(PLAYBOOK, "--tags", "model", "-e", json.dumps(extra), *args, timing=timing)

    def current(self, host: str) -> tuple[str, str]:
        """(readlink of current.gguf, sha256 of what it resolves to)."""
        target = self.fleet.exec(host, "readlink", f"{MODELS}/current.gguf", check=False).strip()
        digest = self.fleet.exec(host, "sha256sum", f"{MODELS}/current.gguf", check=False).split()
        return target, digest[0] if digest else ""

    def stores(self, host: str) -> set[str]:
        out = self.fleet.exec(host, "find", MODELS, "-mindepth", "1", "-maxdepth", "1", "-type", "d", check=False)
        return {Path(line).name for line in out.split()}


def _gguf(tmp: Path, seed: int) -> bytes:
    return bytes(tiny.write_tiny_llama_gguf(tmp / f"seed{seed}.gguf", seed=seed).read_bytes())


@pytest.fixture(scope="module")
def env(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # test_site.py may have left jetson-3 as an R35 host: bring back the fleet's initial jetson-3.
    host_json = json.loads(fleet.exec("jetson-3", "cat", "/etc/jetsim/host.json", check=False) or "{}")
    if host_json.get("variant") != DEFAULT_VARIANT:
        fleet.recreate("jetson-3", variant=DEFAULT_VARIANT, power_mode="15W")
    for host in fleet.hosts:  # no model, and no server release whose model would be kept from pruning
        fleet.exec(host, "rm", "-rf", MODELS, f"{RELEASES}/release.json", f"{RELEASES}/previous.json")
    tmp = tmp_path_factory.mktemp("hf_model")
    models = {name: _gguf(tmp, seed) for seed, name in enumerate("ABCDEF")}
    gateway = str(harness.SUBNET.network_address + 1)  # reachable from the controller and the devices
    with hubsim.HubSim(tokens=[TOKEN], host=gateway) as hub:
        hub.add_file(REPO_ID, FILE, models["A"])
        hub.add_file(GATED, FILE, models["B"], gated=True)
        hub.add_file(REPO_ID, FILE, models["C"], revision="c-corrupt", commit="c" * 40)
        hub.add_file(REPO_ID, FILE, models["E"], revision="e-big", commit="e" * 40)
        hub.add_file(REPO_ID, FILE, models["F"], revision="f-device", commit="f" * 40)
        yield Env(fleet, hub, tmp / "controller-cache", models, tmp)
    for host in fleet.hosts:  # leave the devices as the other tests expect them
        fleet.exec(host, "rm", "-rf", MODELS, check=False)


def _assert_ok(result: PlayResult, hosts: list[str]) -> None:
    assert result.rc == 0, result.output[-6000:]
    assert set(result.recap) == set(hosts), result.output[-3000:]
    for host, stats in result.recap.items():
        assert stats["failed"] == 0 and stats["unreachable"] == 0, f"{host}: {stats}\n{result.output[-4000:]}"


def _flat(result: PlayResult) -> str:
    """The output with every run of whitespace as one space (the yaml callback wraps long messages)."""
    return " ".join(result.output.split())


def _file_gets(hub: Any, repo_id: str = REPO_ID) -> int:
    """Downloads of the file: like huggingface.co, the hub redirects them to a second host (HubSim's CDN)."""
    return sum(1 for r in hub.matching("GET", f"/lfs/{repo_id}/") if FILE in r.query)


def test_first_run_fetches_once_and_distributes(env: Env) -> None:
    env.hub.clear_log()
    result = env.run(timing="model: first deployment (3 hosts)")

    _assert_ok(result, env.fleet.hosts)
    assert _file_gets(env.hub) == 1, list(env.hub.summary())  # once for the whole fleet
    digest = env.sha("A")
    assert (env.cache / digest / FILE).read_bytes() == env.models["A"]
    assert oct(env.cache.stat().st_mode & 0o777) == "0o700"
    for host in env.fleet.hosts:
        assert result.recap[host]["changed"] > 0
        assert env.current(host) == (f"{digest}/{FILE}", digest), host
        mode = env.fleet.exec(host, "stat", "-c", "%a %U", f"{MODELS}/{digest}/{FILE}").split()
        assert mode == ["444", "root"], host
        record = env.fleet.exec(
            host, "sh", "-c", f"cd {MODELS}/{digest} && cat {FILE}.sha256 && sha256sum -c {FILE}.sha256"
        )
        assert record.splitlines() == [f"{digest}  {FILE}", f"{FILE}: OK"], host
        assert not env.fleet.exists(host, f"{MODELS}/previous.gguf")
    if REGISTRY:  # pushed once by the controller, fetched by every device; no SSH copy
        assert result.ran(lambda e: e["action"].endswith("registry_blob")) == {"localhost": "changed"}
        fetched = result.ran(lambda e: e["action"].endswith("blob_fetch"))
        assert fetched == {host: "changed" for host in env.fleet.hosts}, fetched
        copied = result.ran(lambda e: e["action"].endswith("copy") and str(e["args"].get("src", "")).endswith(FILE))
        assert set(copied.values()) <= {"skipped"}, copied


def test_rerun_changes_nothing_and_downloads_nothing(env: Env) -> None:
    env.hub.clear_log()
    again = env.run(timing="model: no-op re-run")

    _assert_ok(again, env.fleet.hosts)
    assert again.changed() == {host: 0 for host in env.fleet.hosts}, again.output[-4000:]
    assert _file_gets(env.hub) == 0 and env.hub.count("HEAD") == 0, list(env.hub.summary())
    assert env.hub.count("GET", "/api/models/") == 1  # the commit and digest, once per run

    env.hub.clear_log()
    pinned = env.run(hf_model_sha256=env.sha("A"), fleet_serial=ONE_BATCH, timing="model: no-op re-run, sha256 pinned")

    _assert_ok(pinned, env.fleet.hosts)
    assert pinned.changed() == {host: 0 for host in env.fleet.hosts}, pinned.output[-4000:]
    assert env.hub.count() == 0, list(env.hub.summary())


def test_check_mode_shows_an_upgrade_and_changes_nothing(env: Env) -> None:
    env.hub.clear_log()
    result = env.run(
        "--check", "--diff", hf_model_revision="f-device", fleet_serial=ONE_BATCH, timing="model: --check, new revision"
    )

    _assert_ok(result, env.fleet.hosts)
    assert _file_gets(env.hub) == 0, list(env.hub.summary())
    assert not (env.cache / env.sha("F")).exists()
    for host in env.fleet.hosts:
        assert result.recap[host]["changed"] > 0  # it reports what would change
        assert env.current(host)[1] == env.sha("A"), host
        assert env.stores(host) == {env.sha("A")}, host


def test_corrupt_download_is_refused_on_the_controller(env: Env) -> None:
    env.hub.clear_log()
    env.hub.set_fault(REPO_ID, FILE, "corrupt")
    try:
        result = env.run(hf_model_revision="c-corrupt", fleet_serial=ONE_BATCH)
    finally:
        env.hub.clear_faults()

    assert result.rc != 0
    flat = _flat(result)
    assert "verification failed" in flat and env.sha("C") in flat, result.output[-4000:]
    assert "No device was changed" in flat
    assert _file_gets(env.hub) == 1
    assert not (env.cache / env.sha("C")).exists()
    for host in env.fleet.hosts:
        assert result.recap[host]["changed"] == 0, result.recap
        assert env.current(host)[1] == env.sha("A"), host
        assert env.stores(host) == {env.sha("A")}, host


def test_gated_repo_without_token_is_refused_clearly(env: Env) -> None:
    result = env.run(hf_model_repo_id=GATED, fleet_serial=ONE_BATCH)

    assert result.rc != 0
    assert f"repo {GATED} is gated" in _flat(result) and "token" in _flat(result), result.output[-4000:]
    for host in env.fleet.hosts:
        assert result.recap[host]["changed"] == 0
        assert env.current(host)[1] == env.sha("A"), host


def test_gated_repo_with_token_upgrades_and_never_shows_the_token(env: Env) -> None:
    vault = env.tmp / "secrets.yml"  # stands in for an ansible-vault file
    vault.write_text(f"hf_model_token: {TOKEN}\n")
    env.hub.clear_log()
    result = env.fleet.playbook(
        PLAYBOOK, "--tags", "model", "-vvv", "-e", f"@{vault}", "-e",
        json.dumps({"hf_model_endpoint": env.hub.endpoint, "hf_model_repo_id": GATED, "hf_model_filename": FILE,
                    "hf_model_controller_cache_dir": str(env.cache), "fleet_serial": ONE_BATCH}),
        timing="model: upgrade from a gated repo, -vvv",
    )  # fmt: skip

    _assert_ok(result, env.fleet.hosts)
    assert TOKEN not in result.output
    heads = [r for r in env.hub.matching("HEAD", f"/{GATED}/resolve/") if r.path.endswith(FILE)]
    gets = env.hub.matching("GET", f"/lfs/{GATED}/")
    assert len(heads) == 1 and heads[0].has_auth and heads[0].status == 302, list(env.hub.summary())
    # the download follows the redirect to the second host without the token
    assert len(gets) == 1 and not gets[0].has_auth and gets[0].status == 200, list(env.hub.summary())
    new, old = env.sha("B"), env.sha("A")
    for host in env.fleet.hosts:
        assert env.current(host) == (f"{new}/{FILE}", new), host
        previous = env.fleet.exec(host, "readlink", f"{MODELS}/previous.gguf").strip()
        assert previous == f"{old}/{FILE}", host
        found = env.fleet.exec(host, "grep", "-rlsF", "--", TOKEN, *DEVICE_DIRS, check=False)
        assert found.strip() == "", f"{host}: token found in {found}"


def test_corrupt_controller_copy_is_refused_on_the_device(env: Env) -> None:
    # A controller cache entry whose record is right but whose bytes are not (disk error, tampering):
    # the controller trusts its record, the device hashes what it received. The last byte (tensor data)
    # is flipped, so the GGUF header still reads and the memory check passes.
    digest = env.sha("D")
    bad = bytearray(env.models["D"])
    bad[-1] ^= 0xFF
    store = env.cache / digest
    store.mkdir()
    (store / FILE).write_bytes(bytes(bad))
    (store / f"{FILE}.sha256").write_text(f"{digest}  {FILE}\n")
    env.hub.clear_log()
    try:
        result = env.run(hf_model_sha256=digest, hf_model_transfer="copy")
        registry = env.run(hf_model_sha256=digest, fleet_serial=ONE_BATCH) if REGISTRY else None
    finally:
        shutil.rmtree(store)
    if registry is not None:  # the registry computes the digest of what it receives: refused at the push
        assert registry.rc != 0
        flat = _flat(registry)
        assert f"controller: cannot push {store / FILE} to the fleet registry" in flat, registry.output[-4000:]
        assert "answered HTTP 400 to the end of the upload" in flat and "No device was changed" in flat
        assert all(stats["changed"] == 0 for stats in registry.recap.values()), registry.recap

    assert result.rc != 0
    assert env.hub.count() == 0  # pinned and cached: the hub is not asked
    actual = hashlib.sha256(bad).hexdigest()
    failed = [host for host, stats in result.recap.items() if stats["failed"]]
    assert failed == ["jetson-1"], result.recap  # the canary; the rollout stops there
    assert re.search(rf"jetson-1: the model copied to \S+ has sha256 {actual}, expected {digest}", _flat(result)), (
        result.output[-4000:]
    )
    for host in env.fleet.hosts:
        assert env.current(host)[1] == env.sha("B"), host
        assert not env.fleet.exists(host, f"{MODELS}/{digest}/{FILE}"), host


def test_model_that_does_not_fit_is_refused_before_any_change(env: Env) -> None:
    # the fit reads llama_server_ctx_size, the value the server would run with (deploy.yml passes it)
    result = env.run(hf_model_revision="e-big", llama_server_ctx_size=100_000_000, fleet_serial=ONE_BATCH)

    assert result.rc != 0
    for host in env.fleet.hosts:
        assert result.recap[host]["failed"] == 1 and result.recap[host]["changed"] == 0, result.recap
        refusal = rf"{host} \(\d+ MiB RAM\): \S+ does not fit: weights .*? > available [\d,]+ MiB"
        assert re.search(refusal, _flat(result)), result.output[-4000:]
        assert env.stores(host) == {env.sha("A"), env.sha("B")}, host

    no_space = env.run(hf_model_revision="e-big", hf_model_min_free_mb=1_000_000_000, fleet_serial=ONE_BATCH)

    assert no_space.rc != 0
    for host in env.fleet.hosts:
        assert no_space.recap[host]["failed"] == 1 and no_space.recap[host]["changed"] == 0, no_space.recap
        assert re.search(rf"{host}: \d+ MiB free for {MODELS}", _flat(no_space)), no_space.output[-4000:]
        assert env.current(host)[1] == env.sha("B"), host
        assert env.stores(host) == {env.sha("A"), env.sha("B")}, host


def test_devices_download_themselves_and_old_stores_are_pruned(env: Env) -> None:
    env.hub.clear_log()
    result = env.run(
        "-vvv", "-e", f"hf_model_token={TOKEN}", hf_model_revision="f-device", hf_model_download_on="device",
        fleet_serial=ONE_BATCH, timing="model: devices download (3 hosts)",
    )  # fmt: skip

    _assert_ok(result, env.fleet.hosts)
    assert TOKEN not in result.output
    gets = [r for r in env.hub.matching("GET", f"/{REPO_ID}/resolve/{'f' * 40}/") if r.path.endswith(FILE)]
    assert len(gets) == len(env.fleet.hosts), list(env.hub.summary())  # one per device, none by the controller
    # get_url sends the token to the hub, which redirects to the second host; the token does not follow
    assert all(r.has_auth and r.status == 302 for r in gets)
    cdn = env.hub.matching("GET", f"/lfs/{REPO_ID}/{env.sha('F')}")
    assert len(cdn) == len(env.fleet.hosts) and all(not r.has_auth and r.status == 200 for r in cdn), cdn
    assert not (env.cache / env.sha("F")).exists()
    new = env.sha("F")
    for host in env.fleet.hosts:
        assert env.current(host) == (f"{new}/{FILE}", new), host
        assert env.fleet.exec(host, "readlink", f"{MODELS}/previous.gguf").strip() == f"{env.sha('B')}/{FILE}"
        assert env.stores(host) == {new, env.sha("B")}, host  # A was pruned (hf_model_keep: 2)
        found = env.fleet.exec(host, "grep", "-rlsF", "--", TOKEN, *DEVICE_DIRS, check=False)
        assert found.strip() == "", f"{host}: token found in {found}"


def test_models_of_the_server_releases_are_never_pruned(env: Env) -> None:
    # The server still runs B (say a canary rollback kept it) while the links say current F, previous B. Going
    # back to A makes F previous; B would be pruned (hf_model_keep: 2) but the release record protects it.
    b = env.sha("B")
    release = {"id": "e2e", "image": "none", "model": {"sha256": b, "filename": FILE, "path": f"{MODELS}/{b}/{FILE}"}}
    write = f"mkdir -p {RELEASES} && cat > {RELEASES}/release.json"
    for host in env.fleet.hosts:
        env.fleet.exec(host, "sh", "-c", write, input=json.dumps(release))
    try:
        result = env.run(fleet_serial=ONE_BATCH, timing="model: back to A, B protected by the server release")
    finally:
        for host in env.fleet.hosts:
            env.fleet.exec(host, "rm", "-f", f"{RELEASES}/release.json")

    _assert_ok(result, env.fleet.hosts)
    for host in env.fleet.hosts:
        assert env.current(host) == (f"{env.sha('A')}/{FILE}", env.sha("A")), host
        assert env.stores(host) == {env.sha("A"), env.sha("F"), b}, host


def _device_python(fleet: Fleet) -> str:
    return fleet.exec(fleet.hosts[0], "sh", "-c", "command -v python3").strip()


# ansible_python_interpreter for one run: runs the real interpreter as a child and logs its peak RSS (wait4) with the
# module's name (from the AnsiballZ payload on stdin, Ansible pipelines), one JSON line per module run.
RSS_WRAPPER = """#!{real}
import json, os, re, sys
payload = sys.stdin.buffer.read()
found = re.search(rb"plugins[.]modules[.](\\w+)|ansible[.]modules[.](\\w+)", payload)
name = (found.group(1) or found.group(2)).decode() if found else "?"
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(write)
    os.dup2(read, 0)
    os.execv({real!r}, [{real!r}, *sys.argv[1:]])
os.close(read)
with os.fdopen(write, "wb") as pipe:
    pipe.write(payload)
_, status, usage = os.wait4(pid, 0)
with open({log!r}, "a") as log:
    log.write(json.dumps({{"module": name, "maxrss_kib": usage.ru_maxrss}}) + "\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


@needs_registry
def test_an_interrupted_device_fetch_resumes(env: Env) -> None:
    data = _gguf(env.tmp, 6)
    digest = hashlib.sha256(data).hexdigest()
    env.hub.add_file(REPO_ID, FILE, data, revision="g-resume", commit="a" * 40)
    half = len(data) // 2
    for host in env.fleet.hosts:  # a fetch cut off half way, as a lost link or a reboot leaves it
        env.fleet.exec(host, "mkdir", "-p", f"{MODELS}/{digest}")
        env.fleet.exec(
            host,
            "sh",
            "-c",
            f"base64 -d > {MODELS}/{digest}/{FILE}.partial",
            input=base64.b64encode(data[:half]).decode(),
        )
    sizes = {
        h: env.fleet.exec(h, "stat", "-c", "%s", f"{MODELS}/{digest}/{FILE}.partial").strip() for h in env.fleet.hosts
    }
    assert set(sizes.values()) == {str(half)}, sizes

    result = env.run(hf_model_revision="g-resume", fleet_serial=ONE_BATCH, timing="model: resumed registry fetch")

    _assert_ok(result, env.fleet.hosts)
    flat = _flat(result)
    for host in env.fleet.hosts:
        assert f"{host}: {FILE} from the fleet registry" in flat, result.output[-4000:]
        assert f"received {len(data) - half} bytes, resumed at {half}, sha256 verified" in flat
        assert env.current(host) == (f"{digest}/{FILE}", digest), host
        assert not env.fleet.exists(host, f"{MODELS}/{digest}/{FILE}.partial"), host


@needs_registry
@pytest.mark.pending
def test_a_1_gib_model_moves_with_flat_memory(env: Env) -> None:
    # A sparse GGUF (header and tensor infos of a 14-layer Llama, 1.1 GB), pinned and already in the controller
    # cache: the hub is not asked; the run pushes it (controller) and fetches it (every device) through the registry.
    tensors = tiny.q4_k_m_tensors(n_layer=14, n_embd=3072, n_ff=8192, n_head=24, n_head_kv=8, n_vocab=128256, tied=True)
    meta = {"llama.block_count": 14, "llama.embedding_length": 3072, "llama.attention.head_count": 24,
            "llama.attention.head_count_kv": 8, "llama.vocab_size": 128256}  # fmt: skip
    source = tiny.write_gguf_header(env.tmp / "big.gguf", "llama", meta, tensors=tensors)
    size = source.stat().st_size
    assert size >= 1024**3, size
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    sha = digest.hexdigest()
    store = env.cache / sha
    store.mkdir()
    shutil.copyfile(source, store / FILE)
    (store / f"{FILE}.sha256").write_text(f"{sha}  {FILE}\n")
    wrapper_dir = f"/tmp/jlf-rss-{os.environ.get('JETSIM_FLEET', 'jetsim')}"
    wrapper = f"{wrapper_dir}/python3"
    os.makedirs(wrapper_dir, exist_ok=True)
    Path(wrapper).write_text(RSS_WRAPPER.format(real=sys.executable, log=f"{wrapper_dir}/rss.jsonl"))
    os.chmod(wrapper, 0o755)
    device_python = _device_python(env.fleet)
    for host in env.fleet.hosts:
        env.fleet.exec(host, "mkdir", "-p", wrapper_dir)
        text = RSS_WRAPPER.format(real=device_python, log=f"{wrapper_dir}/rss.jsonl")
        env.fleet.exec(host, "sh", "-c", f"cat > {wrapper} && chmod 755 {wrapper}", input=text)
    try:
        result = env.run(
            hf_model_sha256=sha, ansible_python_interpreter=wrapper, fleet_serial=ONE_BATCH,
            timing="model: 1 GiB through the registry (3 hosts)",
        )  # fmt: skip
        _assert_ok(result, env.fleet.hosts)
        controller = [json.loads(line) for line in Path(f"{wrapper_dir}/rss.jsonl").read_text().splitlines()]
        devices = {
            host: [json.loads(line) for line in env.fleet.exec(host, "cat", f"{wrapper_dir}/rss.jsonl").splitlines()]
            for host in env.fleet.hosts
        }
    finally:
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(wrapper_dir, ignore_errors=True)
        for host in env.fleet.hosts:
            env.fleet.exec(host, "rm", "-rf", wrapper_dir, check=False)
    push = [entry["maxrss_kib"] for entry in controller if entry["module"] == "registry_blob"]
    fetch = {h: [e["maxrss_kib"] for e in entries if e["module"] == "blob_fetch"] for h, entries in devices.items()}
    print(
        f"\n{size} bytes: controller registry_blob peak RSS {max(push) // 1024} MiB; device blob_fetch peak RSS "
        + ", ".join(f"{h} {max(v) // 1024} MiB" for h, v in fetch.items())
    )
    assert len(push) == 1 and all(len(v) == 1 for v in fetch.values()), (controller, devices)
    limit = 200 * 1024  # KiB: the interpreter and Ansible's module wrapper, far below the 1 GiB file
    assert max(push) < limit and all(max(v) < limit for v in fetch.values()), (push, fetch)
    for host in env.fleet.hosts:
        assert env.current(host)[0] == f"{sha}/{FILE}", host
        assert env.fleet.exec(host, "stat", "-c", "%s", f"{MODELS}/{sha}/{FILE}").strip() == str(size), host
