"""jetson_llm.fleet.hf_model_fetch against HubSim with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hub as hubsim
import module_runner as runner
import pytest
import tiny_gguf as tiny
from ansible_collections.jetson_llm.fleet.plugins.module_utils.hf import read_record
from ansible_collections.jetson_llm.fleet.plugins.modules import hf_model_fetch
from huggingface_hub import constants, file_download

REPO = Path(__file__).resolve().parents[2]


TOKEN = "hf_fetch_secret_9f8e7d6c5b4a"
REPO_ID = "jetson-llm/tiny-llama-GGUF"
FILE = "tiny-llama-test.F32.gguf"
GATED = "meta-llama/tiny-gated-GGUF"


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tiny.write_tiny_llama_gguf(tmp_path_factory.mktemp("model") / FILE)
    return bytes(path.read_bytes())


@pytest.fixture
def hub(model_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with hubsim.HubSim(tokens=[TOKEN]) as sim:
        sim.add_file(REPO_ID, FILE, model_bytes)
        sim.add_file(REPO_ID, "other.Q4_0.gguf", b"GGUF" + bytes(1000))
        sim.add_file(REPO_ID, "README.md", b"# tiny llama\n", lfs=False)
        sim.add_file(GATED, FILE, model_bytes, gated=True)
        yield sim


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "models"


def fetch(hub: Any, cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, **args: Any) -> dict[str, Any]:
    params = {"repo_id": REPO_ID, "filename": FILE, "cache_dir": str(cache), "endpoint": hub.endpoint, **args}
    result: dict[str, Any] = runner.run_module(hf_model_fetch.main, params, capsys, monkeypatch)
    return result


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(".partial-")) if cache.exists() else []


def stored_digests(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) if cache.exists() else []


# --- happy path and idempotence ----------------------------------------------------------------------------


def test_documentation_matches_the_argument_spec() -> None:
    assert runner.doc_mismatches(hf_model_fetch) == []


def test_first_fetch_downloads_once_and_stores_by_content(
    hub: Any, cache: Path, model_bytes: bytes, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = sha(model_bytes)
    result = fetch(hub, cache, capsys, monkeypatch)
    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["downloaded"] is True
    assert result["sha256"] == digest
    assert result["sha256_source"] == "hub"
    assert result["size"] == len(model_bytes)
    assert result["commit"] == hub.commit_of(REPO_ID)
    path = cache / digest / FILE
    assert result["path"] == str(path)
    assert path.read_bytes() == model_bytes
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    record = cache / digest / f"{FILE}.sha256"
    assert record.read_text() == f"{digest}  {FILE}\n"  # sha256sum -c format
    assert read_record(str(record)) == digest
    assert leftovers(cache) == []
    assert sorted(os.listdir(cache / digest)) == [FILE, f"{FILE}.sha256"]
    # one metadata request, one HEAD (302 to the second host, as huggingface.co answers), one GET of the file
    # there, pinned to the resolved commit
    commit = hub.commit_of(REPO_ID)
    assert hub.count("GET", f"/api/models/{REPO_ID}/revision/main") == 1
    (head,) = hub.matching("HEAD", f"/{REPO_ID}/resolve/{commit}/{FILE}")
    (get,) = hub.matching("GET", f"/lfs/{REPO_ID}/{digest}")
    assert (head.status, get.host, get.status) == (302, "cdn", 200)
    assert hub.count() == 3


def test_second_fetch_with_sha256_makes_no_request(
    hub: Any, cache: Path, model_bytes: bytes, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fetch(hub, cache, capsys, monkeypatch, sha256=sha(model_bytes))
    assert first["changed"] is True and first["sha256_source"] == "expected"
    hub.clear_log()
    again = fetch(hub, cache, capsys, monkeypatch, sha256="sha256:" + sha(model_bytes).upper())
    assert again["changed"] is False and again["downloaded"] is False
    assert again["path"] == first["path"] and again["size"] == len(model_bytes)
    assert again["commit"] is None
    assert hub.count() == 0
    # even with the hub gone and offline mode on
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = {"repo_id": REPO_ID, "filename": FILE, "cache_dir": str(cache), "sha256": sha(model_bytes)}
    offline = runner.run_module(hf_model_fetch.main, {**params, "endpoint": "http://127.0.0.1:9"}, capsys, monkeypatch)
    assert offline["changed"] is False and offline["path"] == first["path"]


def test_second_fetch_without_sha256_only_reads_metadata(
    hub: Any, cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fetch(hub, cache, capsys, monkeypatch)
    hub.clear_log()
    again = fetch(hub, cache, capsys, monkeypatch)
    assert again["changed"] is False and again["downloaded"] is False
    assert again["path"] == first["path"] and again["sha256"] == first["sha256"]
    assert again["commit"] == hub.commit_of(REPO_ID)
    assert hub.count("GET", "/api/models/") == 1
    assert hub.count() == 1


def test_check_mode(hub: Any, cache: Path, model_bytes: bytes, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    would = fetch(hub, cache, capsys, monkeypatch, _ansible_check_mode=True)
    assert would["changed"] is True and would["downloaded"] is False
    assert would["sha256"] == sha(model_bytes)
    assert not (cache / sha(model_bytes)).exists()
    assert hub.count(prefix=f"/{REPO_ID}/resolve/") == 0
    fetch(hub, cache, capsys, monkeypatch)
    done = fetch(hub, cache, capsys, monkeypatch, _ansible_check_mode=True)
    assert done["changed"] is False


def test_file_outside_lfs_is_checked_against_the_git_blob_id(
    hub: Any, cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = fetch(hub, cache, capsys, monkeypatch, filename="README.md")
    assert result["changed"] is True and result["sha256_source"] == "download"
    assert result["sha256"] == sha(b"# tiny llama\n")
    hub.set_fault(REPO_ID, "README.md", "corrupt")
    bad = fetch(hub, cache, capsys, monkeypatch, filename="README.md", cache_dir=str(cache / "b"))
    assert bad["failed"] is True and "git blob id" in bad["msg"]


def test_metadata_only_downloads_nothing(
    hub: Any, cache: Path, model_bytes: bytes, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = fetch(hub, cache, capsys, monkeypatch, download=False)
    assert result.get("failed") is not True, result
    assert result["changed"] is False and result["downloaded"] is False and result["stored"] is False
    assert result["path"] is None
    assert result["sha256"] == sha(model_bytes) and result["sha256_source"] == "hub"
    assert result["size"] == len(model_bytes)
    assert result["commit"] == hub.commit_of(REPO_ID)
    assert hub.count(prefix=f"/{REPO_ID}/resolve/") == 0
    assert hub.count() == 1
    assert stored_digests(cache) == [] and leftovers(cache) == []
    # the same in check mode
    would = fetch(hub, cache, capsys, monkeypatch, download=False, _ansible_check_mode=True)
    assert would["changed"] is False and would["sha256"] == sha(model_bytes) and would["path"] is None


def test_metadata_only_reports_a_stored_file_and_a_pin_mismatch(
    hub: Any, cache: Path, model_bytes: bytes, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fetch(hub, cache, capsys, monkeypatch)
    assert first["stored"] is True
    hub.clear_log()
    again = fetch(hub, cache, capsys, monkeypatch, download=False)
    assert again["path"] == first["path"] and again["stored"] is True and again["changed"] is False
    assert hub.count(prefix=f"/{REPO_ID}/resolve/") == 0
    pinned = fetch(hub, cache, capsys, monkeypatch, download=False, sha256=sha(model_bytes))
    assert pinned["path"] == first["path"] and pinned["commit"] is None
    assert hub.count() == 1  # the pinned, stored file needed no request
    wrong = fetch(hub, cache / "w", capsys, monkeypatch, download=False, sha256="0" * 64)
    assert wrong["failed"] is True and "not the pinned one" in wrong["msg"]


def test_metadata_only_needs_a_digest(hub: Any, cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    result = fetch(hub, cache, capsys, monkeypatch, filename="README.md", download=False)
    assert result["failed"] is True and "publishes no sha256" in result["msg"]
    assert hub.count(prefix=f"/{REPO_ID}/resolve/") == 0
    pinned = fetch(hub, cache, capsys, monkeypatch, filename="README.md", download=False, sha256=sha(b"# tiny llama\n"))
    assert pinned.get("failed") is not True, pinned
    assert pinned["path"] is None and pinned["sha256"] == sha(b"# tiny llama\n")


# --- verification failures -----------------------------------------------------------------------------


def test_corrupt_download_is_rejected_and_the_cache_untouched(
    hub: Any, cache: Path, model_bytes: bytes, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fetch(hub, cache, capsys, monkeypatch)  # version 1 is in the store
    old_path = Path(old["path"])
    old_stat = old_path.stat()
    new_data = tiny.write_tiny_llama_gguf(cache.parent / "v2.gguf", seed=7).read_bytes()
    new_commit = hub.add_file(REPO_ID, FILE, new_data, commit="c" * 40)
    hub.set_fault(REPO_ID, FILE, "corrupt")
    result = fetch(hub, cache, capsys, monkeypatch)
    assert result["failed"] is True
    msg = result["msg"]
    corrupt_digest = sha(hubsim.corrupt_bytes(new_data))
    assert sha(new_data) in msg and corrupt_digest in msg
    assert f"{REPO_ID}/{FILE}" in msg and "revision main" in msg and new_commit in msg
    assert "nothing in" in msg and "was replaced" in msg
    assert result["actual_sha256"] == corrupt_digest
    assert stored_digests(cache) == [old["sha256"]]
    assert leftovers(cache) == []
    assert old_path.read_bytes() == model_bytes
    assert old_path.stat().st_mtime_ns == old_stat.st_mtime_ns
    # with a pinned digest the message names it as the expected one
    pinned = fetch(hub, cache, capsys, monkeypatch, sha256=sha(new_data))
    assert pinned["failed"] is True
    assert f"expected sha256 {sha(new_data)} (expected)" in pinned["msg"]
    # the fault cleared, the same run succeeds
    hub.set_fault(REPO_ID, FILE, None)
    fixed = fetch(hub, cache, capsys, monkeypatch, sha256=sha(new_data))
    assert fixed["changed"] is True and stored_digests(cache) == sorted([old["sha256"], sha(new_data)])


def test_hub_digest_differs_from_pin_fails_before_download(
    hub: Any, cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = fetch(hub, cache, capsys, monkeypatch, sha256="ab" * 32)
    assert result["failed"] is True
    assert "not the pinned one" in result["msg"] and "ab" * 32 in result["msg"]
    assert hub.count(prefix=f"/{REPO_ID}/resolve/") == 0
    assert stored_digests(cache) == []


@pytest.mark.parametrize("mode", ["truncated", "drop"])
def test_broken_transfer_fails_cleanly(
    hub: Any, cache: Path, mode: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.set_fault(REPO_ID, FILE, mode)
    result = fetch(hub, cache, capsys, monkeypatch)
    assert result["failed"] is True
    assert f"cannot download {REPO_ID}/{FILE} at revision main" in result["msg"]
    assert ("Consistency check failed" if mode == "truncated" else "ReadError") in result["msg"]
    assert stored_digests(cache) == [] and leftovers(cache) == []


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """No 1 s sleeps between huggingface_hub's download retries; resume granularity 64 KiB."""
    monkeypatch.setattr(file_download, "time", types.SimpleNamespace(sleep=lambda _seconds: None))
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)


