"""Role interfaces: defaults/main.yml and meta/argument_specs.yml describe the same variables.

For every role under roles/:
- every variable in defaults/main.yml is an option of the `main` entry point, with the same default and a
  type that fits the value (list elements included), and every option has a default or is required;
- public variables start with `<role>_`, internal ones (vars/main.yml, register, set_fact) with `_<role>_`
  or `<role>_` (facts the role publishes);
- every option has a description and every variable in defaults/main.yml sits under a comment;
- meta/main.yml names the role and its platform (Ubuntu jammy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(path for path in (REPO / "roles").iterdir() if (path / "tasks" / "main.yml").is_file())
TYPE_CHECKS: dict[str, Any] = {
    "str": lambda v: isinstance(v, str),
    "path": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
    "raw": lambda v: True,
}

pytestmark = pytest.mark.parametrize("role", ROLES, ids=lambda path: path.name)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def defaults(role: Path) -> dict[str, Any]:
    return load(role / "defaults" / "main.yml") or {}


def options(role: Path) -> dict[str, Any]:
    spec = load(role / "meta" / "argument_specs.yml")
    return spec["argument_specs"]["main"].get("options") or {}


def type_errors(name: str, spec: dict[str, Any], value: Any) -> list[str]:
    """Why `value` does not fit the option `spec` (empty when it fits)."""
    kind = spec.get("type", "str")
    if kind not in TYPE_CHECKS:
        return [f"{name}: unknown type {kind!r}"]
    if value is None:
        return []
    if not TYPE_CHECKS[kind](value):
        return [f"{name}: default {value!r} is not of type {kind}"]
    errors: list[str] = []
    if kind == "list":
        elements = spec.get("elements")
        if elements is None:
            errors.append(f"{name}: list option without `elements`")
        else:
            for index, item in enumerate(value):
                element_spec = {"type": elements, "options": spec.get("options")}
                errors += type_errors(f"{name}[{index}]", element_spec, item)
    if kind == "dict" and spec.get("options"):
        for sub, sub_spec in spec["options"].items():
            if sub not in value:
                if sub_spec.get("required"):
                    errors.append(f"{name}: required key {sub!r} missing")
                continue
            errors += type_errors(f"{name}.{sub}", sub_spec, value[sub])
        errors += [f"{name}: key {key!r} is not in the spec" for key in value if key not in spec["options"]]
    return errors


def test_defaults_match_argument_specs(role: Path) -> None:
    values, specs = defaults(role), options(role)
    assert sorted(values) == sorted(specs), "defaults/main.yml and meta/argument_specs.yml differ"
    errors: list[str] = []
    for name, value in values.items():
        spec = specs[name]
        if "default" not in spec:
            errors.append(f"{name}: no default in meta/argument_specs.yml")
        elif spec["default"] != value:
            errors.append(f"{name}: default {spec['default']!r} != defaults/main.yml {value!r}")
        errors += type_errors(name, spec, value)
    assert not errors, "\n".join(errors)


def test_options_have_defaults_or_are_required(role: Path) -> None:
    values = defaults(role)
    missing = [name for name, spec in options(role).items() if not (name in values or spec.get("required"))]
    assert not missing, f"options with neither a default nor required: true: {missing}"


def test_public_variables_are_prefixed(role: Path) -> None:
    prefix = f"{role.name}_"
    names = set(defaults(role)) | set(options(role))
    assert not [name for name in names if not name.startswith(prefix)], f"not prefixed with {prefix}"


def test_internal_variables_are_prefixed(role: Path) -> None:
    allowed = (f"_{role.name}_", f"{role.name}_")
    names: list[str] = []
    vars_file = role / "vars" / "main.yml"
    if vars_file.is_file():
        internal = sorted(load(vars_file) or {})
        assert all(name.startswith(f"_{role.name}_") for name in internal), f"vars/main.yml: {internal}"
    for task_file in [*(role / "tasks").glob("*.yml"), *(role / "handlers").glob("*.yml")]:
        names += [name for task in walk_tasks(load(task_file) or []) for name in set_names(task)]
    # A fact named exactly like the role is its published interface (fleet_registry's `fleet_registry`).
    wrong = [name for name in names if not name.startswith(allowed) and name != role.name]
    assert not wrong, f"not prefixed with {allowed}: {wrong}"


def test_options_have_descriptions(role: Path) -> None:
    def undocumented(specs: dict[str, Any], parent: str = "") -> list[str]:
        names = []
        for name, spec in specs.items():
            description = spec.get("description")
            if not description or (isinstance(description, list) and not all(description)):
                names.append(parent + name)
            names += undocumented(spec.get("options") or {}, f"{parent}{name}.")
        return names

    assert not undocumented(options(role)), "options without a description"


def test_defaults_are_commented(role: Path) -> None:
    """Every paragraph (block of lines between blank lines) that sets a variable starts with a comment."""
    text = (role / "defaults" / "main.yml").read_text(encoding="utf-8")
    undocumented = []
    for paragraph in text.split("\n\n"):
        lines = [line for line in paragraph.splitlines() if line.strip() and line.strip() != "---"]
        keys = [line.split(":", 1)[0] for line in lines if line[:1].isalpha()]
        if keys and not lines[0].startswith("#"):
            undocumented += keys
    assert not undocumented, f"variables without a comment above them: {undocumented}"


def test_meta(role: Path) -> None:
    info = load(role / "meta" / "main.yml")["galaxy_info"]
    assert info["role_name"] == role.name
    assert info.get("description") and info.get("license") and info.get("min_ansible_version")
    assert {"name": "Ubuntu", "versions": ["jammy"]} in info["platforms"]


def walk_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every task, blocks flattened (the block itself included)."""
    found = []
    for task in tasks:
        found.append(task)
        for section in ("block", "rescue", "always"):
            found += walk_tasks(task.get(section) or [])
    return found


def set_names(task: dict[str, Any]) -> list[str]:
    """Variables a task defines: its register and the keys of set_fact."""
    names = [task["register"]] if "register" in task else []
    for action in ("ansible.builtin.set_fact", "set_fact"):
        if isinstance(task.get(action), dict):
            names += [key for key in task[action] if key not in ("cacheable",)]
    return names
