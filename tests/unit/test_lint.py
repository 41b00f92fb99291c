"""Linters and syntax checks, one test each, run from the repository root.

Each test runs the tool exactly as `make lint` would and shows its output when it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COLLECTION = REPO / "collections" / "ansible_collections" / "jetson_llm" / "fleet"
PLAYBOOKS = [REPO / "site.yml", *sorted((REPO / "playbooks").glob("*.yml"))]


def tool(name: str) -> str:
    """The tool from this interpreter's environment (the venv), else from PATH."""
    candidate = BIN / name
    return str(candidate) if candidate.exists() else name


def run(*args: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        list(args),
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"$ {' '.join(args)}\nrc={proc.returncode}\n{proc.stdout}{proc.stderr}", pytrace=False)


def python_sources() -> list[str]:
    """Python files under the collection plugins, tests/jetsim, tests/tools, bench and jetson_fleet (the typed code)."""
    files = sorted((COLLECTION / "plugins").rglob("*.py")) + sorted((REPO / "tests" / "jetsim").glob("*.py"))
    files += sorted((REPO / "jetson_fleet").rglob("*.py"))
    files += sorted((REPO / "tests" / "tools").glob("*.py"))
    files += sorted((REPO / "bench").rglob("*.py"))
    return [str(path.relative_to(REPO)) for path in files]


def test_yamllint() -> None:
    run(tool("yamllint"), "--strict", ".")


def test_ansible_lint() -> None:
    run(tool("ansible-lint"), "--nocolor")


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda path: str(path.relative_to(REPO)))
def test_syntax_check(playbook: Path) -> None:
    run(tool("ansible-playbook"), "--syntax-check", str(playbook.relative_to(REPO)))


def test_ruff_check() -> None:
    run(tool("ruff"), "check", ".")


def test_ruff_format() -> None:
    run(tool("ruff"), "format", "--check", ".")


def test_mypy() -> None:
    sources = python_sources()
    if not sources:
        pytest.skip("no Python sources under the collection plugins or tests/jetsim yet")
    # MYPYPATH lets mypy resolve ansible_collections.jetson_llm.fleet imports to the local collection.
    run(tool("mypy"), *sources, env={"MYPYPATH": str(REPO / "collections")})


MODULES = sorted((COLLECTION / "plugins" / "modules").glob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.stem)
def test_module_documents_before_it_imports(module: Path) -> None:
    # ansible-test sanity (validate-modules) requires DOCUMENTATION, EXAMPLES and RETURN before any import but
    # `from __future__`: ansible-doc reads them without importing the module's dependencies.
    import ast

    body = ast.parse(module.read_text()).body
    order = [
        node.targets[0].id if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) else "import"
        for node in body
        if isinstance(node, ast.Assign | ast.Import)
        or (isinstance(node, ast.ImportFrom) and node.module != "__future__")
    ]
    assert order[:4] == ["DOCUMENTATION", "EXAMPLES", "RETURN", "import"], order[:4]


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.stem)
def test_module_documentation_renders(module: Path) -> None:
    run(
        tool("ansible-doc"),
        "--type",
        "module",
        f"jetson_llm.fleet.{module.stem}",
        env={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
    )


def test_ansible_test_sanity() -> None:
    # The community's own checks on the collection (validate-modules, pylint, pep8, import, ansible-doc, ...);
    # tests/tools/ansible_test_sanity.py says how it runs where only the package index is reachable.
    run(sys.executable, str(REPO / "tests" / "tools" / "ansible_test_sanity.py"))


def test_get_pip_stand_in_bootstraps_pip_with_the_callers_index_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ansible-test runs the saved get-pip in a new venv with HOME and PATH only: pip must install without a
    # download from ansible's CI host, and the venv's pip must still see the caller's PIP_CERT and index.
    import venv

    monkeypatch.syspath_prepend(str(REPO / "tests" / "tools"))
    import ansible_test_sanity as helper

    monkeypatch.setattr(helper, "CACHE", tmp_path / "cache")
    version = helper.pip_version()
    helper.ensure_get_pip(version, {"PIP_CERT": "/etc/example-ca.pem", "PIP_INDEX_URL": "https://mirror.invalid/s"})
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    python = str(target / "bin" / "python")
    stand_in = tmp_path / "cache" / f"get_pip_{version.replace('.', '_')}.py"
    clean_env = {"HOME": os.environ["HOME"], "PATH": os.environ["PATH"]}
    args = [python, str(stand_in), "--disable-pip-version-check", f"pip=={version}", "--no-setuptools", "--no-wheel"]
    subprocess.run(args, env=clean_env, check=True, capture_output=True)

    pip = subprocess.run([python, "-m", "pip", "--version"], env=clean_env, check=True, capture_output=True, text=True)
    assert pip.stdout.startswith(f"pip {version} "), pip.stdout
    config = subprocess.run(
        [python, "-m", "pip", "config", "list"], env=clean_env, check=True, capture_output=True, text=True
    ).stdout
    assert "global.cert='/etc/example-ca.pem'" in config, config
    assert "global.index-url='https://mirror.invalid/s'" in config, config