@pytest.mark.usefixtures("fast_retries")
def test_short_body_fails_cleanly(hub: Any, cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.set_fault(REPO_ID, FILE, "short")
    result = fetch(hub, cache, capsys, monkeypatch)
    assert result["failed"] is True
    assert "RemoteProtocolError" in result["msg"] and "peer closed connection" in result["msg"]
    assert stored_digests(cache) == [] and leftovers(cache) == []


@pytest.mark.usefixtures("fast_retries")
def test_resumed_download_is_verified(
    hub: Any, cache: Path, model_bytes: bytes, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.set_fault(REPO_ID, FILE, "short", times=1)
    result = fetch(hub, cache, capsys, monkeypatch)
    assert result["changed"] is True and result["sha256"] == sha(model_bytes)
    gets = hub.matching("GET", f"/lfs/{REPO_ID}/")
    assert [(g.status, g.fault) for g in gets] == [(200, "short"), (206, None)]


# --- hub errors ------------------------------------------------------------------------------------------


def test_gated_without_token(hub: Any, cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    result = fetch(hub, cache, capsys, monkeypatch, repo_id=GATED)
    assert result["failed"] is True
    assert result["msg"] == (
        f"repo {GATED} is gated: accept its license on the hub ({hub.endpoint}/{GATED}) and give a token via "
        "hf_token (vault) or HF_TOKEN"
    )
    assert stored_digests(cache) == [] and leftovers(cache) == []


def test_gated_with_token_never_shows_it(
    hub: Any, cache: Path, model_bytes: bytes, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = fetch(hub, cache, capsys, monkeypatch, repo_id=GATED, token=TOKEN)
    assert result["changed"] is True and result["sha256"] == sha(model_bytes)
    assert TOKEN not in json.dumps(result)
    # the token goes to the hub, never to the host the download is redirected to
    assert all(entry.has_auth for entry in hub.requests if entry.host == "hub")
    assert [(e.host, e.status, e.has_auth) for e in hub.requests if e.host == "cdn"] == [("cdn", 200, False)]
    wrong = fetch(hub, cache / "w", capsys, monkeypatch, repo_id=GATED, token="hf_wrong_token_123456")
    assert wrong["failed"] is True and "rejected the token" in wrong["msg"]
    assert "hf_wrong_token_123456" not in json.dumps(wrong)


def test_token_from_environment_as_a_script(hub: Any, cache: Path, model_bytes: bytes, tmp_path: Path) -> None:
    """The module file run as Ansible runs it: the token is in neither stdout nor stderr."""
    args = {"repo_id": GATED, "filename": FILE, "cache_dir": str(cache), "endpoint": hub.endpoint}
    run = runner.run_module_script("hf_model_fetch", args, tmp_path, env={"HF_TOKEN": TOKEN})
    assert run.returncode == 0, run.stderr
    assert run.result["changed"] is True and run.result["sha256"] == sha(model_bytes)
    assert TOKEN not in run.stdout and TOKEN not in run.stderr
    hub.set_fault(GATED, FILE, "corrupt")
    failed = runner.run_module_script(
        "hf_model_fetch", {**args, "cache_dir": str(cache / "x"), "token": TOKEN}, tmp_path
    )
    assert failed.returncode == 1 and failed.result["failed"] is True
    assert TOKEN not in failed.stdout and TOKEN not in failed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"repo_id": "jetson-llm/missing-GGUF"}, "repo jetson-llm/missing-GGUF not found on http://127.0.0.1:"),
        (
            {"filename": "absent.Q4_K_M.gguf"},
            f"file absent.Q4_K_M.gguf not found in repo {REPO_ID} at revision main; GGUF files there: "
            f"other.Q4_0.gguf, {FILE}",
        ),
        ({"revision": "v9"}, f"revision 'v9' not found in repo {REPO_ID}"),
        ({"filename": "../etc/passwd"}, "invalid filename '../etc/passwd'"),
        ({"sha256": "1234"}, "sha256 must be 64 hexadecimal digits"),
    ],
    ids=["repo", "entry", "revision", "filename", "sha256"],
)
def test_clear_errors(
    hub: Any, cache: Path, args: dict[str, str], message: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = fetch(hub, cache, capsys, monkeypatch, **args)
    assert result["failed"] is True
    assert message in result["msg"]
    assert hub.count(prefix=f"/{REPO_ID}/resolve/") == 0


def test_entry_missing_at_download_time(hub: Any, cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """EntryNotFound from the resolve route itself (the listing said the file exists)."""
    hub.add_file(REPO_ID, "ghost.gguf", b"x")
    commit = hub.commit_of(REPO_ID)
    with hub._lock:  # the file disappears between the listing and the download
        files = hub._repos[REPO_ID].commits[commit]
        listing_only = files.pop("ghost.gguf")
    monkeypatch.setattr(
        hf_model_fetch.Fetcher, "metadata", lambda self: (commit, listing_only.sha256, 1, listing_only.blob_id)
    )
    result = fetch(hub, cache, capsys, monkeypatch, filename="ghost.gguf")
    assert result["failed"] is True
    assert result["msg"] == f"file ghost.gguf not found in repo {REPO_ID} at revision main"


def test_unreachable_hub(cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    params = {"repo_id": REPO_ID, "filename": FILE, "cache_dir": str(cache), "endpoint": "http://127.0.0.1:9"}
    result = runner.run_module(hf_model_fetch.main, params, capsys, monkeypatch)
    assert result["failed"] is True
    assert "cannot read the metadata" in result["msg"] and "ConnectError" in result["msg"]


# --- the real Hub's ways: Xet, offline runs, mirrors, split files (issue 17.15-17.17, 17.14) ------------------


def test_xet_repositories_download_over_plain_https(
    hub: Any, cache: Path, model_bytes: bytes, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The resolve answers carry X-Xet-* like huggingface.co for a Xet-backed repo and hf_xet is installed: with Xet
    # on, huggingface_hub would call the refresh route and talk to Xet hosts; the module stays on HTTP.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    hub.xet = True
    result = fetch(hub, cache, capsys, monkeypatch, token=TOKEN)
    assert result.get("failed") is not True, result
    assert result["sha256"] == sha(model_bytes)
    assert hub.count(prefix=f"/api/models/{REPO_ID}/xet-read-token/") == 0, list(hub.summary())
    assert [(e.host, e.method, e.has_auth) for e in hub.requests if e.host == "cdn"] == [("cdn", "GET", False)]


def test_offline_without_a_pin_says_what_the_store_holds(
    hub: Any, cache: Path, model_bytes: bytes, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fetch(hub, cache, capsys, monkeypatch)["changed"] is True
    hub.clear_log()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = fetch(hub, cache, capsys, monkeypatch)
    assert result["failed"] is True
    assert "is not in" not in result["msg"]  # it is in the store: the old message said it was not
    assert f"holds {FILE} with sha256 {sha(model_bytes)}: pin it (hf_model_sha256)" in result["msg"]
    assert hub.count() == 0
    pinned = fetch(hub, cache, capsys, monkeypatch, sha256=sha(model_bytes))
    assert pinned.get("failed") is not True and pinned["changed"] is False and hub.count() == 0
    empty = fetch(hub, cache / "empty", capsys, monkeypatch)
    assert empty["failed"] is True and "holds no copy of" in empty["msg"]


def test_a_mirror_without_the_metadata_route_is_named(
    hub: Any, cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = fetch(hub, cache, capsys, monkeypatch, endpoint=hub.endpoint + "/resolve-only")
    assert result["failed"] is True
    assert "a mirror must serve the Hub's metadata route" in result["msg"], result["msg"]
    assert f"/api/models/{REPO_ID}/revision/<revision>?blobs=true" in result["msg"]


def test_split_gguf_is_refused_before_any_request(
    hub: Any, cache: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "Qwen2.5-72B-Instruct-Q4_K_M-00001-of-00012.gguf"
    result = fetch(hub, cache, capsys, monkeypatch, filename=name)
    assert result["failed"] is True
    assert "shard 1 of a split GGUF (12 files)" in result["msg"] and "llama-gguf-split --merge" in result["msg"]
    assert hub.count() == 0
