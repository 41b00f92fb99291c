# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""A small client of the OCI distribution API (blobs and manifests) for registry_blob and blob_fetch.

Standard library only (the devices run it). HTTPS only, with a CA file and basic auth; there is no plain-HTTP
fallback. Every transfer is streamed in pieces of at most ``READ_CHUNK`` bytes, so memory does not grow with
the blob: uploads are chunked PATCH requests (``CHUNK`` bytes each, read from disk while sent), downloads are
written as they arrive and resumed with a ``Range`` request from the size of the partial file.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import ssl
import tempfile
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "CHUNK",
    "EMPTY_CONFIG",
    "OCI_MANIFEST",
    "READ_CHUNK",
    "Client",
    "RegistryError",
    "fetch_blob",
    "manifest_for",
    "push_blob",
    "put_manifest",
]

READ_CHUNK = 1024 * 1024
CHUNK = 64 * 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = b"{}"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
MODEL_ARTIFACT_TYPE = "application/vnd.jetson-llm-fleet.model.v1"
GGUF_MEDIA_TYPE = "application/vnd.jetson-llm-fleet.gguf.v1"

Progress = Callable[[int], None]


class RegistryError(Exception):
    """A refusal or failure with a message that names the registry and the fix."""


class _Limited:
    """read() of at most ``left`` bytes of a file, in pieces of at most READ_CHUNK (a PATCH body)."""

    def __init__(self, handle: Any, left: int) -> None:
        self.handle = handle
        self.left = left

    def read(self, amount: int = READ_CHUNK) -> bytes:
        data: bytes = self.handle.read(min(amount, READ_CHUNK, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data


class Client:
    """One registry endpoint (``host:port`` or ``https://host:port``), one user, one CA file."""

    def __init__(self, endpoint: str, username: str, password: str, ca_file: str, timeout: int = 30) -> None:
        parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        if parts.scheme != "https" or not parts.hostname:
            raise RegistryError(
                f"registry endpoint {endpoint!r} must be host:port or https://host:port: the registry is only "
                "used over TLS, never plain HTTP"
            )
        self.host = parts.hostname
        self.port = parts.port or 443
        self.url = f"https://{parts.netloc}"
        self.username = username
        self.ca_file = ca_file
        self.timeout = timeout
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self.authorization = "Basic " + token
        try:
            self.context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError(f"cannot read the registry CA file {ca_file}: {exc}") from exc

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> http.client.HTTPResponse:
        """Send one request on a fresh connection; the caller reads (and closes) the response."""
        connection = http.client.HTTPSConnection(
            self.host, self.port, timeout=self.timeout, context=self.context, blocksize=READ_CHUNK
        )
        sent = {"Authorization": self.authorization, "User-Agent": "jetson-llm-fleet"}
        sent.update(headers or {})
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
        except ssl.SSLCertVerificationError as exc:
            connection.close()
            raise RegistryError(
                f"the certificate of {self.url} is not trusted with the CA file {self.ca_file} "
                f"({exc.verify_message or exc}); nothing was sent and there is no plain-HTTP fallback. Fix: install "
                "the fleet registry's CA certificate there (the registry's client tasks), or point the registry "
                "address at the name in its certificate"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise RegistryError(
                f"cannot reach the registry at {self.url} ({type(exc).__name__}: {exc}). Fix: check that the "
                "registry host is up and its docker-registry service runs, and that this host can reach it"
            ) from exc
        if response.status == 401:
            response.read()
            connection.close()
            raise RegistryError(
                f"the registry at {self.url} refused the credentials of user {self.username!r} (HTTP 401). Fix: use "
                "the fleet registry's password for that user (kept in the controller's registry secrets)"
            )
        return response

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None) -> _Answer:
        """A request whose (small) answer is read whole."""
        response = self.request(method, path, headers, body)
        try:
            data = response.read(65536) if method != "HEAD" else b""
        finally:
            response.close()
        return _Answer(response.status, response.headers, data)

    def refuse(self, answer: _Answer, doing: str) -> RegistryError:
        detail = answer.body.decode("utf-8", "replace").strip()[:300]
        return RegistryError(f"the registry at {self.url} answered HTTP {answer.status} to {doing}: {detail or '-'}")


class _Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str:
        return str(self.headers.get(name) or "")


def _path_of(location: str) -> str:
    """The path and query of an upload Location (absolute or relative): requests never go to another host."""
    parts = urlsplit(location)
    return parts.path + ("?" + parts.query if parts.query else "")


def _with_query(path: str, query: str) -> str:
    return path + ("&" if "?" in path else "?") + query


def blob_size(client: Client, repository: str, digest: str) -> int | None:
    """Size of the blob in the repository, None when the registry does not have it."""
    answer = client.call("HEAD", f"/v2/{repository}/blobs/{digest}")
    if answer.status == 404:
        return None
    if answer.status != 200:
        raise client.refuse(answer, f"HEAD of blob {digest} in {repository}")
    return int(answer.header("Content-Length") or 0)


def _save_state(state_file: str, state: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=os.path.dirname(state_file) or ".")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, state_file)


def _load_state(state_file: str, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        with open(state_file, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or any(state.get(name) != value for name, value in key.items()):
        return None
    if not isinstance(state.get("location"), str) or not isinstance(state.get("offset"), int):
        return None
    return state


def _server_offset(answer: _Answer) -> int | None:
    """Bytes the registry holds for an upload, from its ``Range: 0-<last byte>`` header."""
    value = answer.header("Range")
    if "-" not in value:
        return None
    try:
        return int(value.split("-", 1)[1]) + 1
    except ValueError:
        return None


def _resume(client: Client, state: dict[str, Any] | None) -> tuple[str, int] | None:
    """(location, offset) of a previous upload the registry still holds at the offset we recorded, else None."""
    if state is None or state["offset"] <= 0:
        return None
    answer = client.call("GET", _path_of(state["location"]))
    if answer.status != 204 or _server_offset(answer) != state["offset"]:
        return None
    return answer.header("Location") or state["location"], state["offset"]


def push_blob(
    client: Client,
    repository: str,
    path: str,
    digest: str,
    chunk_size: int = CHUNK,
    state_file: str | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Upload a file as a blob in chunked PATCH requests; returns bytes sent and the offset resumed from.

    With ``state_file`` the upload's location and offset are saved after every accepted chunk. A later call for
    the same blob asks the registry for that upload's state and continues at the saved offset when the registry
    reports the same; otherwise (the upload was purged, or a chunk was cut mid-request) it starts a new upload.
    """
    size = os.path.getsize(path)
    key = {"endpoint": client.url, "repository": repository, "digest": digest, "size": size}
    resumed = _resume(client, _load_state(state_file, key)) if state_file else None
    if resumed is None:
        answer = client.call("POST", f"/v2/{repository}/blobs/uploads/", {"Content-Length": "0"})
        if answer.status != 202 or not answer.header("Location"):
            raise client.refuse(answer, f"the start of an upload to {repository}")
        location, offset = answer.header("Location"), 0
    else:
        location, offset = resumed
    start = offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        while offset < size:
            length = min(chunk_size, size - offset)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                "Content-Range": f"{offset}-{offset + length - 1}",
            }
            answer = client.call("PATCH", _path_of(location), headers, _Limited(handle, length))
            if answer.status != 202 or _server_offset(answer) != offset + length:
                raise client.refuse(answer, f"chunk {offset}-{offset + length - 1} of {digest}")
            location, offset = answer.header("Location") or location, offset + length
            if state_file:
                _save_state(state_file, {**key, "location": location, "offset": offset})
            if progress:
                progress(offset)
    answer = client.call("PUT", _with_query(_path_of(location), f"digest={digest}"), {"Content-Length": "0"})
    if answer.status != 201:
        if state_file and os.path.exists(state_file):  # the registry dropped the upload: a re-run starts anew
            os.unlink(state_file)
        raise client.refuse(answer, f"the end of the upload of {digest} (a digest mismatch means the file changed)")
    if state_file and os.path.exists(state_file):
        os.unlink(state_file)
    return {"sent": size - start, "resumed_from": start}


def push_small_blob(client: Client, repository: str, data: bytes) -> str:
    """A blob of a few bytes in one request (the manifest's config); returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if blob_size(client, repository, digest) is None:  # POST, then PUT with the bytes (distribution 2.8)
        answer = client.call("POST", f"/v2/{repository}/blobs/uploads/", {"Content-Length": "0"})
        if answer.status != 202 or not answer.header("Location"):
            raise client.refuse(answer, f"the start of an upload to {repository}")
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        answer = client.call("PUT", _with_query(_path_of(answer.header("Location")), f"digest={digest}"), headers, data)
        if answer.status != 201:
            raise client.refuse(answer, f"the upload of blob {digest}")
    return digest


def manifest_for(digest: str, size: int, filename: str) -> bytes:
    """An OCI image manifest (an artifact, OCI 1.1 style) whose one layer is the model blob."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": MODEL_ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [
            {
                "mediaType": GGUF_MEDIA_TYPE,
                "digest": digest,
                "size": size,
                "annotations": {"org.opencontainers.image.title": filename},
            }
        ],
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def put_manifest(client: Client, repository: str, tag: str, manifest: bytes, check_only: bool = False) -> bool:
    """Tag the manifest unless the tag already names exactly it; True when it was (or would be) put."""
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    answer = client.call("HEAD", f"/v2/{repository}/manifests/{tag}", {"Accept": OCI_MANIFEST})
    if answer.status == 200 and answer.header("Docker-Content-Digest") == digest:
        return False
    if answer.status not in (200, 404):
        raise client.refuse(answer, f"HEAD of manifest {repository}:{tag}")
    if check_only:
        return True
    push_small_blob(client, repository, EMPTY_CONFIG)
    headers = {"Content-Type": OCI_MANIFEST, "Content-Length": str(len(manifest))}
    answer = client.call("PUT", f"/v2/{repository}/manifests/{tag}", headers, manifest)
    if answer.status != 201:
        raise client.refuse(answer, f"the manifest {repository}:{tag}")
    return True


def _hash_prefix(handle: Any, hasher: Any) -> int:
    """Hash a file from its start (streaming); returns its size."""
    read = 0
    while chunk := handle.read(READ_CHUNK):
        hasher.update(chunk)
        read += len(chunk)
    return read


def fetch_blob(
    client: Client,
    repository: str,
    digest: str,
    partial: str,
    size: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Download a blob into ``partial``, continuing an existing partial file with a Range request.

    The partial's bytes are hashed first (streaming), so the digest covers the whole file without reading it
    twice after the transfer. Returns sha256 hex, size, the offset resumed from and the bytes received. The caller
    compares the digest and moves the file into place.
    """
    hasher = hashlib.sha256()
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as handle:
        offset = _hash_prefix(handle, hasher)
        if size is not None and offset > size:
            handle.seek(0)
            handle.truncate()
            hasher, offset = hashlib.sha256(), 0
        start, received = offset, 0
        if size is None or offset < size:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            response = client.request("GET", f"/v2/{repository}/blobs/{digest}", headers)
            try:
                if response.status == 416 and offset:  # the partial already holds the whole blob
                    response.read()
                elif response.status in (200, 206):
                    if response.status == 200 or not str(response.headers.get("Content-Range", "")).startswith(
                        f"bytes {offset}-"
                    ):
                        handle.seek(0)
                        handle.truncate()
                        hasher, offset, start = hashlib.sha256(), 0, 0
                    while chunk := response.read(READ_CHUNK):
                        handle.write(chunk)
                        hasher.update(chunk)
                        received += len(chunk)
                        if progress:
                            progress(offset + received)
                else:
                    answer = _Answer(response.status, response.headers, response.read(65536))
                    raise client.refuse(answer, f"GET of blob {digest} in {repository}")
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                raise RegistryError(
                    f"the download of {digest} from {client.url} stopped after {offset + received} bytes "
                    f"({type(exc).__name__}: {exc}); {partial} is kept and the next run continues from there"
                ) from exc
            finally:
                response.close()
        handle.flush()
        os.fsync(handle.fileno())
    return {"sha256": hasher.hexdigest(), "size": offset + received, "resumed_from": start, "received": received}
