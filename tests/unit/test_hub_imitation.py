"""tests/fixtures/hub.py (HubSim) against the real huggingface_hub client and raw HTTP."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import hub as hubsim
import pytest
from huggingface_hub import HfApi, constants, file_download, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

REPO = Path(__file__).resolve().parents[2]


TOKEN = "hf_imitation_secret_0123456789"
REPO_ID = "org/tiny-GGUF"
FILE = "tiny.Q8_0.gguf"
DATA = bytes(range(256)) * 1200  # 300 KiB
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with hubsim.HubSim(tokens=[TOKEN]) as sim:
        sim.add_file(REPO_ID, FILE, DATA)
        sim.add_file(REPO_ID, "README.md", b"# tiny\n", lfs=False)
        sim.add_file("meta/gated-GGUF", FILE, DATA, gated=True)
        yield sim


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def raw(
    hub: Any, path: str, method: str = "GET", *, follow: bool = True, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One request; ``follow`` takes redirects as urllib does (headers, Authorization included, go along)."""
    url = path if path.startswith("http") else hub.endpoint + path
    request = urllib.request.Request(url, method=method, headers=headers)
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def download(
    hub: Any, tmp_path: Path, repo_id: str = REPO_ID, revision: str = "main", token: str | bool = False
) -> Path:
    path = hf_hub_download(
        repo_id, FILE, revision=revision, local_dir=tmp_path / "dl", endpoint=hub.endpoint, token=token
    )
    return Path(path)


# --- routes and headers ----------------------------------------------------------------------------------


def test_head_headers_as_the_client_needs_them(hub: Any) -> None:
    commit = hub.commit_of(REPO_ID)
    for method in ("HEAD", "GET"):  # an LFS file: 302 to the second host, the metadata on the redirect
        status, headers, body = raw(hub, f"/{REPO_ID}/resolve/main/{FILE}", method=method, follow=False)
        assert status == 302 and body == b""
        assert headers["Location"].startswith(f"{hub.cdn_endpoint}/lfs/{REPO_ID}/{SHA}?")
        assert hub.cdn_endpoint != hub.endpoint
        assert headers["X-Repo-Commit"] == commit
        assert headers["ETag"] == f'"{SHA}"'
        assert headers["X-Linked-Etag"] == f'"{SHA}"'
        assert headers["X-Linked-Size"] == str(len(DATA)) and headers["Content-Length"] == "0"
        assert not [name for name in headers if name.lower().startswith("x-xet")]
    status, headers, _ = raw(hub, headers["Location"], method="HEAD")
    assert (status, headers["Content-Length"], headers["Accept-Ranges"]) == (200, str(len(DATA)), "bytes")
    meta = get_hf_file_metadata(hf_hub_url(REPO_ID, FILE, endpoint=hub.endpoint), token=False)
    assert (meta.commit_hash, meta.etag, meta.size, meta.xet_file_data) == (commit, SHA, len(DATA), None)
    assert meta.location.startswith(hub.cdn_endpoint)  # the client does not follow a redirect to another host
    # a file outside LFS: ETag is the git blob id, no X-Linked-* headers
    _status, headers, _ = raw(hub, f"/{REPO_ID}/resolve/main/README.md", method="HEAD")
    assert headers["ETag"] == f'"{hubsim.git_blob_sha1(b"# tiny" + bytes([10]))}"'
    assert "X-Linked-Size" not in headers


def test_ranges(hub: Any) -> None:
    path = f"/{REPO_ID}/resolve/main/{FILE}"
    status, headers, body = raw(hub, path, Range="bytes=10-19")
    assert (status, body, headers["Content-Range"]) == (206, DATA[10:20], f"bytes 10-19/{len(DATA)}")
    status, headers, body = raw(hub, path, Range=f"bytes={len(DATA) - 5}-")
    assert (status, body) == (206, DATA[-5:])
    status, headers, body = raw(hub, path, Range="bytes=-3")
    assert (status, body) == (206, DATA[-3:])
    status, headers, _body = raw(hub, path, Range=f"bytes={len(DATA)}-")
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(DATA)}")
    assert [entry.range for entry in hub.matching("GET", "/lfs/")] == [
        "bytes=10-19",
        f"bytes={len(DATA) - 5}-",
        "bytes=-3",
        f"bytes={len(DATA)}-",
    ]


