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
    # The operator's other web sites on port 443 and the front server (role nginx).
    (
        {"nginx_other_sites": [{"names": ["WWW.other.org"], "backend": "10.0.0.2:443"}]},
        "nginx_other_sites[0] (WWW.other.org): name 'WWW.other.org' is not a lower-case host name",
    ),
    (
        {"nginx_other_sites": [{"names": ["mta-sts.chat.example.org"], "backend": "web:443"}]},
        "name 'mta-sts.chat.example.org' is one of the relay's own names",
    ),
    (
        {"nginx_other_sites": [{"names": ["other.org"], "backend": "127.0.0.1:8443"}]},
        "backend '127.0.0.1:8443' is on loopback port 8443, which the relay uses",
    ),
    (
        {"nginx_other_sites": [{"names": ["other.org"], "backend": "web.other.org"}]},
        "nginx_other_sites[0] (other.org): backend 'web.other.org' is not host:port",
    ),
    (
        {"nginx_other_sites": [{"backend": "web:443"}]},
        "missing required arguments: names found in nginx_other_sites",
    ),
    (
        {"nginx_front": True, "nginx_other_sites": [{"names": ["o.org"], "backend": "w:443"}]},
        "nginx_front=true and nginx_other_sites are exclusive",
    ),
    ({"nginx_front": True, "nginx_front_https_port": 10993}, "nginx_front_https_port=10993"),
    ({"nginx_front": True, "nginx_front_address": "localhost"}, "nginx_front_address="),
    ({"chatmail_registration": "sometimes"}, "chatmail_registration"),
    ({"relay_services_invites_dir": "/srv/invites"}, "relay_services_invites_dir="),
    # A client drops the whole document for one wrong type: "12" is no integer.
    (
        {
            "relay_services_appversions": {
                "clients": [
                    {
                        "clientId": "deltachat",
                        "sources": [
                            {
                                "sourceId": "own",
                                "versionInteger": "12",
                                "versionString": "2.0",
                                "downloadUrl": "https://example.org/dc.apk",
                            }
                        ],
                    }
                ]
            }
        },
        "relay_services_appversions.clients[0].sources[0].versionInteger must be an integer,"
        " not a string '12'",
    ),
    (
        {"relay_services_appversions": {"client": []}},
        "relay_services_appversions.clients is missing",
    ),
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
