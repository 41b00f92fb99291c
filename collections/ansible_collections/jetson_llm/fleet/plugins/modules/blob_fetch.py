#!/usr/bin/python
# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Download a blob of an OCI registry to a file, resuming a partial download, sha256-checked."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: blob_fetch
short_description: Download a blob of an OCI distribution registry into a file, resumable and sha256-checked
version_added: "0.2.0"
description:
  - "Downloads C(GET <endpoint>/v2/<repository>/blobs/sha256:<hex>) into C(<dest>.partial), streaming in 1 MiB
    pieces (the file is never held in memory), checks its sha256 and only then renames it to O(dest), with O(mode),
    O(owner) and O(group) set before the rename."
  - "An interrupted download keeps C(<dest>.partial). The next run hashes the partial's bytes (streaming) and asks
    only for the rest (C(Range: bytes=<partial size>-)); a registry that answers with the whole blob restarts it.
    When the finished file's digest differs (for example a corrupted partial, or a corrupted blob on the
    registry's disk), the partial is removed, nothing is put in place and the module fails."
  - With O(dest) already present and hashing to O(sha256) nothing is downloaded (C(changed=false) unless its mode
    or owner had to be set).
  - HTTPS only, with the CA in O(ca_path) and basic auth; an untrusted certificate or refused credentials fail with
    a message, there is no plain-HTTP fallback.
author:
  - jetson-llm-fleet developers (!UNKNOWN)
options:
  endpoint:
    description: The registry's pull endpoint, V(host:port) or V(https://host:port).
    type: str
    required: true
  repository:
    description: Repository in the registry, for example V(jetson-llm-fleet/models).
    type: str
    required: true
  sha256:
    description: Digest of the blob (64 hex digits, V(sha256:) prefix accepted).
    type: str
    required: true
  size:
    description: Expected size in bytes (a partial larger than this is discarded). 0 = not known.
    type: int
    default: 0
  dest:
    description: Where the verified file goes. Its directory must exist.
    type: path
    required: true
  username:
    description: Registry user with pull rights.
    type: str
    required: true
  password:
    description: Password of O(username).
    type: str
    required: true
  ca_path:
    description: CA certificate that signed the registry's certificate, for example
      C(/etc/docker/certs.d/<endpoint>/ca.crt).
    type: path
    required: true
  mode:
    description: Mode of O(dest), octal.
    type: str
    default: "0444"
  owner:
    description: Owner of O(dest). Default the user the module runs as.
    type: str
  group:
    description: Group of O(dest). Default the user's group.
    type: str
  timeout:
    description: Seconds to wait for the registry on every read.
    type: int
    default: 60
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Hashes O(dest) when present and downloads nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
seealso:
  - module: jetson_llm.fleet.registry_blob
"""

EXAMPLES = r"""
- name: Fetch the model from the fleet registry
  jetson_llm.fleet.blob_fetch:
    endpoint: "{{ hostvars['localhost'].fleet_registry.endpoint }}"
    repository: "{{ hostvars['localhost'].fleet_registry.model_repository }}"
    sha256: "{{ hf_model_artifact.sha256 }}"
    size: "{{ hf_model_artifact.size | int }}"
    dest: /opt/llm/models/{{ hf_model_artifact.sha256 }}/{{ hf_model_artifact.filename }}
    username: "{{ hostvars['localhost'].fleet_registry.pull_user }}"
    password: "{{ hostvars['localhost'].fleet_registry.pull_password }}"
    ca_path: /etc/docker/certs.d/{{ hostvars['localhost'].fleet_registry.endpoint }}/ca.crt
    owner: root
    group: root
  no_log: true
"""

RETURN = r"""
path:
  description: O(dest).
  returned: success
  type: str
sha256:
  description: Digest of the file in place.
  returned: success
  type: str
size:
  description: Size of the file in bytes.
  returned: success
  type: int
downloaded:
  description: Whether bytes were received in this run.
  returned: success
  type: bool
resumed_from:
  description: Size of the partial file the download continued from (0 when it started from the first byte).
  returned: success
  type: int
