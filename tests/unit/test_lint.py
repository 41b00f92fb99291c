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
    """Python files under the collection plugins, tests/jetsim, tests/tools and jetson_fleet (the typed code)."""
    files = sorted((COLLECTION / "plugins").rglob("*.py")) + sorted((REPO / "tests" / "jetsim").glob("*.py"))
    files += sorted((REPO / "jetson_fleet").rglob("*.py"))
    files += sorted((REPO / "tests" / "tools").glob("*.py"))
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
