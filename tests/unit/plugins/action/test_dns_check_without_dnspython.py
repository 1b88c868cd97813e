"""Without dnspython on the controller, chatmail.relay.dns_check says what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
BIN = Path(sys.executable).parent
MESSAGE = (
    "chatmail.relay.dns_check needs the Python package dnspython on the controller:"
    " pip install dnspython"
)
# Python skips a module that sys.modules maps to None: `import dns` fails as if
# dnspython were not installed, in this process only.
WITHOUT_DNS = "import sys; sys.modules['dns'] = None"
IMPORT_ACTION = f"""
{WITHOUT_DNS}
from ansible.plugins.loader import init_plugin_loader

init_plugin_loader([{str(ROOT / ".collections")!r}])
import ansible_collections.chatmail.relay.plugins.action.dns_check
print("imported")
"""
PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check a record
      chatmail.relay.dns_check:
        records: [{name: relay.example.test., type: A, value: 127.0.0.1}]
        nameservers: ["127.0.0.1"]
"""


def test_the_action_imports_without_it():
    """As Ansible's plugins must (ansible-test sanity's import test): it fails when run."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ACTION], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_a_playbook_fails_with_that_message_and_no_traceback(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(WITHOUT_DNS + "\n")
    playbook = tmp_path / "check.yml"
    playbook.write_text(PLAYBOOK)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "NO_COLOR": "1",
        # Python imports sitecustomize from the path at start-up, before Ansible runs.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [BIN / "ansible-playbook", "-i", "localhost,", playbook],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"[ERROR]: Task failed: {MESSAGE}" in output
    assert "Traceback" not in output
    assert "No module named" not in output