def test_model_info_with_files_metadata(hub: Any) -> None:
    info = HfApi(endpoint=hub.endpoint).model_info(REPO_ID, revision="main", files_metadata=True, token=False)
    assert info.sha == hub.commit_of(REPO_ID)
    siblings = {s.rfilename: s for s in info.siblings or []}
    lfs = siblings[FILE].lfs
    assert lfs is not None and (lfs.sha256, lfs.size) == (SHA, len(DATA))
    assert siblings["README.md"].lfs is None and siblings["README.md"].size == 7
    (request,) = hub.matching("GET", f"/api/models/{REPO_ID}/revision/main")
    assert request.query == "blobs=true"  # httpx2 renders the Python True of params={"blobs": True}
    plain = HfApi(endpoint=hub.endpoint).model_info(REPO_ID, token=False)
    assert plain.siblings is not None and plain.siblings[0].lfs is None


def test_download_one_head_one_get(hub: Any, tmp_path: Path) -> None:
    path = download(hub, tmp_path, revision=hub.commit_of(REPO_ID), token=TOKEN)
    assert path.read_bytes() == DATA
    (head,) = hub.matching("HEAD", f"/{REPO_ID}/resolve/")
    (get,) = hub.matching("GET", f"/lfs/{REPO_ID}/")
    assert (head.host, head.status, head.has_auth) == ("hub", 302, True)
    # straight to the redirect target, without the token (huggingface_hub drops it on another host)
    assert (get.host, get.status, get.has_auth) == ("cdn", 200, False)
    assert hub.count() == 2


def test_the_cdn_refuses_a_second_credential_and_a_bad_signature(hub: Any) -> None:
    _status, headers, _ = raw(hub, f"/{REPO_ID}/resolve/main/{FILE}", follow=False)
    location = headers["Location"]
    # urllib (like Ansible's get_url) forwards Authorization across the redirect: signed storage refuses it
    status, _, body = raw(hub, f"/{REPO_ID}/resolve/main/{FILE}", Authorization=f"Bearer {TOKEN}")
    assert status == 400 and b"Only one auth mechanism allowed" in body
    assert [(e.host, e.status, e.has_auth) for e in hub.requests[-2:]] == [("hub", 302, True), ("cdn", 400, True)]
    assert raw(hub, location)[0] == 200
    assert raw(hub, location.replace("Signature=", "Signature=0"))[0] == 403
    hub.cdn = False  # cdn=False serves LFS files from the hub itself
    assert raw(hub, f"/{REPO_ID}/resolve/main/{FILE}", follow=False)[:1] == (200,)


def test_xet_headers_as_huggingface_co_sends_them(hub: Any) -> None:
    hub.xet = True
    _status, headers, _ = raw(hub, f"/{REPO_ID}/resolve/main/{FILE}", method="HEAD", follow=False)
    route = headers["X-Xet-Refresh-Route"]
    assert route == f"{hub.endpoint}/api/models/{REPO_ID}/xet-read-token/{hub.commit_of(REPO_ID)}"
    assert headers["X-Xet-Hash"] and headers["Link"] == f'<{route}>; rel="xet-auth"'
    assert raw(hub, route.removeprefix(hub.endpoint))[0] == 404  # no Xet storage here: a Xet client fails


def test_new_commit_moves_the_branch_old_commit_still_resolves(hub: Any, tmp_path: Path) -> None:
    old = hub.commit_of(REPO_ID)
    new = hub.add_file(REPO_ID, FILE, b"v2" * 1000, commit="b" * 40)
    assert hub.commit_of(REPO_ID) == new != old
    assert hub.file(REPO_ID, "README.md", new).data == b"# tiny\n"  # the new commit starts as a copy
    assert download(hub, tmp_path / "old", revision=old).read_bytes() == DATA
    assert download(hub, tmp_path / "new").read_bytes() == b"v2" * 1000


# --- errors ------------------------------------------------------------------------------------------------


def test_error_codes(hub: Any, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing", token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing", token=TOKEN)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO_ID, revision="v9", token=False)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO_ID, "absent.gguf", local_dir=tmp_path, endpoint=hub.endpoint, token=False)
    with pytest.raises(RevisionNotFoundError):
        download(hub, tmp_path, revision="v9")
    with pytest.raises(RepositoryNotFoundError):
        download(hub, tmp_path, repo_id="org/missing")
    statuses = {(entry.path.split("/")[-1], entry.status) for entry in hub.requests}
    assert ("missing", 401) in statuses  # anonymous
    assert ("missing", 404) in statuses  # authenticated
    assert ("absent.gguf", 404) in statuses


