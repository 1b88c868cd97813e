"""Fixtures for black-box tests of one deployed relay container.

The relay under test is the container CHATMAIL_RELAY_CONTAINER, deployed for the
mail domain CHATMAIL_RELAY_DOMAIN (Molecule's verify step sets both). Tests reach it
over its address on the project's Docker network, as a client would, or look inside
with testinfra.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import testinfra
from mailclient import Gpg, imap_login, new_credentials
from testbed import container_address, required_env

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def container() -> str:
    return required_env("CHATMAIL_RELAY_CONTAINER", "the relay container under test")


@pytest.fixture(scope="session")
def host(container):
    return testinfra.get_host(f"docker://{container}")


@pytest.fixture(scope="session")
def relay_ip(container) -> str:
    return container_address(container)


@pytest.fixture(scope="session")
def domain() -> str:
    """The mail domain the relay was deployed for."""
    return required_env("CHATMAIL_RELAY_DOMAIN", "the relay's mail domain")


@pytest.fixture(scope="session")
def gpg(tmp_path_factory):
    return Gpg(tmp_path_factory.mktemp("gnupg"))


@pytest.fixture
def account(relay_ip, domain):
    """A fresh account: created by its first IMAP login."""
    address, password = new_credentials(domain)
    imap_login(relay_ip, address, password).logout()
    return address, password
