"""Facts about relay containers of the local test bed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def required_env(name: str, meaning: str) -> str:
    """The value of an environment variable the scenario's verify step sets; a missing
    one fails the test, saying what it should name."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} must name {meaning}")
    return value


def container_address(name: str) -> str:
    """The container's IP address on its (first) Docker network."""
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    addresses = [net["IPAddress"] for net in json.loads(out).values() if net.get("IPAddress")]
    if not addresses:
        raise LookupError(f"container {name} has no IP address")
    return addresses[0]


def playbook(
    name: str, extra_vars: dict, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run playbooks/<name>.yml on the scenario's inventory, as an operator would;
    args go to ansible-playbook as they are (e.g. --limit, --tags)."""
    inventory = required_env("MOLECULE_INVENTORY_FILE", "the scenario's inventory")
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            inventory,
            "-e",
            json.dumps(extra_vars),
            *args,
            str(ROOT / "playbooks" / f"{name}.yml"),
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def client_address(relay_ip: str) -> str:
    """This test runner's address, as the relay at relay_ip sees it."""
    route = subprocess.run(
        ["ip", "-o", "route", "get", relay_ip], check=True, capture_output=True, text=True
    ).stdout
    [source] = re.findall(r"\bsrc (\S+)", route)
    return source