def test_gated_repo(hub: Any, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint)
    assert api.model_info("meta/gated-GGUF", token=False).gated == "manual"  # info is public, files are not
    with pytest.raises(GatedRepoError):
        download(hub, tmp_path, repo_id="meta/gated-GGUF")
    with pytest.raises(HfHubHTTPError) as wrong:
        download(hub, tmp_path, repo_id="meta/gated-GGUF", token="hf_wrong")
    assert wrong.value.response.status_code == 401
    assert "Invalid credentials" in str(wrong.value)
    assert download(hub, tmp_path, repo_id="meta/gated-GGUF", token=TOKEN).read_bytes() == DATA
    assert [e.status for e in hub.matching(prefix="/meta/gated-GGUF/resolve/")] == [401, 401, 302]
    assert [e.has_auth for e in hub.matching(prefix="/meta/gated-GGUF/resolve/")] == [False, True, True]
    assert [(e.status, e.has_auth) for e in hub.matching(prefix="/lfs/meta/gated-GGUF/")] == [(200, False)]
    assert TOKEN not in repr(hub.requests)
    hub.add_repo("org/private", private=True)
    hub.add_file("org/private", FILE, DATA)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/private", token=False)
    assert api.model_info("org/private", token=TOKEN).id == "org/private"


# --- faults ------------------------------------------------------------------------------------------------


def test_corrupt_passes_the_clients_size_check(hub: Any, tmp_path: Path) -> None:
    """huggingface_hub checks the size only: a same-size corruption goes through unnoticed."""
    hub.set_fault(REPO_ID, FILE, "corrupt")
    data = download(hub, tmp_path).read_bytes()
    assert len(data) == len(DATA) and data != DATA
    assert data == hubsim.corrupt_bytes(DATA)
    assert hub.matching("GET")[0].fault == "corrupt"


def test_truncated_fails_the_size_check(hub: Any, tmp_path: Path) -> None:
    hub.set_fault(REPO_ID, FILE, "truncated")
    with pytest.raises(OSError, match="Consistency check failed"):
        download(hub, tmp_path)
    assert not (tmp_path / "dl" / FILE).exists()


def test_drop_is_a_connection_reset_not_retried(hub: Any, tmp_path: Path) -> None:
    hub.set_fault(REPO_ID, FILE, "drop")
    with pytest.raises(httpx2.ReadError):
        download(hub, tmp_path)
    assert hub.count("GET", f"/lfs/{REPO_ID}/") == 1
    assert not (tmp_path / "dl" / FILE).exists()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """No 1 s sleeps between http_get retries, and 64 KiB read chunks (resume works per chunk)."""
    monkeypatch.setattr(file_download, "time", types.SimpleNamespace(sleep=lambda _seconds: None))
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)


@pytest.mark.usefixtures("fast_retries")
def test_short_body_once_is_resumed_with_a_range(hub: Any, tmp_path: Path) -> None:
    hub.set_fault(REPO_ID, FILE, "short", times=1)
    assert download(hub, tmp_path).read_bytes() == DATA
    first, second = hub.matching("GET", f"/lfs/{REPO_ID}/")
    assert (first.status, first.fault, first.range) == (200, "short", None)
    assert (second.status, second.range) == (206, "bytes=131072-")  # two whole 64 KiB chunks were kept


@pytest.mark.usefixtures("fast_retries")
def test_short_body_always_gives_up(hub: Any, tmp_path: Path) -> None:
    hub.set_fault(REPO_ID, FILE, "short")
    with pytest.raises(httpx2.RemoteProtocolError):
        download(hub, tmp_path)
    # the first try (progress: two 64 KiB chunks kept), then 5 retries without progress
    assert hub.count("GET", f"/lfs/{REPO_ID}/") == 1 + 5
    assert not (tmp_path / "dl" / FILE).exists()


def test_fault_validation_and_clearing(hub: Any) -> None:
    with pytest.raises(ValueError, match="unknown fault mode"):
        hub.set_fault(REPO_ID, FILE, "slow")
    hub.set_fault(REPO_ID, FILE, "corrupt")
    hub.set_fault(REPO_ID, FILE, None)
    assert raw(hub, f"/{REPO_ID}/resolve/main/{FILE}")[2] == DATA


# --- command line ------------------------------------------------------------------------------------------


def test_serve_a_directory(tmp_path: Path) -> None:
    (tmp_path / "org" / "demo").mkdir(parents=True)
    (tmp_path / "org" / "demo" / "m.gguf").write_bytes(DATA)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests/fixtures/hub.py"), "--serve", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        endpoint = first.split(" at ")[1].strip()
        with urllib.request.urlopen(f"{endpoint}/org/demo/resolve/main/m.gguf", timeout=10) as response:
            assert response.read() == DATA
    finally:
        proc.terminate()
        proc.wait(timeout=10)
