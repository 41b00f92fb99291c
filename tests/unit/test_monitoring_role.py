"""fleet_monitoring renders from an inventory: file_sd targets per host (one llama-server job per API key, the
key never in the targets), a Prometheus config promtool accepts, and the rules with `for:` overridden.

The role's templates and vars run through ansible-playbook on localhost (nothing installed, files in tmp_path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/fleet_monitoring"
BIN = Path(sys.executable).parent

PLAYBOOK = """
- hosts: monitoring
  gather_facts: false
  vars:
    role_path: {role}
  tasks:
    - ansible.builtin.include_vars: {role}/defaults/main.yml
    - ansible.builtin.include_vars: {role}/vars/main.yml
    - ansible.builtin.copy:
        content: "{{{{ _fleet_monitoring_node_sd | from_json | to_nice_json }}}}"
        dest: "{out}/node.json"
    - ansible.builtin.copy:
        content: "{{{{ {{'keys': _fleet_monitoring_keys | length}} | to_json }}}}"
        dest: "{out}/keys.json"
    - ansible.builtin.template:
        src: {role}/templates/prometheus.yml.j2
        dest: "{out}/prometheus.yml"
    - ansible.builtin.template:
        src: {role}/templates/rules.yml.j2
        dest: "{out}/{{{{ item | basename }}}}"
      with_fileglob: "{{{{ fleet_monitoring_rules_dir }}}}/*.yml"
"""


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    inventory = {
        "all": {
            "children": {
                "jetsons": {
                    "hosts": {
                        "jetson-1": {"ansible_host": "10.203.14.11"},
                        "jetson-2": {"ansible_host": "10.203.14.12", "llama_server_api_key": "sekrit-key"},
                        "jetson-3": {"ansible_host": "10.203.14.13", "llama_server_port": 8081},
                    }
                },
                "monitoring": {
                    "hosts": {
                        "mon": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                    }
                },
            }
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(role=ROLE, out=out))
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml"),
         "-e", json.dumps({"fleet_monitoring_alert_for": {"LlamaServerDown": "10s"}})],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_targets_config_and_rules(rendered: Path) -> None:
    node = json.loads((rendered / "node.json").read_text())
    assert node == [{"targets": [f"10.203.14.1{n}:9100"], "labels": {"instance": f"jetson-{n}"}} for n in (1, 2, 3)]
    assert json.loads((rendered / "keys.json").read_text()) == {"keys": 2}
    config_text = (rendered / "prometheus.yml").read_text()
    assert "sekrit-key" not in config_text
    config = yaml.safe_load(config_text)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"node", "llama_server_0", "llama_server_1"}
    assert "authorization" not in jobs["llama_server_0"]
    assert jobs["llama_server_1"]["authorization"]["credentials_file"].endswith("llama-server-1.key")
    assert all(j["relabel_configs"] == [{"target_label": "job", "replacement": "llama_server"}]
               for name, j in jobs.items() if name != "node")  # fmt: skip
    alerts = {
        rule["alert"]: rule
        for group in yaml.safe_load((rendered / "fleet-alerts.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert alerts["LlamaServerDown"]["for"] == "10s" and alerts["JetsonReleaseSkew"]["for"] == "30m"
    promtool = shutil.which("promtool")
    if promtool:
        proc = subprocess.run([promtool, "check", "rules", *map(str, rendered.glob("fleet-*.yml"))],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
