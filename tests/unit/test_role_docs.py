"""The README variable tables are generated from meta/argument_specs.yml (tests/tools/role_docs.py, `make docs`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "tools"))

import role_docs  # noqa: E402

SPEC = {
    "argument_specs": {
        "main": {
            "short_description": "A demo role",
            "options": {
                "demo_port": {"type": "int", "default": 8080, "description": "Listen port (C(--port))."},
                "demo_mode": {"type": "str", "default": "", "description": ["Mode, C(on|off).", "Empty = off."]},
                "demo_dirs": {
                    "type": "list",
                    "elements": "dict",
                    "default": [{"path": "/opt", "min_mb": 1}],
                    "description": "Directories checked; see O(demo_port).",
                    "options": {
                        "path": {"type": "path", "required": True, "description": "A directory."},
                        "min_mb": {"type": "int", "required": True, "description": "Free MiB."},
                    },
                },
            },
        }
    }
}


def make_repo(tmp: Path, readme: str) -> Path:
    (tmp / "roles/demo/meta").mkdir(parents=True)
    (tmp / "roles/demo/meta/argument_specs.yml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    (tmp / "README.md").write_text(readme)
    return tmp


def test_committed_readmes_match_argument_specs() -> None:
    stale = role_docs.stale(REPO)
    assert not stale, (
        f"README variable tables differ from meta/argument_specs.yml in {[str(p.relative_to(REPO)) for p in stale]}:"
        " run `make docs` and commit the READMEs"
    )


def test_every_role_readme_has_the_full_table() -> None:
    for role in sorted(p.parent.parent for p in (REPO / "roles").glob("*/meta/argument_specs.yml")):
        readme = role / "README.md"
        assert readme.is_file(), f"{role.name} has no README.md"
        assert f"<!-- BEGIN VARIABLES {role.name} -->" in readme.read_text(), f"{readme}: no full variable table"


def test_a_table_renders_name_default_and_description(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "intro\n<!-- BEGIN VARIABLES demo -->\nold rows\n<!-- END VARIABLES -->\nafter\n")

    (fresh,) = role_docs.stale(repo).values()

    assert fresh == (
        "intro\n<!-- BEGIN VARIABLES demo -->\n"
        "| variable | default | description |\n| --- | --- | --- |\n"
        "| `demo_port` | `8080` | Listen port (`--port`). |\n"
        '| `demo_mode` | `""` | Mode, `on\\|off`. Empty = off. |\n'
        "| `demo_dirs` | `[{path: /opt, min_mb: 1}]` | Directories checked; see `demo_port`. |\n"
        "| `demo_dirs[].path` | required | A directory. |\n"
        "| `demo_dirs[].min_mb` | required | Free MiB. |\n"
        "<!-- END VARIABLES -->\nafter\n"
    )


def test_a_marker_may_name_a_subset_in_its_order(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "<!-- BEGIN VARIABLES demo: demo_mode demo_port -->\n<!-- END VARIABLES -->\n")

    (fresh,) = role_docs.stale(repo).values()

    assert [line.split("|")[1].strip() for line in fresh.splitlines()[3:-1]] == ["`demo_mode`", "`demo_port`"]


def test_a_new_option_makes_the_readme_stale_until_rendered(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "<!-- BEGIN VARIABLES demo -->\n<!-- END VARIABLES -->\n")
    for path, text in role_docs.stale(repo).items():
        path.write_text(text)
    assert role_docs.stale(repo) == {}

    spec = yaml.safe_load((repo / "roles/demo/meta/argument_specs.yml").read_text())
    spec["argument_specs"]["main"]["options"]["demo_new"] = {"type": "bool", "default": True, "description": "New."}
    (repo / "roles/demo/meta/argument_specs.yml").write_text(yaml.safe_dump(spec, sort_keys=False))

    (fresh,) = role_docs.stale(repo).values()
    assert "| `demo_new` | `true` | New. |" in fresh


def test_an_unknown_variable_in_a_marker_names_file_and_variable(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "<!-- BEGIN VARIABLES demo: demo_port demo_gone -->\n<!-- END VARIABLES -->\n")

    with pytest.raises(role_docs.DocsError, match=r"README.md: demo has no variable demo_gone"):
        role_docs.stale(repo)


def test_check_mode_fails_and_says_run_make_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path, "<!-- BEGIN VARIABLES demo -->\n<!-- END VARIABLES -->\n")
    monkeypatch.setattr(role_docs, "REPO", repo)

    assert role_docs.main(["--check"]) == 1
    assert "README.md: variable tables differ from meta/argument_specs.yml; run `make docs`" in capsys.readouterr().err
    assert (repo / "README.md").read_text() == "<!-- BEGIN VARIABLES demo -->\n<!-- END VARIABLES -->\n"

    assert role_docs.main([]) == 0
    assert role_docs.main(["--check"]) == 0
