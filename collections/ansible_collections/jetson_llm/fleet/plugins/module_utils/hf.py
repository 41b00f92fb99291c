# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Content-addressed model store helpers for hf_model_fetch (standard library only).

Layout under a cache directory::

    <cache_dir>/<sha256>/<filename>          the verified file, mode 0444
    <cache_dir>/<sha256>/<filename>.sha256   "<sha256>  <basename>\\n" (``sha256sum -c`` format)
    <cache_dir>/.partial-XXXXXX/             a download in progress (removed on success and failure)

A file is only ever moved into ``<sha256>/`` after its content hashed to that digest, and the record
is written after the file, so "file and record present" means "verified" without re-hashing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from pathlib import PurePosixPath

__all__ = [
    "HASH_CHUNK",
    "CachePaths",
    "cache_paths",
    "cached_size",
    "git_blob_sha1",
    "hash_file",
    "install_verified",
    "is_sha256",
    "read_record",
    "redact",
    "validate_filename",
]

HASH_CHUNK = 8 * 1024 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_RECORD_RE = re.compile(r"^([0-9a-f]{64})[ \t]+\*?(.+?)\s*$")


def is_sha256(value: str | None) -> bool:
    return bool(value) and _SHA256_RE.fullmatch(str(value)) is not None


def validate_filename(filename: str) -> str:
    """A repo-relative POSIX path without '..', absolute parts or empty components; returned normalized."""
    if not filename or filename.startswith("/") or "\\" in filename or "\0" in filename:
        raise ValueError(f"invalid filename {filename!r}: expected a path inside the repo like 'model.gguf'")
    parts = PurePosixPath(filename).parts
    if any(part in ("", ".", "..") for part in parts) or filename.endswith("/"):
        raise ValueError(f"invalid filename {filename!r}: '..', '.' and empty path components are not allowed")
    return "/".join(parts)


class CachePaths:
    """Where a file with a given digest lives in the store."""

    def __init__(self, cache_dir: str, sha256: str, filename: str) -> None:
        self.cache_dir = cache_dir
        self.sha256 = sha256
        self.filename = filename
        self.directory = os.path.join(cache_dir, sha256)
        self.path = os.path.join(self.directory, *filename.split("/"))
        self.record = self.path + ".sha256"
        self.basename = os.path.basename(self.path)


def cache_paths(cache_dir: str, sha256: str, filename: str) -> CachePaths:
    if not is_sha256(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return CachePaths(cache_dir, sha256, validate_filename(filename))


def read_record(record_path: str) -> str | None:
    """The digest in a ``.sha256`` record, or None when missing or unreadable."""
    try:
        with open(record_path, encoding="utf-8") as handle:
            line = handle.readline()
    except (OSError, UnicodeDecodeError):
        return None
    match = _RECORD_RE.match(line)
    return match.group(1) if match else None


def cached_size(paths: CachePaths) -> int | None:
    """Size of the stored file when it and its matching record exist (no hashing), else None."""
    try:
        info = os.stat(paths.path, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if read_record(paths.record) != paths.sha256:
        return None
    return info.st_size


def hash_file(path: str, chunk_size: int = HASH_CHUNK, git_sha1: bool = False) -> tuple[str, int, str | None]:
    """(sha256 hex, size, git blob sha1 hex when asked) of a file, read in ``chunk_size`` pieces."""
    sha256 = hashlib.sha256()
    size = os.path.getsize(path)
    sha1 = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False) if git_sha1 else None
    read = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
            read += len(chunk)
    if read != size:
        raise OSError(f"{path} changed size while being hashed ({size} -> {read} bytes)")
    return sha256.hexdigest(), size, sha1.hexdigest() if sha1 is not None else None


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def install_verified(source: str, paths: CachePaths, dir_mode: int = 0o755) -> None:
    """Move an already verified file into the store atomically (same filesystem), 0444, then its record."""
    os.makedirs(os.path.dirname(paths.path), mode=dir_mode, exist_ok=True)
    with open(source, "rb") as handle:
        os.fsync(handle.fileno())
    os.chmod(source, 0o444)
    os.replace(source, paths.path)
    fd, tmp_record = tempfile.mkstemp(prefix=".record-", dir=os.path.dirname(paths.path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"{paths.sha256}  {paths.basename}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_record, 0o444)
        os.replace(tmp_record, paths.record)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_record)
        raise
    _fsync_dir(os.path.dirname(paths.path))


def redact(text: str, secrets: list[str | None]) -> str:
    """Replace every secret (tokens) in text with <redacted>."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text