received:
  description: Bytes received in this run.
  returned: success
  type: int
"""

import contextlib
import grp
import os
import pwd
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.jetson_llm.fleet.plugins.module_utils.hf import hash_file, is_sha256
from ansible_collections.jetson_llm.fleet.plugins.module_utils.registry import Client, RegistryError, fetch_blob
from ansible_collections.jetson_llm.fleet.plugins.module_utils.result import done, fail

ARGUMENT_SPEC: dict[str, Any] = {
    "endpoint": {"type": "str", "required": True},
    "repository": {"type": "str", "required": True},
    "sha256": {"type": "str", "required": True},
    "size": {"type": "int", "default": 0},
    "dest": {"type": "path", "required": True},
    "username": {"type": "str", "required": True},
    "password": {"type": "str", "required": True, "no_log": True},
    "ca_path": {"type": "path", "required": True},
    "mode": {"type": "str", "default": "0444"},
    "owner": {"type": "str"},
    "group": {"type": "str"},
    "timeout": {"type": "int", "default": 60},
}


def _ids(module: AnsibleModule) -> tuple[int, int]:
    owner, group = module.params["owner"], module.params["group"]
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else os.getuid()
        gid = grp.getgrnam(group).gr_gid if group else os.getgid()
    except KeyError as exc:
        fail(module, f"unknown owner or group: {exc}")
    return uid, gid


def _set_attributes(path: str, mode: int, uid: int, gid: int) -> bool:
    info = os.stat(path)
    changed = False
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.chown(path, uid, gid)
        changed = True
    if info.st_mode & 0o7777 != mode:
        os.chmod(path, mode)
        changed = True
    return changed


def run(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    expected = params["sha256"].strip().lower().removeprefix("sha256:")
    if not is_sha256(expected):
        fail(module, f"sha256 must be 64 hexadecimal digits, got {params['sha256']!r}")
    try:
        mode = int(params["mode"], 8)
    except ValueError:
        fail(module, f"mode {params['mode']!r} is not an octal mode such as 0444")
    dest: str = params["dest"]
    partial = dest + ".partial"
    uid, gid = _ids(module)
    result: dict[str, Any] = {"path": dest, "sha256": expected, "downloaded": False, "resumed_from": 0, "received": 0}
    if os.path.isfile(dest) and hash_file(dest)[0] == expected:
        result["size"] = os.path.getsize(dest)
        result["changed"] = False if module.check_mode else _set_attributes(dest, mode, uid, gid)
        return result
    result["changed"] = True
    if module.check_mode:
        return result
    if not os.path.isdir(os.path.dirname(dest)):
        fail(module, f"the directory of {dest} does not exist")
    client = Client(params["endpoint"], params["username"], params["password"], params["ca_path"], params["timeout"])
    got = fetch_blob(client, params["repository"], "sha256:" + expected, partial, params["size"] or None)
    result.update(downloaded=got["received"] > 0, resumed_from=got["resumed_from"], received=got["received"])
    if got["sha256"] != expected or (params["size"] and got["size"] != params["size"]):
        with contextlib.suppress(OSError):
            os.unlink(partial)
        fail(
            module,
            f"the file fetched from {client.url}/v2/{params['repository']}/blobs/sha256:{expected} has sha256 "
            f"{got['sha256']} and {got['size']} bytes (resumed from {got['resumed_from']}), expected {expected}"
            f"{' and ' + str(params['size']) + ' bytes' if params['size'] else ''}: the partial file was removed "
            f"and nothing was put at {dest}. A re-run downloads it again from the first byte; if it fails again, "
            "the blob on the registry's disk is corrupted: push the model again",
            **result,
        )
    _set_attributes(partial, mode, uid, gid)
    os.replace(partial, dest)
    result["size"] = got["size"]
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = run(module)
    except RegistryError as exc:
        fail(module, str(exc))
    except OSError as exc:
        fail(module, f"cannot write {module.params['dest']}: {exc}")
    done(module, **result)


if __name__ == "__main__":
    main()
