#!/usr/bin/python
# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Download one file from the Hugging Face Hub, verify its sha256 and store it by content."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hf_model_fetch
short_description: Download a file from the Hugging Face Hub and verify its sha256
version_added: "0.1.0"
description:
  - Downloads O(filename) from the model repository O(repo_id) at O(revision) with the
    C(huggingface_hub) client, hashes it (sha256, 8 MiB chunks) and moves it into a content-addressed
    store only when the digest is the expected one. C(huggingface_hub) itself checks only the size.
  - "Store layout: C(<cache_dir>/<sha256>/<filename>) (mode 0444) and C(<cache_dir>/<sha256>/<filename>.sha256)
    (C(sha256sum -c) format). Downloads go to a C(.partial-*) directory inside O(cache_dir) first, so the
    final rename is atomic and an interrupted or rejected download never appears in the store."
  - The expected digest is O(sha256) when given, otherwise the LFS sha256 the hub publishes for the file
    (RV(sha256_source=hub)); for files not stored in LFS the hub publishes only a git blob id, which is
    checked instead, and the digest comes from the download (RV(sha256_source=download)).
  - With O(sha256) given and the file already in the store, the module makes no network request at all.
    Without O(sha256) it makes one metadata request (the file list with sizes and digests) and downloads
    nothing when that content is already stored.
  - The download is pinned to the commit the metadata request resolved O(revision) to, so a branch that
    moves in between cannot mix versions.
  - With O(download=false) the module only resolves the revision, the digest and the size (one metadata
    request, none when O(sha256) is given and the file is already stored) and downloads nothing, for
    deployments where the devices fetch the file themselves from C(<endpoint>/<repo_id>/resolve/<commit>/<filename>)
    and check it against RV(sha256).
  - "Requests, in order: C(GET <endpoint>/api/models/<repo_id>/revision/<revision>?blobs=true) (the commit, sizes
    and LFS digests; skipped when O(sha256) is given and the file is stored), then C(HEAD) and C(GET
    <endpoint>/<repo_id>/resolve/<commit>/<filename>). The Hub answers the resolve route of an LFS file with a 302
    to a signed URL on another host (today C(cdn-lfs*.hf.co) or, for repositories stored in Xet,
    C(cas-bridge.xethub.hf.co)); the download follows it without the token (huggingface_hub sends
    C(Authorization) only to the endpoint's own origin). A mirror must serve both routes."
  - Xet is off (C(HF_HUB_DISABLE_XET)) whatever the environment says, even with C(hf_xet) installed, so the file
    always comes over plain HTTPS from the redirect target, with O(timeout) applied to every read and the
    controller's HTTPS proxy settings honoured; the Xet client would talk to further hosts
    (C(cas-server.xethub.hf.co), C(transfer.xethub.hf.co)) with its own timeouts.
  - A split GGUF (C(<name>-00001-of-0000N.gguf)) is refused before any request; the fleet deploys one file.
  - With E(HF_HUB_OFFLINE) set the module makes no request; it then needs O(sha256) (a revision cannot be resolved
    offline) and says which digests of O(filename) the store holds.
  - Runs where the store is, normally the controller (C(delegate_to=localhost), C(run_once=true)), with
    an interpreter that has C(huggingface_hub) (see requirements.txt).
author:
  - jetson-llm-fleet developers (!UNKNOWN)
requirements:
  - huggingface_hub >= 1.0 (tested with 2.4.0)
options:
  repo_id:
    description: Model repository, C(org/name), for example V(bartowski/Llama-3.2-3B-Instruct-GGUF).
    type: str
    required: true
  filename:
    description: Path of the file inside the repository, for example V(Llama-3.2-3B-Instruct-Q4_K_M.gguf).
    type: str
    required: true
  revision:
    description: Branch, tag or commit hash.
    type: str
    default: main
  sha256:
    description:
      - Expected sha256 of the file (64 hex digits, an optional V(sha256:) prefix is accepted).
      - Pin it for reproducible deployments; it also makes repeated runs free of network requests.
    type: str
  cache_dir:
    description: Root of the content-addressed store. Created when missing.
    type: path
    default: ~/.cache/jetson-llm-fleet/models
  token:
    description:
      - Hugging Face access token for gated or private repositories (keep it in a vault).
      - Falls back to the E(HF_TOKEN) environment variable. When neither is set no token is sent, not even
        one saved by C(hf auth login), so runs do not depend on hidden state.
      - The token never appears in results or messages.
    type: str
  endpoint:
    description:
      - Hub endpoint (a mirror). Falls back to E(HF_ENDPOINT), then https://huggingface.co.
      - Passed explicitly to every call, because C(huggingface_hub) reads E(HF_ENDPOINT) only at import.
    type: str
  timeout:
    description: Seconds to wait for the hub to answer a metadata request or to send more download data.
    type: int
    default: 30
  download:
    description:
      - V(false) resolves the metadata only (commit, sha256, size) and never downloads; RV(path) is then
        the stored file when it is already in the store, else null.
      - Fails when the hub publishes no sha256 for the file (a file outside LFS) and O(sha256) is not given,
        because whoever downloads the file later could not verify it.
    type: bool
    default: true
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Makes the metadata request (read-only) and reports whether a download would happen, without downloading.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
notes:
  - Gated repositories (for example C(meta-llama/*)) need their license accepted on the hub with the account
    that owns the token.
seealso:
  - module: jetson_llm.fleet.gguf_memory_fit
"""

EXAMPLES = r"""
- name: Fetch the model on the controller (pinned digest, no network when already stored)
  jetson_llm.fleet.hf_model_fetch:
    repo_id: bartowski/Llama-3.2-3B-Instruct-GGUF
    filename: Llama-3.2-3B-Instruct-Q4_K_M.gguf
    sha256: "{{ llm_model_sha256 }}"
    cache_dir: "{{ playbook_dir }}/../.cache/models"
    token: "{{ hf_token | default(omit) }}"
  delegate_to: localhost
  run_once: true
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  register: llm_model

- name: Use the verified file
  ansible.builtin.debug:
    msg: "{{ llm_model.path }} ({{ llm_model.size }} bytes, sha256 {{ llm_model.sha256 }})"
"""

RETURN = r"""
path:
  description: >-
    The verified file in the store (in check mode, where it would be; null when the digest is unknown yet, and
    with O(download=false) when the file is not in the store).
  returned: success
  type: str
  sample: /home/ops/.cache/jetson-llm-fleet/models/6c1a2b.../Llama-3.2-3B-Instruct-Q4_K_M.gguf
sha256:
  description: sha256 of the file (null in check mode when it could only be learnt by downloading).
  returned: success
  type: str
size:
  description: Size in bytes (from the store, else from the hub's metadata).
  returned: success
  type: int
  sample: 2019377696
commit:
  description: Commit O(revision) resolved to; null when no request was needed.
  returned: success
  type: str
sha256_source:
  description: >-
    Where the expected digest came from: V(expected) (the O(sha256) option), V(hub) (the LFS metadata)
    or V(download) (hashed after a download checked against the git blob id).
  returned: success
  type: str
  sample: hub
downloaded:
  description: Whether a file was transferred in this run.
  returned: success
  type: bool
stored:
  description: Whether the verified file is in the store after this run (false in check mode before a download).
  returned: success
  type: bool
repo_id:
  description: O(repo_id), echoed.
  returned: always
  type: str
filename:
  description: O(filename), echoed.
  returned: always
  type: str
revision:
  description: O(revision), echoed.
  returned: always
  type: str
"""


import contextlib
import os
import shutil
import tempfile
import traceback
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.jetson_llm.fleet.plugins.module_utils.gguf import split_shard
from ansible_collections.jetson_llm.fleet.plugins.module_utils.hf import (
    CachePaths,
    cache_paths,
    cached_size,
    hash_file,
    install_verified,
    is_sha256,
    redact,
    validate_filename,
)
from ansible_collections.jetson_llm.fleet.plugins.module_utils.result import done as exit_module
from ansible_collections.jetson_llm.fleet.plugins.module_utils.result import fail

try:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub import constants as hf_constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import disable_progress_bars
except ImportError:
    HF_HUB_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HF_HUB_IMPORT_ERROR = None

DEFAULT_CACHE_DIR = "~/.cache/jetson-llm-fleet/models"
LIBRARY_NAME = "jetson-llm-fleet"


class Fetcher:
    """State of one run: parameters, the token (kept out of every message) and the result so far."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        params = module.params
        self.repo_id: str = params["repo_id"].strip()
        self.revision: str = params["revision"] or "main"
        self.timeout: int = params["timeout"]
        self.cache_dir: str = os.path.abspath(params["cache_dir"])
        self.token: str | None = params["token"] or os.environ.get("HF_TOKEN") or None
        if self.token:
            module.no_log_values.add(self.token)
        self.endpoint: str = (params["endpoint"] or os.environ.get("HF_ENDPOINT") or "").rstrip("/")
        self.filename: str = params["filename"]
        expected = (params["sha256"] or "").strip().lower().removeprefix("sha256:")
        self.expected: str | None = expected or None
        self.download_file: bool = params["download"]
        self.result: dict[str, Any] = {
            "changed": False,
            "repo_id": self.repo_id,
            "filename": self.filename,
            "revision": self.revision,
            "path": None,
            "sha256": None,
            "size": None,
            "commit": None,
            "sha256_source": "expected" if self.expected else None,
            "downloaded": False,
            "stored": False,
        }
        try:
            self.filename = validate_filename(self.filename)
        except ValueError as exc:
            self.fail(str(exc))
        if expected and not is_sha256(expected):
            self.fail(f"sha256 must be 64 hexadecimal digits, got {params['sha256']!r}")
        shard = split_shard(self.filename)
        if shard is not None:
            self.fail(
                f"{self.filename} is shard {shard[0]} of a split GGUF ({shard[1]} files): llama-server loads the other "
                "shards from the same directory, and this fleet deploys one file. Fix: choose a single-file "
                "quantization of the model, or merge the shards (llama-gguf-split --merge <first shard> <model.gguf>) "
                "and serve the merged file from your own repository or mirror. Nothing was downloaded."
            )

    # --- results ---------------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.repo_id}/{self.filename} at revision {self.revision}"

    @property
    def hub(self) -> str:
        return self.endpoint or (hf_constants.ENDPOINT if HF_HUB_IMPORT_ERROR is None else "https://huggingface.co")

    def fail(self, msg: str, **extra: Any) -> NoReturn:
        self.result.pop("changed", None)
        fail(self.module, redact(msg, [self.token]), **self.result, **extra)

    def done(self, paths: CachePaths | None, size: int | None, changed: bool, stored: bool = True) -> NoReturn:
        self.result.update(
            changed=changed,
            path=paths.path if paths else None,
            sha256=paths.sha256 if paths else None,
            size=size,
            stored=stored and paths is not None,
        )
        exit_module(self.module, **self.result)

    def done_metadata(self, expected: str | None, size: int | None) -> NoReturn:
        """download=false and the file is not stored: report what the hub says, download nothing."""
        if expected is None:
            self.fail(
                f"the hub publishes no sha256 for {self.repo_id}/{self.filename} at revision {self.revision} "
                "(the file is not stored in LFS), so a download elsewhere could not be verified: give sha256, "
                "or let this module download the file (download=true)"
            )
        self.result.update(changed=False, path=None, sha256=expected, size=size, stored=False)
        exit_module(self.module, **self.result)

    # --- hub errors ------------------------------------------------------------------------------

    def fail_from_hub(self, exc: BaseException, action: str) -> NoReturn:
        """Turn a huggingface_hub / transport exception into a clear message (never with the token)."""
        repo_url = f"{self.hub}/{self.repo_id}"
        if isinstance(exc, GatedRepoError):
            if self.token:
                self.fail(
                    f"repo {self.repo_id} is gated and the token given was not granted access: accept its "
                    f"license on the hub ({repo_url}) with the account that owns the token"
                )
            self.fail(
                f"repo {self.repo_id} is gated: accept its license on the hub ({repo_url}) and give a token "
                "via hf_token (vault) or HF_TOKEN"
            )
        if isinstance(exc, RepositoryNotFoundError):
            hint = "" if self.token else " (a private repo also needs a token via hf_token or HF_TOKEN)"
            self.fail(f"repo {self.repo_id} not found on {self.hub}{hint}; check repo_id")
        if isinstance(exc, RevisionNotFoundError):
            self.fail(f"revision {self.revision!r} not found in repo {self.repo_id}; check the branch, tag or commit")
        if isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
            self.fail(f"file {self.filename} not found in repo {self.repo_id} at revision {self.revision}")
        if isinstance(exc, OfflineModeIsEnabled):
            self.fail_offline(action)
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else None
            if status == 401:
                self.fail(
                    f"the hub at {self.hub} rejected the token (401 invalid credentials) while trying to {action}"
                )
            detail = str(exc).splitlines()[0]
            mirror = ""
            if status == 404 and "/api/models/" in str(exc) and self.endpoint:
                mirror = (
                    f"; a mirror must serve the Hub's metadata route (/api/models/{self.repo_id}/revision/<revision>"
                    "?blobs=true) as well as /resolve"
                )
            self.fail(f"cannot {action}: the hub answered HTTP {status} ({detail}){mirror}")
        if isinstance(exc, LocalEntryNotFoundError):
            cause = exc.__cause__ or exc.__context__
            reason = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            self.fail(f"cannot {action}: the hub at {self.hub} could not be reached ({reason})")
        if isinstance(exc, HFValidationError):
            self.fail(f"invalid repo_id or revision: {exc}")
        self.fail(f"cannot {action} from {self.hub}: {type(exc).__name__}: {exc}")

    def stored_digests(self) -> list[str]:
        """Digests under which the store holds O(filename) with its record (no hashing)."""
        found = []
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(self.cache_dir)):
                if is_sha256(name) and cached_size(cache_paths(self.cache_dir, name, self.filename)) is not None:
                    found.append(name)
        return found

    def fail_offline(self, action: str) -> NoReturn:
        """HF_HUB_OFFLINE: say what the store holds, since without the hub the revision cannot be resolved."""
        digests = self.stored_digests()
        if self.expected:  # pinned, and not stored (a stored pin returns before any request)
            self.fail(
                f"cannot {action}: HF_HUB_OFFLINE is set and {self.filename} with sha256 {self.expected} is not in "
                f"{self.cache_dir}" + (f" (it holds sha256 {', '.join(digests)})" if digests else "")
            )
        if digests:
            self.fail(
                f"cannot {action}: HF_HUB_OFFLINE is set and sha256 is not pinned, so revision {self.revision} cannot "
                f"be resolved to a digest. {self.cache_dir} holds {self.filename} with sha256 {', '.join(digests)}: "
                "pin it (hf_model_sha256) to use that copy offline, or unset HF_HUB_OFFLINE."
            )
        self.fail(
            f"cannot {action}: HF_HUB_OFFLINE is set and {self.cache_dir} holds no copy of {self.filename}: unset "
            "HF_HUB_OFFLINE (the hub or a mirror must be reachable once), or put the verified file in the store."
        )

    # --- steps -----------------------------------------------------------------------------------

    def metadata(self) -> tuple[str, str | None, int | None, str | None]:
        """(commit, LFS sha256 or None, size or None, git blob id or None) of the file at the revision."""
        api = HfApi(endpoint=self.endpoint or None, library_name=LIBRARY_NAME, library_version="0.1.0")
        try:
            info = api.model_info(
                self.repo_id,
                revision=self.revision,
                files_metadata=True,
                token=self.token or False,
                timeout=self.timeout,
            )
        except Exception as exc:
            self.fail_from_hub(exc, f"read the metadata of {self.where}")
        commit = str(info.sha or "")
        self.result["commit"] = commit or None
        siblings = list(info.siblings or [])
        for sibling in siblings:
            if sibling.rfilename == self.filename:
                lfs = sibling.lfs
                sha = str(lfs.sha256).lower() if lfs is not None and lfs.sha256 else None
                size = int(lfs.size) if lfs is not None and lfs.size is not None else sibling.size
                return commit, sha, size, sibling.blob_id
        ggufs = sorted(s.rfilename for s in siblings if s.rfilename.lower().endswith(".gguf"))
        listing = f"; GGUF files there: {', '.join(ggufs[:20])}" if ggufs else ""
        self.fail(f"file {self.filename} not found in repo {self.repo_id} at revision {self.revision}{listing}")

    def download(self, commit: str, expected: str | None, size: int | None, blob_id: str | None) -> None:
        os.makedirs(self.cache_dir, mode=0o755, exist_ok=True)
        partial = tempfile.mkdtemp(prefix=".partial-", dir=self.cache_dir)
        try:
            try:
                local = hf_hub_download(
                    self.repo_id,
                    self.filename,
                    revision=commit or self.revision,
                    local_dir=partial,
                    cache_dir=os.path.join(partial, ".hf-cache"),
                    token=self.token or False,
                    endpoint=self.endpoint or None,
                    etag_timeout=self.timeout,
                    library_name=LIBRARY_NAME,
                )
            except Exception as exc:
                self.fail_from_hub(exc, f"download {self.where}")
            actual, actual_size, git_sha1 = hash_file(str(local), git_sha1=expected is None and blob_id is not None)
            source = self.result["sha256_source"]
            problem = None
            if expected is not None and actual != expected:
                problem = f"expected sha256 {expected} ({source}), downloaded file has sha256 {actual}"
            elif expected is None and blob_id is not None and git_sha1 != blob_id:
                problem = f"expected git blob id {blob_id} (hub), downloaded file has {git_sha1} (sha256 {actual})"
            elif size is not None and actual_size != size:
                problem = f"expected {size} bytes (hub), downloaded {actual_size} bytes"
            if problem:
                self.fail(
                    f"verification failed for {self.repo_id}/{self.filename} at revision {self.revision} "
                    f"(commit {commit}): {problem}. The download ({actual_size} bytes) was deleted; nothing in "
                    f"{self.cache_dir} was replaced.",
                    actual_sha256=actual,
                )
            paths = cache_paths(self.cache_dir, actual, self.filename)
            install_verified(str(local), paths)
            self.result["downloaded"] = True
            self.done(paths, actual_size, changed=True)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def run(self) -> NoReturn:
        if self.expected:
            pinned = cache_paths(self.cache_dir, self.expected, self.filename)
            stored = cached_size(pinned)
            if stored is not None:
                self.done(pinned, stored, changed=False)

        if HF_HUB_IMPORT_ERROR is not None:
            self.module.fail_json(msg=missing_required_lib("huggingface_hub"), exception=HF_HUB_IMPORT_ERROR)
        disable_progress_bars()
        hf_constants.HF_HUB_DOWNLOAD_TIMEOUT = self.timeout  # read per request by http_get
        # Plain HTTPS from the redirect target, never the Xet client (is_xet_available reads this per call).
        hf_constants.HF_HUB_DISABLE_XET = True
        if hf_constants.is_offline_mode():  # read from the environment at import: say what the store holds
            self.fail_offline(f"read the metadata of {self.where}")

        commit, hub_sha, size, blob_id = self.metadata()
        if self.expected and hub_sha and hub_sha != self.expected:
            self.fail(
                f"the hub reports sha256 {hub_sha} for {self.repo_id}/{self.filename} at revision "
                f"{self.revision} (commit {commit}), but sha256 {self.expected} is expected: the file on the hub "
                "is not the pinned one (new upload or wrong pin). Nothing was downloaded.",
                hub_sha256=hub_sha,
            )
        expected = self.expected or hub_sha
        if self.result["sha256_source"] is None:
            self.result["sha256_source"] = "hub" if hub_sha else "download"
        paths = cache_paths(self.cache_dir, expected, self.filename) if expected else None
        if paths is not None:
            stored = cached_size(paths)
            if stored is not None:
                self.done(paths, stored, changed=False)
        if not self.download_file:
            self.done_metadata(expected, size)
        if self.module.check_mode:
            self.done(paths, size, changed=True, stored=False)
        self.download(commit, expected, size, blob_id)
        raise AssertionError("download returned")


ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "repo_id": {"type": "str", "required": True},
    "filename": {"type": "str", "required": True},
    "revision": {"type": "str", "default": "main"},
    "sha256": {"type": "str"},
    "cache_dir": {"type": "path", "default": DEFAULT_CACHE_DIR},
    "token": {"type": "str", "no_log": True},
    "endpoint": {"type": "str"},
    "timeout": {"type": "int", "default": 30},
    "download": {"type": "bool", "default": True},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    Fetcher(module).run()


if __name__ == "__main__":
    main()
