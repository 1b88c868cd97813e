"""Facts about relay containers of the local test bed."""

from __future__ import annotations

import json
import os
import subprocess

import pytest


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
