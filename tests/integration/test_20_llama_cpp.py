"""llama.cpp on a jetsim fleet: built once per fleet on the build host, shipped to every host, no rebuild
or transfer when nothing changed, one new build and a new tag when the flags change.

jetsim builds the CPU backend (no GPU) from the llama.cpp tree vendored in PyPI's llama-cpp-python sdist,
with local base images on the build host: the same role code path as a real fleet, other variables.
"""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import Fleet, command

pytestmark = pytest.mark.jetsim
IMAGE_REPO = "jetson-llm-fleet/llama-server"
BUILD = command("docker", "build")  # the compile, on the build host
PULL = command("docker", "pull")  # the image moved to a device (by digest, from the fleet registry)


def _images(fleet: Fleet, host: str) -> dict[str, str]:
    out = fleet.exec(host, "docker", "image", "ls", "--format", "{{.Tag}} {{.ID}}", IMAGE_REPO)
    return dict(line.split() for line in out.splitlines() if line.strip())


@pytest.fixture(scope="module")
def full_fleet(fleet: Fleet) -> Fleet:
    # test_10_site leaves jetson-3 as an R35 board: give the module a full fleet again.
    fleet.recreate("jetson-3", variant="orin-nx-16-super")
    return fleet


def test_one_build_for_the_fleet_and_every_host_has_the_image(full_fleet: Fleet) -> None:
    fleet = full_fleet
    result = fleet.playbook("site.yml", timing="site.yml with llama.cpp (build if not cached)")

    assert result.rc == 0, result.output[-6000:]
    built = {host for host, status in result.ran(BUILD).items() if status == "changed"}
    assert len(built) <= 1, f"compiled on {built}"
    tags = {host: _images(fleet, host) for host in fleet.hosts}
    assert all(tags.values()), tags
    # One image, same ID on every host; the controller cache holds it once.
    ids = {tuple(sorted(images.items())) for images in tags.values()}
    assert len(ids) == 1, tags
    # No image archive: the build host pushed to the fleet registry, the devices pulled by digest.
    assert not [e for e in result.events if e["action"].endswith(("fetch", "slurp")) and "image" in str(e["args"])]
    image = f"{IMAGE_REPO}:{next(iter(tags['jetson-2']))}"
    version = fleet.exec("jetson-2", "sh", "-c", f"docker run --rm --network=none {image} --version 2>&1")
    assert "version:" in version, version
    inspect = fleet.exec("jetson-2", "docker", "image", "inspect", "--format", "{{json .Config}}", image)
    config = json.loads(inspect)
    assert config["Labels"]["io.jetson-llm-fleet.backend"] == "cpu"
    assert config["User"] == "10001:10001"  # the server never runs as root
    # What build-llama.sh recorded: the backend, the cache in use, the pinned build number.
    recorded = fleet.exec(
        "jetson-2", "docker", "run", "--rm", "--network=none", "--entrypoint", "cat", image,
        "/usr/local/share/llama.cpp/build-config.txt", "/usr/local/share/llama.cpp/build-info.txt",
    )  # fmt: skip
    assert "backend: cpu" in recorded and "GGML_CUDA:BOOL=OFF" in recorded, recorded
    assert "GGML_CCACHE:BOOL=ON" in recorded and "(build 11312, commit 0c1e57098)" in recorded, recorded


def test_rerun_compiles_nothing_and_moves_nothing(fleet: Fleet) -> None:
    result = fleet.playbook("site.yml", timing="site.yml no-op with llama.cpp")

    assert result.rc == 0, result.output[-6000:]
    assert "changed" not in result.ran(BUILD).values()
    assert "changed" not in result.ran(PULL).values()
    assert result.changed() == {host: 0 for host in fleet.hosts}, result.output[-4000:]


def test_changed_flags_build_once_more_under_a_new_tag_and_keep_the_previous(fleet: Fleet) -> None:
    before = _images(fleet, "jetson-2")
    # A flag CMake ignores: a new flags digest (so a new tag, even when a previous session cached one) that
    # compiles the same objects, so the warm ccache on the build host serves them.
    flags = json.dumps({"llama_cpp_build_cmake_flags": [f"-DJETSIM_TEST_NONCE={uuid.uuid4().hex[:8]}"]})

    result = fleet.playbook("site.yml", "-e", flags, timing="site.yml after a flags change (warm ccache)")

    assert result.rc == 0, result.output[-6000:]
    assert list(result.ran(BUILD).values()).count("changed") == 1, result.ran(BUILD)
    assert {host for host, status in result.ran(PULL).items() if status == "changed"} >= {"jetson-2", "jetson-3"}
    for host in fleet.hosts:
        after = _images(fleet, host)
        assert len(after) == 2, f"{host}: {after}"  # the new release and the previous one
    assert set(before) < set(_images(fleet, "jetson-2"))
