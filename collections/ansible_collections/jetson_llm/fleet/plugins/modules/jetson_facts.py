#!/usr/bin/python
# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Gather NVIDIA Jetson facts (L4T, JetPack, module, nvpmodel, CUDA, memory, disk, docker)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jetson_facts
short_description: Gather facts about an NVIDIA Jetson board
version_added: "0.1.0"
description:
  - Reads the L4T release, the device tree, the CUDA toolkit version, the nvpmodel configuration,
    memory, free disk space and the Docker / NVIDIA Container Toolkit setup of a Jetson board.
  - Never changes anything and never fails because a file is missing; missing data is returned as
    V(null) / V(false) so that the caller can assert on it.
  - When the L4T release file is missing or unparsable the version of the C(nvidia-l4t-core)
    package is used instead (C(dpkg-query)).
author:
  - jetson-llm-fleet developers (!UNKNOWN)
options:
  release_file:
    description: Path of the L4T release file.
    type: path
    default: /etc/nv_tegra_release
  device_tree_dir:
    description: Directory holding the device tree C(model) and C(compatible) properties.
    type: path
    default: /proc/device-tree
  cuda_dir:
    description: CUDA toolkit directory holding C(version.json) or C(version.txt).
    type: path
    default: /usr/local/cuda
  nvpmodel_conf:
    description: Path of the nvpmodel configuration (usually a symlink into C(/etc/nvpmodel/)).
    type: path
    default: /etc/nvpmodel.conf
  disk_paths:
    description:
      - Paths whose free space is reported. A path that does not exist yet is measured on its nearest
        existing ancestor.
      - O(docker_root) and paths under it are measured on Docker's real data root instead (see RV(jetson.docker)),
        which sites often move to an SSD with C(data-root) in C(daemon.json).
    type: list
    elements: path
    default: []
  docker_root:
    description:
      - The path in O(disk_paths) that stands for Docker's data, whatever C(data-root) says.
    type: path
    default: /var/lib/docker
  docker_daemon_json:
    description: Docker's daemon configuration.
    type: path
    default: /etc/docker/daemon.json
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
notes:
  - C(memtotal_mb) is read from C(/proc/meminfo), Docker runtimes from O(docker_daemon_json).
  - Docker's data root is what the running daemon reports (C(docker info --format {{.DockerRootDir}})), else
    C(data-root) (or the older C(graph)) in O(docker_daemon_json), else C(/var/lib/docker).
"""

EXAMPLES = r"""
- name: Gather Jetson facts
  jetson_llm.fleet.jetson_facts:
    disk_paths:
      - /opt/llama.cpp
      - /var/lib/docker
  register: jetson_facts_result

- name: Store them for the preflight assertions
  ansible.builtin.set_fact:
    jetson_preflight_facts: "{{ jetson_facts_result.jetson }}"

- name: Require L4T R36 on an Orin NX 16GB
  ansible.builtin.assert:
    that:
      - jetson_preflight_facts.is_jetson
      - jetson_preflight_facts.l4t.major == 36
      - jetson_preflight_facts.module == 'p3767-0000'
