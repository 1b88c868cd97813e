"""Fixtures for the push and TURN tests: the stand-in push gateway (molecule/calls)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import pytest
from mailclient import imap_login, new_credentials
from testbed import container_address

GATEWAY_PORT = 8000
# While this file exists in the gateway's container, its loop (molecule/calls
# prepare.yml) does not restart the server. Killing the container instead would
# lose its address to the next container on the network, while the relay's
# resolver still has the old one.
DOWN_MARKER = "/run/push-gateway-down"


class PushGateway:
    """The recording HTTP server that stands in for the phone vendors' gateway."""

    def __init__(self, container: str) -> None:
        self.container = container

    def _url(self, path: str) -> str:
        return f"http://{container_address(self.container)}:{GATEWAY_PORT}{path}"

    def requests(self) -> list[dict]:
        with urllib.request.urlopen(self._url("/requests"), timeout=5) as response:
            return json.load(response)

    def requests_for(self, token: str) -> list[dict]:
        return [request for request in self.requests() if request["body"] == token]

    def _inside(self, script: str) -> None:
        subprocess.run(
            ["docker", "exec", self.container, "sh", "-c", script], check=True, capture_output=True
        )

    def answer(self, status: int) -> None:
        """Answer later notifications with this HTTP status."""
        request = urllib.request.Request(
            self._url("/status"), data=str(status).encode(), method="PUT"
        )
        urllib.request.urlopen(request, timeout=5).close()

    def wait_for(self, token: str, count: int = 1, timeout: float = 10) -> list[dict]:
        """The gateway's records of the token, once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while len(found := self.requests_for(token)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway got {len(found)} of {count} requests in {timeout} s")
            time.sleep(0.05)
        return found

    def stop(self) -> None:
        """Down: nothing listens on the gateway's port (its container, and address, stay)."""
        # Anchored: the container's loop and this shell name the script too.
        self._inside(f"touch {DOWN_MARKER} && pkill -KILL -f '^python3 /srv/push_gateway.py'")

    def start(self) -> None:
        """Back (or still) up, answering."""
        self._inside(f"rm -f {DOWN_MARKER}")
        deadline = time.monotonic() + 30
        while True:
            try:
                self.requests()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture(scope="session")
def gateway() -> PushGateway:
    container = os.environ.get("CHATMAIL_PUSH_GATEWAY")
    if not container:
        pytest.fail("CHATMAIL_PUSH_GATEWAY must name the push gateway's container")
    return PushGateway(container)


@pytest.fixture
def answering(gateway):
    """The gateway answering 200, and again so after the test, whatever it changed."""
    gateway.answer(200)
    yield gateway
    gateway.start()
    gateway.answer(200)


@pytest.fixture
def sender(relay_ip, domain):
    address, password = new_credentials(domain)
    imap_login(relay_ip, address, password).logout()
    return address, password
