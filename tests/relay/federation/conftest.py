"""Fixtures of the federation tests: two relays and a classic mail server.

The scenario's verify step names the containers: CHATMAIL_RELAY_CONTAINER (relay1) and
CHATMAIL_PEER_CONTAINER (relay2), both deployed by site.yml, and CHATMAIL_CLASSIC_CONTAINER,
a plain Postfix with OpenDKIM for CHATMAIL_CLASSIC_DOMAIN. Every name resolves at the test
zones' nameserver, as the relays' own resolvers see it.
"""

from __future__ import annotations

import pytest
from servers import Server, server
from testbed import required_env as env


@pytest.fixture(scope="session")
def relay1(container, domain) -> Server:
    return server(container, domain)


@pytest.fixture(scope="session")
def relay2() -> Server:
    return server(
        env("CHATMAIL_PEER_CONTAINER", "the second relay"),
        env("CHATMAIL_PEER_DOMAIN", "the second relay's domain"),
    )


@pytest.fixture(scope="session")
def classic() -> Server:
    return server(
        env("CHATMAIL_CLASSIC_CONTAINER", "the classic mail server"),
        env("CHATMAIL_CLASSIC_DOMAIN", "the classic mail server's domain"),
    )


@pytest.fixture(params=["relay1 to relay2", "relay2 to relay1"])
def direction(request, relay1, relay2) -> tuple[Server, Server]:
    """The sending and the receiving relay."""
    return (relay1, relay2) if request.param == "relay1 to relay2" else (relay2, relay1)