"""

RETURN = r"""
jetson:
  description: Facts about the board.
  returned: always
  type: dict
  contains:
    is_jetson:
      description:
        - True when the release file parsed, C(nvidia-l4t-core) is installed or the device tree
          has a tegra SoC compatible.
      type: bool
      sample: true
    architecture:
      description: Machine architecture (C(platform.machine())).
      type: str
      sample: aarch64
    model:
      description: Device tree model string.
      type: str
      sample: NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super
    compatible:
      description: Device tree compatible strings.
      type: list
      elements: str
      sample: ["nvidia,p3768-0000+p3767-0000-super", "nvidia,p3767-0000", "nvidia,tegra234"]
    module:
      description: Module part number.
      type: str
      sample: p3767-0000
    module_name:
      description: Marketing name of the module, null when the part number is unknown.
      type: str
      sample: Orin NX 16GB
    carrier:
      description: Carrier board part number.
      type: str
      sample: p3768-0000
    super:
      description: True when the super device tree is booted.
      type: bool
      sample: true
    soc:
      description: SoC compatible.
      type: str
      sample: tegra234
    l4t:
      description:
        - L4T release, null when neither the release file nor the package gives one.
        - Keys C(version), C(major), C(minor), C(patch), C(gcid), C(board), C(eabi), C(date), C(source)
          (C(nv_tegra_release) or C(dpkg)); with C(source=dpkg) C(package_version) is added and the
          release file keys are null.
      type: dict
      sample: {"version": "36.4.3", "major": 36, "minor": 4, "patch": 3, "gcid": "38968081",
               "board": "generic", "eabi": "aarch64", "date": "Wed Jan  8 01:49:37 UTC 2025",
               "source": "nv_tegra_release"}
    jetpack:
      description: JetPack release matching the L4T version, null when unknown.
      type: str
      sample: "6.2"
    cuda:
      description: CUDA toolkit version from C(cuda_dir), null when not installed.
      type: str
      sample: 12.6.68
    cuda_driver:
      description:
        - Highest CUDA C(major.minor) the L4T release's driver runs (36.4 and 36.5 - 12.6, 36.3 - 12.2, R35 - 11.4),
          null when the release is unknown. Jetson has no CUDA minor-version compatibility.
      type: str
      sample: "12.6"
    nvpmodel:
      description:
        - Parsed nvpmodel configuration, null when missing or unparsable.
        - C(modes) is a list of C(id), C(name), C(cpu_online) and C(settings) (PARAM -> ARG -> value strings);
          C(default) is the PM_CONFIG default ID; C(conf_path) is the file after resolving symlinks;
          C(tables) lists the C(*.conf) files next to it (the tables the board could use).
      type: dict
      sample: {"modes": [{"id": 0, "name": "MAXN_SUPER", "cpu_online": 8, "settings": {}}],
               "default": 2, "conf_path": /etc/nvpmodel/nvpmodel_p3767_0000_super.conf,
               "tables": [/etc/nvpmodel/nvpmodel_p3767_0000.conf, /etc/nvpmodel/nvpmodel_p3767_0000_super.conf]}
    memtotal_mb:
      description: Total memory in MiB (an Orin NX 16GB on JetPack 6 reports 15656).
      type: int
      sample: 15656
    disk_free_mb:
      description: Free MiB (for unprivileged users) per requested path.
      type: dict
      sample: {"/opt/llama.cpp": 40210}
    disk_checked_path:
      description: The existing path actually measured for each requested path.
      type: dict
      sample: {"/opt/llama.cpp": /opt}
    docker:
      description: Docker setup.
      type: dict
      contains:
        present:
          description: C(docker) is on PATH.
          type: bool
        runtimes:
          description: Runtime names from C(/etc/docker/daemon.json).
          type: list
          elements: str
          sample: ["nvidia"]
        default_runtime:
          description: C(default-runtime) from C(/etc/docker/daemon.json).
          type: str
          sample: nvidia
        nvidia_ctk:
          description: C(nvidia-ctk) is on PATH.
          type: bool
        data_root:
          description: Docker's data root (where images and containers go).
          type: str
          sample: /mnt/ssd/docker
        data_root_source:
          description: Where RV(jetson.docker.data_root) came from, V(docker info), V(daemon.json) or V(default).
          type: str
          sample: docker info
"""


import os
import platform
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.jetson_llm.fleet.plugins.module_utils.jetson import (
    DOCKER_DEFAULT_ROOT,
    cuda_driver_for_l4t,
    identify_module,
    jetpack_for_l4t,
    parse_cuda_version,
    parse_docker_daemon_json,
    parse_dt_strings,
    parse_l4t_dpkg_version,
    parse_meminfo_total_mb,
    parse_nv_tegra_release,
    parse_nvpmodel_conf,
)

MEMINFO = "/proc/meminfo"
MIB = 1024 * 1024


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def read_text(path: str) -> str | None:
    data = read_bytes(path)
    return data.decode("utf-8", errors="replace") if data is not None else None


def l4t_from_dpkg(module: AnsibleModule) -> dict[str, Any] | None:
    dpkg_query = module.get_bin_path("dpkg-query")
    if not dpkg_query:
        return None
    rc, out, _err = module.run_command([dpkg_query, "-W", "-f=${Version}", "nvidia-l4t-core"])
    version = parse_l4t_dpkg_version(out) if rc == 0 else None
    if version is None:
        return None
    major, minor, patch = (int(part) for part in version.split("."))
    return {
        "version": version,
        "major": major,
        "minor": minor,
        "patch": patch,
        "gcid": None,
        "board": None,
        "eabi": None,
        "date": None,
        "source": "dpkg",
        "package_version": out.strip(),
    }


def gather_l4t(module: AnsibleModule, release_file: str) -> dict[str, Any] | None:
    parsed = parse_nv_tegra_release(read_text(release_file))
    if parsed is not None:
        parsed["source"] = "nv_tegra_release"
        return parsed
    return l4t_from_dpkg(module)


def gather_device_tree(device_tree_dir: str) -> dict[str, Any]:
    model_strings = parse_dt_strings(read_bytes(os.path.join(device_tree_dir, "model")))
    model = model_strings[0] if model_strings else None
    compatible = parse_dt_strings(read_bytes(os.path.join(device_tree_dir, "compatible")))
    facts: dict[str, Any] = {"model": model, "compatible": compatible}
    facts.update(identify_module(compatible, model))
    return facts


def gather_cuda(cuda_dir: str) -> str | None:
    return parse_cuda_version(
        read_text(os.path.join(cuda_dir, "version.json")),
        read_text(os.path.join(cuda_dir, "version.txt")),
    )


def gather_nvpmodel(module: AnsibleModule, conf_path: str) -> dict[str, Any] | None:
    text = read_text(conf_path)
    if text is None:
        return None
    try:
        conf = parse_nvpmodel_conf(text)
    except ValueError as exc:
        module.warn(f"cannot parse {conf_path}: {exc}")
        return None
    conf["conf_path"] = os.path.realpath(conf_path)
    folder = os.path.dirname(conf["conf_path"])
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(".conf"))
    except OSError:
        names = []
    conf["tables"] = [os.path.join(folder, name) for name in names]
    return conf


def nearest_existing(path: str) -> str:
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def redirect(path: str, docker_root: str, data_root: str) -> str:
    """``path`` with the ``docker_root`` prefix replaced by Docker's real data root."""
    alias, real = os.path.abspath(docker_root), os.path.abspath(data_root)
    current = os.path.abspath(path)
    if current == alias:
        return real
    if current.startswith(alias + os.sep):
        return real + current[len(alias) :]
    return current


