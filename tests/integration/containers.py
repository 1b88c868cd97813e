"""Throwaway test-bed containers and playbook runs for the integration tests.

conftest.py makes the fixture available; test modules import the helpers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts" / "lib"))
import testbed  # noqa: E402  (scripts/lib is no package)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def wait_for_systemd(name: str, seconds: int = 60) -> None:
    """Until systemd in container NAME has booted (running, or degraded)."""
    for _unused in range(seconds):
        state = subprocess.run(["docker", "exec", name, "systemctl", "is-system-running"],
                               capture_output=True, text=True, check=False).stdout  # fmt: skip
        if state.strip() in ("running", "degraded"):
            return
        time.sleep(1)
    raise TimeoutError(f"systemd in {name} did not boot within {seconds} s: {state.strip()}")


@pytest.fixture
def systemd_container(request):
    """A fresh test-bed container (systemd running), named after the test module.

    Parametrized indirectly with a Debian release ("12", "13"), it is one of that release.
    """
    release = getattr(request, "param", None)
    name = "chatmail-test-" + request.module.__name__.removeprefix("test_").replace("_", "-")
    name += f"-debian{release}" if release else ""
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    docker("run", *testbed.docker_run_args(name, release))
    wait_for_systemd(name, 30)
    yield name
    docker("rm", "-f", name)


def run_playbook(
    host: str, playbook: str, settings: dict, *options: str
) -> subprocess.CompletedProcess:
    """tests/integration/playbooks/PLAYBOOK on the container HOST, with SETTINGS as extra vars
    and ansible-playbook's OPTIONS (e.g. --check).

    Every role depends on role chatmail, which needs the mail domain: a test relay's.
    """
    settings = {"chatmail_domain": testbed.relay_settings()["chatmail_domain"], **settings}
    return subprocess.run(
        [BIN / "ansible-playbook", "-i", f"{host},", "-c", "community.docker.docker",
         "-e", json.dumps(settings), *options, ROOT / "tests/integration/playbooks" / playbook],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "NO_COLOR": "1"},
    )  # fmt: skip
