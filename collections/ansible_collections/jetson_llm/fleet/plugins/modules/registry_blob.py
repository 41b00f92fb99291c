#!/usr/bin/python
# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Push a local file as a blob of an OCI registry, tagged by a small manifest."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: registry_blob
short_description: Push a local file as a blob of an OCI distribution registry
version_added: "0.2.0"
description:
  - Uploads O(path) to C(<endpoint>/v2/<repository>/blobs/uploads/) when C(HEAD) of the blob
    C(sha256:<hex>) says the registry does not have it, then tags a small OCI manifest (an artifact whose one
    layer is the blob) as O(tag), so that registry garbage collection keeps the blob and a pull-through mirror
    can cache it.
  - The file is streamed from disk in chunked C(PATCH) requests of O(chunk_size) bytes, read in 1 MiB pieces; it
    is never read whole into memory. The registry checks the digest when the upload ends.
  - "Interrupted uploads: after every accepted chunk the upload's location and offset are saved in O(state_file).
    A re-run asks the registry for that upload and continues at the saved offset when the registry reports the
    same offset; when the registry no longer knows the upload (purged, or the registry restarted without its
    upload state) or holds a different offset (a chunk cut mid-request), the module starts a new upload from the
    first byte. The abandoned upload is removed by the registry's upload purging."
  - HTTPS only, with the CA in O(ca_file) and basic auth; an untrusted certificate or refused credentials fail
    with a message, there is no plain-HTTP fallback.
  - Runs on the controller (C(delegate_to=localhost), C(run_once=true)), where the file is.
author:
  - jetson-llm-fleet developers (!UNKNOWN)
options:
  path:
    description: The local file to push.
    type: path
    required: true
  sha256:
    description:
      - sha256 of the file (64 hex digits, V(sha256:) prefix accepted), for example the digest of a
        content-addressed store. Empty hashes the file first (streaming).
      - A wrong value fails at the end of the upload (the registry computes the digest itself).
    type: str
  endpoint:
    description: The registry's push endpoint, V(host:port) or V(https://host:port).
    type: str
    required: true
  repository:
    description: Repository in the registry, for example V(jetson-llm-fleet/models).
    type: str
    required: true
  username:
    description: Registry user with push rights.
    type: str
    required: true
  password:
    description: Password of O(username).
    type: str
    required: true
  ca_file:
    description: CA certificate that signed the registry's certificate.
    type: path
    required: true
  tag:
    description: Tag of the manifest. Default V(sha256-<hex>) of the blob.
    type: str
  filename:
    description: File name recorded in the manifest's layer annotation. Default the base name of O(path).
    type: str
  chunk_size:
    description: Bytes per C(PATCH) request.
    type: int
    default: 67108864
  state_file:
    description: Where the state of an unfinished upload is kept. Default C(<path>.upload-state) when its directory
      is writable, else no resume.
    type: path
  timeout:
    description: Seconds to wait for the registry on every read or write.
    type: int
    default: 60
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Asks the registry (HEAD of the blob and of the tag) and uploads nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
seealso:
  - module: jetson_llm.fleet.blob_fetch
"""

EXAMPLES = r"""
- name: Push the model once per fleet
  jetson_llm.fleet.registry_blob:
    path: "{{ hf_model_artifact.path }}"
    sha256: "{{ hf_model_artifact.sha256 }}"
    endpoint: "{{ hostvars['localhost'].fleet_registry.push_endpoint }}"
    repository: "{{ hostvars['localhost'].fleet_registry.model_repository }}"
    username: "{{ hostvars['localhost'].fleet_registry.push_user }}"
    password: "{{ hostvars['localhost'].fleet_registry.push_password }}"
    ca_file: "{{ hostvars['localhost'].fleet_registry.ca_file }}"
  delegate_to: localhost
  run_once: true
  no_log: true
"""

RETURN = r"""
digest:
  description: Digest of the blob.
  returned: success
  type: str
  sample: sha256:6c1a2b...
size:
  description: Size of the file in bytes.
  returned: success
  type: int
uploaded:
  description: Whether the blob was (or in check mode would be) uploaded in this run.
  returned: success
  type: bool
sent:
  description: Bytes sent in this run.
  returned: success
  type: int
resumed_from:
  description: Offset an interrupted upload continued from (0 for a new upload or none).
  returned: success
  type: int
tag:
  description: The manifest's tag.
  returned: success
  type: str
manifest_changed:
  description: Whether the tag was (or would be) written.
  returned: success
  type: bool
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.jetson_llm.fleet.plugins.module_utils.hf import hash_file, is_sha256
from ansible_collections.jetson_llm.fleet.plugins.module_utils.registry import (
    Client,
    RegistryError,
    blob_size,
    manifest_for,
    push_blob,
    put_manifest,
)
from ansible_collections.jetson_llm.fleet.plugins.module_utils.result import done, fail

ARGUMENT_SPEC: dict[str, Any] = {
    "path": {"type": "path", "required": True},
    "sha256": {"type": "str"},
    "endpoint": {"type": "str", "required": True},
    "repository": {"type": "str", "required": True},
    "username": {"type": "str", "required": True},
    "password": {"type": "str", "required": True, "no_log": True},
    "ca_file": {"type": "path", "required": True},
    "tag": {"type": "str"},
    "filename": {"type": "str"},
    "chunk_size": {"type": "int", "default": 64 * 1024 * 1024},
    "state_file": {"type": "path"},
    "timeout": {"type": "int", "default": 60},
}


def run(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    path: str = params["path"]
    if not os.path.isfile(path):
        fail(module, f"{path} is not a file: nothing to push")
    if params["chunk_size"] < 1024 * 1024:
        fail(module, f"chunk_size {params['chunk_size']} is below 1 MiB")
    expected = (params["sha256"] or "").strip().lower().removeprefix("sha256:")
    if expected and not is_sha256(expected):
        fail(module, f"sha256 must be 64 hexadecimal digits, got {params['sha256']!r}")
    hexdigest = expected or hash_file(path)[0]
    digest = "sha256:" + hexdigest
    size = os.path.getsize(path)
    tag: str = params["tag"] or f"sha256-{hexdigest}"
    state_file = params["state_file"] or path + ".upload-state"
    if not os.access(os.path.dirname(state_file) or ".", os.W_OK):
        state_file = None
    client = Client(params["endpoint"], params["username"], params["password"], params["ca_file"], params["timeout"])
    repository: str = params["repository"]
    result: dict[str, Any] = {"digest": digest, "size": size, "tag": tag, "sent": 0, "resumed_from": 0}
    present = blob_size(client, repository, digest)
    if present is not None and present != size:
        fail(module, f"{client.url}/v2/{repository} holds {digest} with {present} bytes, but {path} has {size}")
    result["uploaded"] = present is None
    if present is None and not module.check_mode:
        result.update(push_blob(client, repository, path, digest, params["chunk_size"], state_file))
    manifest = manifest_for(digest, size, params["filename"] or os.path.basename(path))
    result["manifest_changed"] = put_manifest(client, repository, tag, manifest, check_only=module.check_mode)
    result["changed"] = result["uploaded"] or result["manifest_changed"]
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = run(module)
    except RegistryError as exc:
        fail(module, str(exc))
    except OSError as exc:
        fail(module, f"cannot read {module.params['path']}: {exc}")
    done(module, **result)


if __name__ == "__main__":
    main()
