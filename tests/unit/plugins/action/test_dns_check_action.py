"""The action chatmail.relay.dns_check in a playbook, against an in-process DNS server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_collections.chatmail.relay.plugins.action.dns_check import ARGUMENT_SPEC
from ansible_collections.chatmail.relay.plugins.modules import dns_check as documentation
from ansible_collections.chatmail.relay.plugins.plugin_utils.dns_zone import zone_records
from dns_server import AuthoritativeServer

ROOT = Path(__file__).resolve().parents[4]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "NO_COLOR": "1"}
ZONE = "example.test."
RECORDS = zone_records(
    {"domain": "example.test", "ipv4": "127.0.0.1", "mta_sts_id": "1", "tls_mode": "self_signed"}
)
PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Check the records
      chatmail.relay.dns_check:
        records: "{{ records }}"
        nameservers: ["127.0.0.1"]
        port: "{{ port }}"
        timeout: 1
      register: result

    - name: Keep the result for the test
      ansible.builtin.copy:
        content: "{{ result | to_json }}"
        dest: "{{ result_file }}"
        mode: "0644"
"""


def served(records: list[dict]) -> dict[str, dict[str, list[str]]]:
    zone: dict[str, dict[str, list[str]]] = {ZONE: {"SOA": ["ns. host. 1 3600 600 86400 60"]}}
    for record in records:
        zone.setdefault(record["name"], {}).setdefault(record["type"], []).append(record["value"])
    return zone


def play(tmp_path: Path, served_records: list[dict], *options: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "check.yml"
    playbook.write_text(PLAYBOOK)
    with AuthoritativeServer(ZONE, served(served_records)) as server:
        extra = json.dumps(
            {"records": RECORDS, "port": server.port, "result_file": str(tmp_path / "result.json")}
        )
        return subprocess.run(
            [BIN / "ansible-playbook", "-i", "localhost,", "-e", extra, *options, playbook],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            check=False,
        )


def test_a_complete_zone_passes(tmp_path):
    result = play(tmp_path, RECORDS)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["changed"] is False
    assert report["nameservers"] == ["127.0.0.1"]
    assert len(report["ok"]) == len(RECORDS)
    assert report["missing"] == report["wrong"] == []


def test_a_missing_required_record_fails_the_task_naming_it_in_check_mode_too(tmp_path):
    served_records = [
        r for r in RECORDS if r["type"] != "MX" and not r["name"].startswith("_dmarc.")
    ]
    result = play(tmp_path, served_records, "--check")
    assert result.returncode == 2
    assert "required DNS records missing or wrong: example.test. MX (missing)" in result.stdout
    warnings = result.stdout + result.stderr
    assert (
        "recommended DNS records missing or wrong: _dmarc.example.test. TXT (missing)" in warnings
    )


def test_invalid_records_fail_naming_the_field(tmp_path):
    playbook = tmp_path / "check.yml"
    playbook.write_text(PLAYBOOK)
    extra = json.dumps({"records": [{"name": "a.", "type": "A", "value": "x"}], "port": 53})
    result = subprocess.run(
        [BIN / "ansible-playbook", "-i", "localhost,", "-e", extra, playbook],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "dns_check: records[0].value 'x' is not a valid A record" in result.stdout


def test_the_documented_options_are_the_accepted_ones():
    options = yaml.safe_load(documentation.DOCUMENTATION)["options"]
    assert sorted(options) == sorted(ARGUMENT_SPEC)
    for name, spec in ARGUMENT_SPEC.items():
        documented = options[name]
        for key in ("type", "elements", "default"):
            assert documented.get(key) == spec.get(key), (name, key)
        assert documented.get("required", False) == spec.get("required", False), name


@pytest.mark.parametrize("name", ["ok", "missing", "wrong", "nameservers", "msg"])
def test_every_result_key_is_documented(name):
    assert name in yaml.safe_load(documentation.RETURN)
