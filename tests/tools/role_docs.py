"""Render the variable tables of README.md and roles/*/README.md from each role's meta/argument_specs.yml.

argument_specs is the one description of a role's variables; a README holds a table of them between markers:

    <!-- BEGIN VARIABLES llama_server -->            every option of the role's main entry point
    <!-- BEGIN VARIABLES llama_server: llama_server_port llama_server_ctx_size -->   only these, in this order
    ...generated...
    <!-- END VARIABLES -->

`python tests/tools/role_docs.py` (`make docs`) rewrites the tables; `--check` only reports the stale files.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- BEGIN VARIABLES (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- END VARIABLES -->)", re.DOTALL)
# Ansible's documentation markup: C(code), V(value), O(option), E(env var), I(italic), B(bold), U(url), L(text,url)
MARKUP = [
    (re.compile(r"[CVOEM]\(([^)]*)\)"), r"`\1`"),
    (re.compile(r"I\(([^)]*)\)"), r"*\1*"),
    (re.compile(r"B\(([^)]*)\)"), r"**\1**"),
    (re.compile(r"U\(([^)]*)\)"), r"<\1>"),
    (re.compile(r"L\(([^,)]*),\s*([^)]*)\)"), r"[\1](\2)"),
]


class DocsError(Exception):
    """A README marker that cannot be rendered (unknown role or variable)."""


def options(role: str, roles_dir: Path) -> dict[str, Any]:
    path = roles_dir / role / "meta" / "argument_specs.yml"
    if not path.is_file():
        raise DocsError(f"no role {role!r} with meta/argument_specs.yml under {roles_dir}")
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    return dict(spec["argument_specs"]["main"].get("options") or {})


def cell(text: str) -> str:
    """One table cell: whitespace collapsed, pipes escaped (GFM splits cells on them even inside code)."""
    return " ".join(text.split()).replace("|", "\\|")


def code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def describe(description: str | list[str] | None) -> str:
    text = " ".join(description) if isinstance(description, list) else description or ""
    for pattern, replacement in MARKUP:
        text = pattern.sub(replacement, text)
    return cell(text)


def default(spec: dict[str, Any]) -> str:
    if "default" not in spec:
        return "required" if spec.get("required") else ""
    value = spec["default"]
    if isinstance(value, str):
        return code(cell(value)) if value.strip() else '`""`'
    flow = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return code(cell(flow.removesuffix("\n...").removesuffix("...").strip()))


def rows(name: str, spec: dict[str, Any]) -> list[str]:
    found = [f"| `{name}` | {default(spec)} | {describe(spec.get('description'))} |"]
    item = f"{name}[]" if spec.get("type") == "list" else name
    for sub, sub_spec in (spec.get("options") or {}).items():
        found += rows(f"{item}.{sub}", sub_spec)
    return found


def table(spec_line: str, roles_dir: Path) -> str:
    role, _, names = spec_line.partition(":")
    specs = options(role.strip(), roles_dir)
    wanted = names.split() or list(specs)
    unknown = [name for name in wanted if name not in specs]
    if unknown:
        raise DocsError(f"{role.strip()} has no variable {', '.join(unknown)} (meta/argument_specs.yml)")
    lines = ["| variable | default | description |", "| --- | --- | --- |"]
    for name in wanted:
        lines += rows(name, specs[name])
    return "\n".join(lines) + "\n"


def render(text: str, roles_dir: Path) -> str:
    """`text` with every marked table regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + table(m.group("spec"), roles_dir) + m.group(4), text)


def readmes(repo: Path) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "roles").glob("*/README.md"))]


def stale(repo: Path = REPO) -> dict[Path, str]:
    """README files whose tables differ from argument_specs, with their regenerated text."""
    found = {}
    for path in readmes(repo):
        text = path.read_text(encoding="utf-8")
        try:
            fresh = render(text, repo / "roles")
        except DocsError as error:
            raise DocsError(f"{path.relative_to(repo)}: {error}") from None
        if fresh != text:
            found[path] = fresh
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    args = parser.parse_args(argv)
    try:
        changes = stale(REPO)
    except DocsError as error:
        print(f"role_docs: {error}", file=sys.stderr)
        return 2
    for path, text in changes.items():
        name = path.relative_to(REPO)
        if args.check:
            print(f"{name}: variable tables differ from meta/argument_specs.yml; run `make docs`", file=sys.stderr)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"rewrote {name}")
    return 1 if args.check and changes else 0


if __name__ == "__main__":
    sys.exit(main())
