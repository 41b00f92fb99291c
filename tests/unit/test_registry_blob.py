"""registry_blob and blob_fetch against a real distribution server (docker-registry 2.8) on loopback, TLS + htpasswd."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.jetson_llm.fleet.plugins.module_utils import registry as reg
from ansible_collections.jetson_llm.fleet.plugins.modules import blob_fetch, registry_blob
from distribution import REGISTRY_BIN, USERS, Registry, make_ca, registry_pair
from module_runner import COLLECTIONS_DIR, MODULES_DIR, doc_mismatches, run_module_script

pytestmark = pytest.mark.skipif(
    not os.access(REGISTRY_BIN, os.X_OK), reason="docker-registry missing: make system-deps installs it"
)

MIB = 1024 * 1024
REPO = "jetson-llm-fleet/models"


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry, Path]]:
    with registry_pair(tmp_path_factory.mktemp("registry")) as pair:
        yield pair


def model_file(path: Path, size: int, seed: int) -> tuple[Path, str]:
    """A file of pseudo-random bytes (each test its own content, so blobs do not collide) and its sha256."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            piece = block[: size - written]
            piece = bytes([seed % 256]) + piece[1:] if written == 0 else piece
            handle.write(piece)
            digest.update(piece)
            written += len(piece)
    return path, digest.hexdigest()


def push_args(registries: tuple[Registry, Registry, Path], path: Path, sha: str, **extra: Any) -> dict[str, Any]:
    push, _, ca = registries
    return {
        "path": str(path),
        "sha256": sha,
        "endpoint": push.endpoint,
        "repository": REPO,
        "username": "push",
        "password": USERS["push"],
        "ca_file": str(ca),
        "chunk_size": MIB,
        **extra,
    }


def fetch_args(registries: tuple[Registry, Registry, Path], sha: str, dest: Path, **extra: Any) -> dict[str, Any]:
    _, pull, ca = registries
    return {
        "endpoint": pull.endpoint,
        "repository": REPO,
        "sha256": sha,
        "dest": str(dest),
        "username": "pull",
        "password": USERS["pull"],
        "ca_path": str(ca),
        "mode": "0444",
        **extra,
    }


def client(registries: tuple[Registry, Registry, Path], user: str = "push") -> reg.Client:
    push, pull, ca = registries
    return reg.Client(push.endpoint if user == "push" else pull.endpoint, user, USERS[user], str(ca))


@pytest.mark.parametrize("module", [registry_blob, blob_fetch], ids=["registry_blob", "blob_fetch"])
def test_documentation_matches_the_argument_spec(module: Any) -> None:
    assert doc_mismatches(module) == []
    assert module.ARGUMENT_SPEC["password"]["no_log"] is True