def gather_disks(paths: list[str], docker_root: str, data_root: str) -> tuple[dict[str, int | None], dict[str, str]]:
    free: dict[str, int | None] = {}
    checked: dict[str, str] = {}
    for path in paths:
        existing = nearest_existing(redirect(path, docker_root, data_root))
        checked[path] = existing
        try:
            stat = os.statvfs(existing)
        except OSError:
            free[path] = None
            continue
        free[path] = stat.f_bavail * stat.f_frsize // MIB
    return free, checked


def docker_data_root(module: AnsibleModule, docker: str | None, daemon_json: str | None) -> tuple[str, str]:
    """(data root, source): the running daemon's, else daemon.json's data-root, else the default."""
    if docker:
        rc, out, _err = module.run_command([docker, "info", "--format", "{{.DockerRootDir}}"])
        root = out.strip()
        if rc == 0 and root.startswith("/"):
            return root, "docker info"
    configured = parse_docker_daemon_json(daemon_json)["data_root"]
    if configured:
        return configured, "daemon.json"
    return DOCKER_DEFAULT_ROOT, "default"


def gather_docker(module: AnsibleModule, daemon_json_path: str) -> dict[str, Any]:
    text = read_text(daemon_json_path)
    daemon = parse_docker_daemon_json(text)
    docker = module.get_bin_path("docker")
    root, source = docker_data_root(module, docker, text)
    return {
        "present": docker is not None,
        "runtimes": daemon["runtimes"],
        "default_runtime": daemon["default_runtime"],
        "nvidia_ctk": module.get_bin_path("nvidia-ctk") is not None,
        "data_root": root,
        "data_root_source": source,
    }


def gather(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    l4t = gather_l4t(module, params["release_file"])
    device_tree = gather_device_tree(params["device_tree_dir"])
    docker = gather_docker(module, params["docker_daemon_json"])
    disk_free, disk_checked = gather_disks(params["disk_paths"] or [], params["docker_root"], docker["data_root"])
    tegra = device_tree["soc"] is not None and str(device_tree["soc"]).startswith("tegra")
    facts: dict[str, Any] = {
        "is_jetson": l4t is not None or tegra,
        "architecture": platform.machine(),
        "l4t": l4t,
        "jetpack": jetpack_for_l4t(l4t["version"]) if l4t else None,
        "cuda": gather_cuda(params["cuda_dir"]),
        "cuda_driver": cuda_driver_for_l4t(l4t["version"]) if l4t else None,
        "nvpmodel": gather_nvpmodel(module, params["nvpmodel_conf"]),
        "memtotal_mb": parse_meminfo_total_mb(read_text(MEMINFO)),
        "disk_free_mb": disk_free,
        "disk_checked_path": disk_checked,
        "docker": docker,
    }
    facts.update(device_tree)
    return facts


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "release_file": {"type": "path", "default": "/etc/nv_tegra_release"},
            "device_tree_dir": {"type": "path", "default": "/proc/device-tree"},
            "cuda_dir": {"type": "path", "default": "/usr/local/cuda"},
            "nvpmodel_conf": {"type": "path", "default": "/etc/nvpmodel.conf"},
            "disk_paths": {"type": "list", "elements": "path", "default": []},
            "docker_root": {"type": "path", "default": "/var/lib/docker"},
            "docker_daemon_json": {"type": "path", "default": "/etc/docker/daemon.json"},
        },
        supports_check_mode=True,
    )
    module.exit_json(changed=False, jetson=gather(module))


if __name__ == "__main__":
    main()
