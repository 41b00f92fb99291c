"""execution-environment.yml: `ansible-builder create` turns it into a build context (no image is built) that holds
the collection, the controller's Python requirements and the system packages, and whose collection requirement
installs the project's collection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "collections/ansible_collections/jetson_llm/fleet"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ee") / "context"
    subprocess.run(
        [str(BIN / "ansible-builder"), "create", "-f", str(REPO / "execution-environment.yml"), "-c", str(out),
         "--output-filename", "Containerfile"],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return out


def test_context_holds_the_collection(context: Path) -> None:
    copied = context / "_build/jetson_llm.fleet"
    galaxy = yaml.safe_load((copied / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == ("jetson_llm", "fleet")
    modules = {path.name for path in (COLLECTION / "plugins/modules").glob("*.py")}
    assert modules and modules == {path.name for path in (copied / "plugins/modules").glob("*.py")}


def test_context_holds_the_python_requirements_and_system_packages(context: Path) -> None:
    assert (context / "_build/requirements.txt").read_text() == (REPO / "requirements.txt").read_text()
    bindep = (context / "_build/bindep.txt").read_text()
    assert bindep == (REPO / "bindep.txt").read_text()
    packages = [line.split()[0] for line in bindep.splitlines() if line.strip() and not line.startswith("#")]
    assert {"openssh-clients", "openssh-client"} <= set(packages)  # the ssh client, on rpm and on dpkg bases


def test_base_image_is_a_build_argument_and_ansible_core_is_the_projects_pin(context: Path) -> None:
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in containerfile
    assert "FROM $EE_BASE_IMAGE AS base" in containerfile
    pin = next(
        line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("ansible-core==")
    )
    assert f"{pin} " in containerfile or f'{pin}"' in containerfile  # ANSIBLE_INSTALL_REFS


def test_the_galaxy_requirement_installs_the_collection_from_the_context(context: Path, tmp_path: Path) -> None:
    build = context / "_build"  # the galaxy stage's WORKDIR /build
    subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "--force", "-r", "requirements.yml",
         "-p", str(tmp_path)],
        cwd=build, check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    manifest = json.loads((tmp_path / "ansible_collections/jetson_llm/fleet/MANIFEST.json").read_text())
    assert manifest["collection_info"]["name"] == "fleet"
    installed = tmp_path / "ansible_collections/jetson_llm/fleet/plugins/modules"
    assert {p.name for p in installed.glob("*.py")} == {p.name for p in (COLLECTION / "plugins/modules").glob("*.py")}
