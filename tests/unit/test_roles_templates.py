"""Role templates render as intended; task files use FQCNs and mark their commands' changes.

The unit template is rendered with plain Jinja2 set up like ansible.builtin.template (trim_blocks on,
trailing newline kept, undefined variables are errors) plus the Ansible filters it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from ansible.playbook.block import Block
from ansible.playbook.handler import Handler
from ansible.playbook.play import Play
from ansible.playbook.task import Task
from ansible.plugins.filter.core import to_bool

REPO = Path(__file__).resolve().parents[2]
CLOCKS_TEMPLATE = REPO / "roles" / "jetson_power" / "templates" / "jetson-clocks.service.j2"
NVPMODEL_DROPIN_TEMPLATE = REPO / "roles" / "jetson_power" / "templates" / "nvpmodel-jetson-clocks.conf.j2"
TASK_KEYWORDS = set(Task.fattributes) | set(Block.fattributes) | set(Handler.fattributes) | {"local_action"}
PLAY_TASK_LISTS = ("pre_tasks", "tasks", "post_tasks", "handlers")
TASK_FILES = sorted(
    [*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("roles/*/handlers/*.yml")],
)
PLAYBOOKS = [REPO / "site.yml", *sorted((REPO / "playbooks").glob("*.yml"))]


def render_clocks_unit(template: Path = CLOCKS_TEMPLATE, **overrides: Any) -> str:
    env = jinja2.Environment(
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters["bool"] = to_bool
    defaults = yaml.safe_load((REPO / "roles" / "jetson_power" / "defaults" / "main.yml").read_text())
    variables = {"ansible_managed": "Ansible managed", **defaults, **overrides}
    return env.from_string(template.read_text()).render(variables)


def unit_entries(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file, comments and section headers skipped."""
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(("#", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        entries.setdefault(key, []).append(value)
    return entries


@pytest.mark.parametrize(
    "fan_max",
    [False, True, "false", "true"],
    ids=["fan-auto", "fan-max", "extra-var-false", "extra-var-true"],
)
def test_clocks_unit(fan_max: bool | str) -> None:
    text = render_clocks_unit(jetson_power_clocks_fan_max=fan_max)
    fan_max = to_bool(fan_max)
    entries = unit_entries(text)
    # With the fan at full speed the unit runs after nvfancontrol, which would otherwise take the fan back.
    assert entries["After"] == ["nvpmodel.service", "nvfancontrol.service"] if fan_max else ["nvpmodel.service"]
    assert entries["Type"] == ["oneshot"]
    assert entries["RemainAfterExit"] == ["yes"]
    assert entries["WantedBy"] == ["multi-user.target"]
    if fan_max:
        assert entries["ExecStart"] == ["/usr/bin/jetson_clocks --fan"]
        assert entries["Environment"] == ["HOME=/root"]
    else:
        assert entries["ExecStart"] == ["/usr/bin/jetson_clocks"]
        assert "Environment" not in entries
        assert "HOME" not in text
    sections = [line for line in text.splitlines() if line.startswith("[")]
    assert sections == ["[Unit]", "[Service]", "[Install]"]
    assert "\n\n\n" not in text and text.endswith("\n")


@pytest.mark.parametrize("fan_max", [False, True], ids=["fan-auto", "fan-max"])
def test_nvpmodel_dropin_repins_after_every_nvpmodel_run(fan_max: bool) -> None:
    text = render_clocks_unit(NVPMODEL_DROPIN_TEMPLATE, jetson_power_clocks_fan_max=fan_max)
    entries = unit_entries(text)
    assert entries["ExecStartPost"] == ["/usr/bin/jetson_clocks --fan" if fan_max else "/usr/bin/jetson_clocks"]
    assert ("Environment" in entries) == fan_max
    assert [line for line in text.splitlines() if line.startswith("[")] == ["[Service]"]


def test_clocks_unit_binary_is_configurable() -> None:
    entries = unit_entries(render_clocks_unit(jetson_power_clocks_binary="/opt/bin/jetson_clocks"))
    assert entries["ExecStart"] == ["/opt/bin/jetson_clocks"]


def walk(tasks: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Every task (not block) in a task list, blocks flattened."""
    found: list[dict[str, Any]] = []
    for task in tasks or []:
        if "block" in task:
            for section in ("block", "rescue", "always"):
                found += walk(task.get(section))
        else:
            found.append(task)
    return found


def action_of(task: dict[str, Any]) -> str:
    actions = [key for key in task if key not in TASK_KEYWORDS and not key.startswith("with_")]
    assert len(actions) == 1, f"task {task.get('name')!r}: cannot tell its action from {sorted(task)}"
    return actions[0]


def all_tasks() -> list[tuple[str, dict[str, Any]]]:
    tasks = []
    for path in TASK_FILES:
        tasks += [(str(path.relative_to(REPO)), task) for task in walk(yaml.safe_load(path.read_text()))]
    for path in PLAYBOOKS:
        for play in yaml.safe_load(path.read_text()) or []:
            if any(key in play for key in ("import_playbook", "ansible.builtin.import_playbook")):
                continue
            assert set(play) <= set(Play.fattributes), f"{path}: unknown play keys"
            for section in PLAY_TASK_LISTS:
                tasks += [(str(path.relative_to(REPO)), task) for task in walk(play.get(section))]
    return tasks


TASKS = all_tasks()


def task_id(value: Any) -> str:
    return str(value.get("name")) if isinstance(value, dict) else str(value)


def test_task_files_found() -> None:
    assert TASK_FILES, "no role task files found"


@pytest.mark.parametrize(("where", "task"), TASKS, ids=task_id)
def test_task_uses_fqcn(where: str, task: dict[str, Any]) -> None:
    action = action_of(task)
    assert action.count(".") >= 2, f"{where}: task {task.get('name')!r} uses {action!r}, not a FQCN"
    assert task.get("name"), f"{where}: task using {action} has no name"


@pytest.mark.parametrize(("where", "task"), TASKS, ids=task_id)
def test_commands_declare_changes(where: str, task: dict[str, Any]) -> None:
    action = action_of(task)
    if action in {"ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.raw"}:
        assert "changed_when" in task, f"{where}: {action} task {task.get('name')!r} has no changed_when"
