"""Bad settings fail in playbooks/settings.yml, before any role changes a host.

The example inventory's hosts are never contacted: the checks run on the controller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def check_settings(*extra: dict) -> subprocess.CompletedProcess:
    argv = [Path(sys.executable).parent / "ansible-playbook", "-i", "inventories/example"]
    for variables in extra:
        argv += ["-e", json.dumps(variables)]
    return subprocess.run(
        [*argv, "playbooks/settings.yml"],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_example_inventory_passes():
    result = check_settings()
    assert result.returncode == 0, result.stdout[-3000:]
    assert "failed=0" in result.stdout


# Each bad setting and what the failure must say; tests/controller runs them on the
# newest ansible-core too.
BAD_SETTINGS = [
    ({"chatmail_domain": "Chat.Example.org"}, "is not a valid mail domain"),
    ({"chatmail_max_mailbox_size": "lots"}, "chatmail_max_mailbox_size="),
    ({"dovecot_source": "ppa"}, "dovecot_source"),
    ({"turn_min_port": "low"}, "turn_min_port"),
    ({"notifications_concurrency": [1]}, "notifications_concurrency"),
    ({"chatmail_new_account_port": "http"}, "chatmail_new_account_port"),
    ({"chatmail_tls_mode": "letsencrypt"}, "chatmail_tls_mode"),
]


@pytest.mark.parametrize(
    ("variables", "message"),
    BAD_SETTINGS,
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_a_bad_setting_fails_naming_it(variables, message):
    result = check_settings(variables)
    assert result.returncode != 0
    assert "fatal:" in result.stdout or "failed:" in result.stdout
    assert message in result.stdout, result.stdout[-3000:]