def test_push_uploads_once_and_tags_a_manifest(registries: Any, tmp_path: Path) -> None:
    path, sha = model_file(tmp_path / "model.gguf", 5 * MIB + 123, seed=1)
    first = run_module_script("registry_blob", push_args(registries, path, sha), tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.result["changed"] and first.result["uploaded"] and first.result["manifest_changed"]
    assert first.result["sent"] == path.stat().st_size
    patches = [e for e in registries[0].access() if e["method"] == "PATCH" and e["status"] == "202"]
    assert len(patches) >= 6  # 1 MiB chunks
    assert reg.blob_size(client(registries), REPO, "sha256:" + sha) == path.stat().st_size
    manifest = client(registries, "pull").call(
        "GET", f"/v2/{REPO}/manifests/sha256-{sha}", {"Accept": reg.OCI_MANIFEST}
    )
    assert manifest.status == 200, manifest.body
    assert json.loads(manifest.body)["layers"][0]["digest"] == "sha256:" + sha
    assert not (tmp_path / "model.gguf.upload-state").exists()

    again = run_module_script("registry_blob", push_args(registries, path, sha), tmp_path)
    assert again.returncode == 0, again.stdout
    assert again.result["changed"] is False and again.result["sent"] == 0


def test_push_continues_an_interrupted_upload(registries: Any, tmp_path: Path) -> None:
    path, sha = model_file(tmp_path / "model.gguf", 6 * MIB, seed=2)
    state = tmp_path / "model.gguf.upload-state"

    def stop_after_two(offset: int) -> None:
        if offset >= 2 * MIB:
            raise KeyboardInterrupt("interrupted")

    with pytest.raises(KeyboardInterrupt):
        reg.push_blob(client(registries), REPO, str(path), "sha256:" + sha, MIB, str(state), stop_after_two)
    assert json.loads(state.read_text())["offset"] == 2 * MIB
    resumed = run_module_script("registry_blob", push_args(registries, path, sha), tmp_path)
    assert resumed.returncode == 0, resumed.stdout
    assert resumed.result["resumed_from"] == 2 * MIB and resumed.result["sent"] == 4 * MIB
    assert reg.blob_size(client(registries), REPO, "sha256:" + sha) == 6 * MIB


def test_fetch_verifies_and_is_idempotent(registries: Any, tmp_path: Path) -> None:
    path, sha = model_file(tmp_path / "model.gguf", 3 * MIB + 7, seed=3)
    assert run_module_script("registry_blob", push_args(registries, path, sha), tmp_path).returncode == 0
    dest = tmp_path / "device" / "model.gguf"
    dest.parent.mkdir()
    got = run_module_script("blob_fetch", fetch_args(registries, sha, dest, size=path.stat().st_size), tmp_path)
    assert got.returncode == 0, got.stdout
    assert got.result["changed"] and got.result["received"] == path.stat().st_size
    assert dest.read_bytes() == path.read_bytes()
    assert dest.stat().st_mode & 0o777 == 0o444
    assert not Path(str(dest) + ".partial").exists()
    again = run_module_script("blob_fetch", fetch_args(registries, sha, dest), tmp_path)
    assert again.returncode == 0 and again.result["changed"] is False and again.result["received"] == 0


def test_fetch_resumes_a_partial_with_a_range_request(registries: Any, tmp_path: Path) -> None:
    size = 4 * MIB + 99
    path, sha = model_file(tmp_path / "model.gguf", size, seed=4)
    assert run_module_script("registry_blob", push_args(registries, path, sha), tmp_path).returncode == 0
    dest = tmp_path / "model-device.gguf"
    Path(str(dest) + ".partial").write_bytes(path.read_bytes()[: 3 * MIB])
    got = run_module_script("blob_fetch", fetch_args(registries, sha, dest, size=size), tmp_path)
    assert got.returncode == 0, got.stdout
    assert got.result["resumed_from"] == 3 * MIB and got.result["received"] == size - 3 * MIB
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha
    blob_gets = [e for e in registries[1].access() if e["method"] == "GET" and sha in e["path"]]
    assert blob_gets[-1]["status"] == "206" and int(blob_gets[-1]["bytes"]) == size - 3 * MIB


def test_fetch_rejects_a_corrupted_partial(registries: Any, tmp_path: Path) -> None:
    size = 2 * MIB
    path, sha = model_file(tmp_path / "model.gguf", size, seed=5)
    assert run_module_script("registry_blob", push_args(registries, path, sha), tmp_path).returncode == 0
    dest = tmp_path / "model-device.gguf"
    corrupted = bytearray(path.read_bytes()[:MIB])
    corrupted[100] ^= 0xFF
    Path(str(dest) + ".partial").write_bytes(bytes(corrupted))
    got = run_module_script("blob_fetch", fetch_args(registries, sha, dest, size=size), tmp_path)
    assert got.returncode == 1 and got.result["failed"]
    assert "nothing was put at" in got.result["msg"] and sha in got.result["msg"]
    assert not dest.exists() and not Path(str(dest) + ".partial").exists()
    retry = run_module_script("blob_fetch", fetch_args(registries, sha, dest, size=size), tmp_path)
    assert retry.returncode == 0 and hashlib.sha256(dest.read_bytes()).hexdigest() == sha


def test_wrong_password_is_refused(registries: Any, tmp_path: Path) -> None:
    path, sha = model_file(tmp_path / "model.gguf", MIB, seed=6)
    pushed = run_module_script("registry_blob", push_args(registries, path, sha, password="wrong"), tmp_path)
    assert pushed.returncode == 1 and "refused the credentials of user 'push'" in pushed.result["msg"]
    assert "wrong" not in pushed.stdout.replace("wrong password", "")
    dest = tmp_path / "out.gguf"
    fetched = run_module_script("blob_fetch", fetch_args(registries, sha, dest, password="wrong"), tmp_path)
    assert fetched.returncode == 1 and "refused the credentials of user 'pull'" in fetched.result["msg"]
    assert not dest.exists()


def test_untrusted_certificate_is_refused(registries: Any, tmp_path: Path) -> None:
    other_ca, _, _ = make_ca(tmp_path, "other")
    path, sha = model_file(tmp_path / "model.gguf", MIB, seed=7)
    pushed = run_module_script("registry_blob", push_args(registries, path, sha, ca_file=str(other_ca)), tmp_path)
    assert pushed.returncode == 1 and "is not trusted with the CA file" in pushed.result["msg"]
    dest = tmp_path / "out.gguf"
    fetched = run_module_script("blob_fetch", fetch_args(registries, sha, dest, ca_path=str(other_ca)), tmp_path)
    assert fetched.returncode == 1 and "no plain-HTTP fallback" in fetched.result["msg"]
    assert not dest.exists()
    plain = run_module_script(
        "blob_fetch", fetch_args(registries, sha, dest, endpoint="http://" + registries[1].endpoint), tmp_path
    )
    assert plain.returncode == 1 and "never plain HTTP" in plain.result["msg"]


def peak_rss_kib(name: str, args: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], int]:
    """Run a module as its own process and return its result and peak RSS (KiB, from wait4's rusage)."""
    args_file = tmp_path / f"{name}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(COLLECTIONS_DIR), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, str(MODULES_DIR / f"{name}.py"), str(args_file)], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert proc.returncode == 0, result
    return result, int(usage.ru_maxrss)


def test_peak_rss_does_not_grow_with_a_1_gib_file(registries: Any, tmp_path: Path) -> None:
    size = 1024 * MIB + 4097
    path, sha = model_file(tmp_path / "big.gguf", size, seed=8)
    pushed, push_rss = peak_rss_kib("registry_blob", push_args(registries, path, sha, chunk_size=64 * MIB), tmp_path)
    dest = tmp_path / "big-device.gguf"
    Path(str(dest) + ".partial").write_bytes(b"")
    fetched, fetch_rss = peak_rss_kib("blob_fetch", fetch_args(registries, sha, dest, size=size), tmp_path)
    print(
        f"\n1 GiB blob ({size} bytes): registry_blob sent {pushed['sent']} bytes, peak RSS {push_rss // 1024} MiB; "
        f"blob_fetch received {fetched['received']} bytes, peak RSS {fetch_rss // 1024} MiB"
    )
    assert pushed["sent"] == size and fetched["received"] == size
    assert dest.stat().st_size == size
    # The module processes stay near the interpreter's own size (~40-60 MiB), far below the 1 GiB file.
    assert push_rss < 150 * 1024 and fetch_rss < 150 * 1024
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < size // 1024  # nor did this test read it whole
