"""hf_model's derived values, rendered with Ansible's own templating: store paths, the sha256sum record,
the device download URL, what a rejected transfer removes and which stores are pruned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "hf_model"
A, B, C, D, E = (letter * 64 for letter in "abcde")
FILE = "Llama-3.2-3B-Instruct-Q4_K_M.gguf"


def trusted(value: Any) -> Any:
    """Role files are trusted templates; plain YAML loading does not mark them as such."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [trusted(item) for item in value]
    if isinstance(value, dict):
        return {key: trusted(item) for key, item in value.items()}
    return value


def prune_task_vars() -> dict[str, Any]:
    tasks = yaml.safe_load((ROLE / "tasks" / "configure.yml").read_text())
    task = next(task for task in tasks if task.get("name") == "Remove model stores beyond hf_model_keep")
    return dict(task["vars"])


def render(expression: str, **facts: Any) -> Any:
    artifact = {
        "sha256": A,
        "filename": FILE,
        "size": 2019377696,
        "repo_id": "bartowski/Llama-3.2-3B-Instruct-GGUF",
        "revision": "main",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "endpoint": "https://huggingface.co",
        "path": f"/home/ops/.cache/jetson-llm-fleet/models/{A}/{FILE}",
        "on_controller": True,
    }
    artifact.update(facts.pop("artifact", {}))
    variables = {
        **yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()),
        **yaml.safe_load((ROLE / "vars" / "main.yml").read_text()),
        **prune_task_vars(),
        "hostvars": {"localhost": {"hf_model_artifact": artifact}},
        "_hf_model_old_current": "",
        "_hf_model_old_previous": "",
        **facts,
    }
    templar = Templar(loader=DataLoader(), variables=trusted(variables))
    return templar.template(trust_as_template(expression))


def stores(*names: str) -> dict[str, list[dict[str, Any]]]:
    """find results, the first name the newest."""
    return {"files": [{"path": f"/opt/llm/models/{name}", "mtime": 1000.0 - index} for index, name in enumerate(names)]}


def test_store_layout_and_record() -> None:
    assert render("{{ _hf_model_store_path }}") == f"/opt/llm/models/{A}/{FILE}"
    assert render("{{ _hf_model_record_path }}") == f"/opt/llm/models/{A}/{FILE}.sha256"
    assert render("{{ _hf_model_record_line }}") == f"{A}  {FILE}"  # sha256sum -c format
    assert render("{{ _hf_model_link_target }}") == f"{A}/{FILE}"
    assert render("{{ _hf_model_current_link }}") == "/opt/llm/models/current.gguf"
    assert render("{{ _hf_model_size }}") == 2019377696
    nested = render("{{ _hf_model_record_line }}", artifact={"filename": f"Q4_K_M/{FILE}"})
    assert nested == f"{A}  {FILE}"  # the record sits next to the file


@pytest.mark.parametrize(
    ("facts", "url"),
    [
        ({}, f"https://huggingface.co/bartowski/Llama-3.2-3B-Instruct-GGUF/resolve/0123456789abcdef0123456789abcdef01234567/{FILE}"),
        ({"artifact": {"commit": None, "endpoint": "http://mirror.lan:8080/"}},
         f"http://mirror.lan:8080/bartowski/Llama-3.2-3B-Instruct-GGUF/resolve/main/{FILE}"),
        ({"hf_model_device_endpoint": "http://10.0.0.5/hf/", "artifact": {"filename": "dir/my model.gguf"}},
         "http://10.0.0.5/hf/bartowski/Llama-3.2-3B-Instruct-GGUF/resolve/0123456789abcdef0123456789abcdef01234567/dir/my%20model.gguf"),
    ],
    ids=["hub", "mirror-without-commit", "device-endpoint"],
)  # fmt: skip
def test_device_download_url(facts: dict[str, Any], url: str) -> None:
    assert render("{{ _hf_model_device_url }}", **facts) == url


def test_rejected_transfer_removes_the_directory_unless_a_link_points_into_it() -> None:
    assert render("{{ _hf_model_reject_path }}") == f"/opt/llm/models/{A}"
    linked = render("{{ _hf_model_reject_path }}", _hf_model_old_previous=f"{A}/{FILE}")
    assert linked == f"/opt/llm/models/{A}/{FILE}"


def test_stores_of_the_server_releases_are_never_pruned() -> None:
    # The server runs B (a canary rollback left it there) while the links moved on to A and C: B stays.
    result = render(
        "{{ _hf_model_prune }}",
        hf_model_keep=2,
        hf_model_keep_sha256=[B],
        _hf_model_old_current=f"{C}/{FILE}",
        _hf_model_old_previous=f"{B}/{FILE}",
        _hf_model_stores=stores(A, C, D, B),
    )
    assert result == [f"/opt/llm/models/{D}"]


@pytest.mark.parametrize(
    ("keep", "old_current", "old_previous", "found", "pruned"),
    [
        (2, "", "", [A], []),  # first deployment
        (2, f"{B}/{FILE}", "", [A, B], []),  # upgrade: B becomes previous
        (2, f"{B}/{FILE}", f"{C}/{FILE}", [A, B, C, D], [C, D]),  # C was previous: now older than keep
        (3, f"{B}/{FILE}", f"{C}/{FILE}", [A, B, C, D], [D]),
        (1, f"{B}/{FILE}", "", [A, B, C], [C]),  # the link targets are kept whatever hf_model_keep says
        (2, f"{A}/{FILE}", f"{C}/{FILE}", [E, A, B, C], [E, B]),  # no switch: current and previous stay
        (2, f"/opt/llm/models/{B}/{FILE}", "", [A, C, B], [C]),  # an absolute link target is understood
    ],
    ids=["first", "upgrade", "prune-two", "keep-three", "keep-one", "no-switch", "absolute-link"],
)
def test_prune(keep: int, old_current: str, old_previous: str, found: list[str], pruned: list[str]) -> None:
    result = render(
        "{{ _hf_model_prune }}",
        hf_model_keep=keep,
        _hf_model_old_current=old_current,
        _hf_model_old_previous=old_previous,
        _hf_model_stores=stores(*found),
    )
    assert result == [f"/opt/llm/models/{name}" for name in pruned]
