"""ansible-doc prints the documentation of every plugin, examples included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("plugin_type", "name", "expected"),
    [
        ("filter", "chatmail.relay.zone_records", "chatmail.relay.zone_records }}"),
        ("filter", "chatmail.relay.zone_file", "chatmail.relay.zone_file }}"),
        ("filter", "chatmail.relay.other_sites_problems", "chatmail.relay.other_sites_problems("),
        ("lookup", "chatmail.relay.secret", "lookup('chatmail.relay.secret', 'turn'"),
        ("module", "chatmail.relay.dns_check", "chatmail.relay.dns_check:"),
        ("module", "chatmail.relay.address_check", "chatmail.relay.address_check:"),
        ("module", "chatmail.relay.status_report", "chatmail.relay.status_report:"),
    ],
)
def test_ansible_doc_prints_documentation_with_examples(plugin_type, name, expected):
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "NO_COLOR": "1"}
    result = subprocess.run(
        [BIN / "ansible-doc", "-t", plugin_type, name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "[WARNING]" not in result.stderr, result.stderr
    assert f"> {plugin_type.upper()} {name}" in result.stdout
    for section in ("OPTIONS", "EXAMPLES:", "RETURN VALUES:"):
        assert section in result.stdout, section
    assert expected in result.stdout.split("EXAMPLES:", 1)[1]
