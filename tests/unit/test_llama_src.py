"""The llama.cpp source mirror made from llama-cpp-python's sdist (tests/fixtures/llama_src.py).

The first run downloads the 73 MB sdist from PyPI and takes about 30 s; later runs reuse
~/.cache/jetson-llm-fleet/llama-src (or $LLAMA_SRC_CACHE_DIR).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests/fixtures"))

import llama_src  # noqa: E402

RECIPE = REPO / "roles/llama_cpp_build/files/build-llama.sh"  # the CMake options of the build
UPSTREAM = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def mirror() -> llama_src.Mirror:
    cache = Path(os.environ.get("LLAMA_SRC_CACHE_DIR") or llama_src.DEFAULT_CACHE)
    return llama_src.ensure_llama_cpp_mirror(cache)


def test_mirror_is_the_upstream_commit_under_its_tag(mirror: llama_src.Mirror) -> None:
    assert mirror.tag == "b11312"  # the upstream release of commit 0c1e57098
    assert mirror.build_number == 11312
    assert mirror.commit == UPSTREAM and mirror.upstream_commit == UPSTREAM and not mirror.synthetic
    assert git(mirror.repo, "rev-parse", f"{mirror.tag}^{{commit}}") == mirror.commit
    assert git(mirror.repo, "rev-parse", "HEAD") == mirror.commit
    assert git(mirror.repo, "log", "-1", "--format=%s", mirror.tag) == "webgpu: fix SSM_SCAN binding aliasing (#29750)"


def test_mirror_tree_has_what_the_role_builds(mirror: llama_src.Mirror) -> None:
    top = set(git(mirror.repo, "ls-tree", "--name-only", mirror.tag).splitlines())
    assert {"CMakeLists.txt", "ggml", "tools", "common", "src", "cmake"} <= top
    tools = set(git(mirror.repo, "ls-tree", "--name-only", f"{mirror.tag}:tools").splitlines())
    assert {"server", "llama-bench"} <= tools
    assert "ggml-cuda" in git(mirror.repo, "ls-tree", "--name-only", f"{mirror.tag}:ggml/src").splitlines()


def test_mirror_clones_like_a_remote(mirror: llama_src.Mirror, tmp_path: Path) -> None:
    clone = llama_src.checkout(mirror, tmp_path / "llama.cpp")
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert head.stdout.strip() == mirror.commit
    assert (clone / "tools/server/server.cpp").is_file()
    assert (clone / "cmake/build-info.cmake").is_file()


def test_mirror_is_cached(mirror: llama_src.Mirror) -> None:
    assert llama_src.ensure_llama_cpp_mirror(mirror.repo.parent) == mirror


def test_recipe_cmake_options_exist_in_the_pinned_tree(mirror: llama_src.Mirror) -> None:
    """Every -D option build-llama.sh passes is one this llama.cpp defines (names change between versions)."""
    code = "\n".join(line for line in RECIPE.read_text().splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"-D([A-Z][A-Z0-9_]+)=", code))
    assert {"GGML_CUDA", "GGML_CCACHE", "LLAMA_OPENSSL", "LLAMA_USE_PREBUILT_UI", "LLAMA_BUILD_NUMBER"} <= used
    cmake_text = "\n".join(
        git(mirror.repo, "show", f"{mirror.tag}:{path}")
        for path in ("CMakeLists.txt", "ggml/CMakeLists.txt", "tools/ui/CMakeLists.txt")
    )
    builtin = {"CMAKE_BUILD_TYPE", "CMAKE_CUDA_ARCHITECTURES", "BUILD_SHARED_LIBS"}
    missing = {
        name for name in used - builtin if not re.search(rf"(option|set)\s*\(\s*{name}\b|DEFINED {name}\b", cmake_text)
    }
    assert not missing, f"build-llama.sh passes CMake options this llama.cpp does not define: {sorted(missing)}"
    assert "LLAMA_CURL" not in used  # removed upstream (only a deprecation warning remains)


def test_changelog_names_the_vendored_commit() -> None:
    changelog = (
        "## [Unreleased]\n\n## [0.3.36]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@0c1e57098\n\n"
        "## [0.3.35]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@4df29be4f\n"
    )
    assert llama_src.upstream_commit_from_changelog(changelog) == "0c1e57098"
    assert llama_src.upstream_commit_from_changelog(changelog, "0.3.35") == "4df29be4f"
    with pytest.raises(llama_src.LlamaSourceError):
        llama_src.upstream_commit_from_changelog(changelog, "0.3.99")


def _fake_sdist_top(root: Path) -> Path:
    top = root / f"llama_cpp_python-{llama_src.VERSION}"
    (top / "vendor/llama.cpp/tools/server").mkdir(parents=True)
    (top / "CHANGELOG.md").write_text(f"## [{llama_src.VERSION}]\n\n- update llama.cpp to ggml-org/llama.cpp@abcdef1\n")
    (top / "vendor/llama.cpp/CMakeLists.txt").write_text("project(llama.cpp)\n")
    (top / "vendor/llama.cpp/tools/server/server.cpp").write_text("int main() {}\n")
    return top


def test_without_upstream_git_data_the_commit_is_synthetic_and_reproducible(tmp_path: Path) -> None:
    commits = []
    for attempt in ("a", "b"):
        top = _fake_sdist_top(tmp_path / attempt)
        commit, upstream, synthetic = llama_src._make_repo(top, tmp_path / attempt / "repo.git")
        assert synthetic and upstream == "abcdef1"
        assert git(tmp_path / attempt / "repo.git", "rev-parse", f"{llama_src.TAG}^{{commit}}") == commit
        commits.append(commit)
    assert commits[0] == commits[1]
