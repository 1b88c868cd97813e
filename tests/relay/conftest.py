"""Fixtures for black-box tests of one deployed relay container.

The relay under test is the container CHATMAIL_RELAY_CONTAINER, deployed for the
mail domain CHATMAIL_RELAY_DOMAIN (Molecule's verify step sets both). Tests reach it
over its address on the project's Docker network, as a client would, or look inside
with testinfra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra
from mailclient import Gpg, imap_login, new_credentials

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def container() -> str:
    name = os.environ.get("CHATMAIL_RELAY_CONTAINER")
    if not name:
        pytest.fail("CHATMAIL_RELAY_CONTAINER must name the relay container under test")
    return name


@pytest.fixture(scope="session")
def host(container):
    return testinfra.get_host(f"docker://{container}")


@pytest.fixture(scope="session")
def relay_ip(container) -> str:
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    addresses = [net["IPAddress"] for net in json.loads(out).values() if net.get("IPAddress")]
    assert addresses, f"container {container} has no IP address"
    return addresses[0]


@pytest.fixture(scope="session")
def domain() -> str:
    """The mail domain the relay was deployed for (CHATMAIL_RELAY_DOMAIN)."""
    name = os.environ.get("CHATMAIL_RELAY_DOMAIN")
    if not name:
        pytest.fail("CHATMAIL_RELAY_DOMAIN must name the relay's mail domain")
    return name


@pytest.fixture(scope="session")
def gpg(tmp_path_factory):
    return Gpg(tmp_path_factory.mktemp("gnupg"))


@pytest.fixture
def account(relay_ip, domain):
    """A fresh account: created by its first IMAP login."""
    address, password = new_credentials(domain)
    imap_login(relay_ip, address, password).logout()
    return address, password
