"""TURN: credentials from IMAP METADATA, checked by coturn itself."""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest
from mailclient import imap_login
from metadata import get_metadata
from testbed import required_env

PEER_PORT = 3480


def server_entry(relay_ip: str, account: tuple[str, str], name: str) -> str | None:
    imap = imap_login(relay_ip, *account)
    try:
        return get_metadata(imap, "", f"/shared/vendor/deltachat/{name}")
    finally:
        imap.logout()


@pytest.fixture
def turn(relay_ip, account, domain):
    """(host, port, username, password) as a client gets them."""
    value = server_entry(relay_ip, account, "turn")
    assert value, "no TURN credentials in the server's metadata"
    host, port, username, password = value.split(":")
    assert host == domain
    return host, int(port), username, password


@pytest.fixture(scope="module")
def peer(host, relay_ip):
    """coturn's echoing test peer, on the relay's own address (allowed in this scenario)."""
    host.run_test(
        f"systemd-run --unit=turn-test-peer --collect turnutils_peer -L {relay_ip} -p {PEER_PORT}"
    )
    yield relay_ip
    host.run("systemctl stop turn-test-peer")


def allocate(host, relay_ip: str, username: str, password: str, peer: str, *flags: str) -> str:
    """Run coturn's test client against the relay; its output."""
    command = [
        "timeout", "20", "turnutils_uclient", *flags,
        "-u", username, "-w", password, "-e", peer, "-r", str(PEER_PORT),
        "-n", "3", "-m", "1", "-c", relay_ip,
    ]  # fmt: skip
    result = host.run(shlex.join(command))
    return result.stdout + result.stderr


def received(output: str) -> int:
    counts = [int(n) for n in re.findall(r"tot_recv_msgs=(\d+)", output)]
    return max(counts, default=0)


def test_credentials_follow_the_turn_rest_scheme(turn):
    _unused, port, username, password = turn
    assert port == 3478
    # The user name is the expiry time, five days ahead.
    assert abs(int(username) - (time.time() + 5 * 86400)) < 120
    assert re.fullmatch(r"[A-Za-z0-9+/]{27}=", password)


@pytest.mark.parametrize("transport", [[], ["-t"]], ids=["udp", "tcp"])
def test_coturn_relays_with_exactly_those_credentials(host, relay_ip, turn, peer, transport):
    _unused, _unused, username, password = turn
    output = allocate(host, relay_ip, username, password, peer, *transport)
    assert received(output) == 3, output


def test_wrong_credentials_are_refused(host, relay_ip, turn, peer):
    _unused, _unused, username, password = turn
    for user, secret in [(username, password[::-1]), (str(int(username) + 1), password)]:
        output = allocate(host, relay_ip, user, secret, peer)
        assert "Cannot complete Allocation" in output
        assert received(output) == 0


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "172.17.0.1", "192.168.1.1", "169.254.169.254"]
)
def test_peers_in_private_ranges_are_refused(host, relay_ip, turn, address):
    _unused, _unused, username, password = turn
    output = allocate(host, relay_ip, username, password, address)
    assert "403 (Forbidden IP)" in output
    assert received(output) == 0


def test_appversions_are_the_operators_document_on_one_line(relay_ip, account):
    configured = json.loads(required_env("CHATMAIL_APPVERSIONS", "the relay's appversions"))
    served = server_entry(relay_ip, account, "appversions")
    assert served == json.dumps(configured, separators=(",", ":"))


def test_other_server_entries(relay_ip, account):
    assert server_entry(relay_ip, account, "maxsmtprecipients") == "1000"
    assert server_entry(relay_ip, account, "irohrelay") is None
    assert server_entry(relay_ip, account, "no-such-entry") is None
