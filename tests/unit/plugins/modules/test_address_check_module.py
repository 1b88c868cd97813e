"""chatmail.relay.address_check's lookups, against a test nameserver."""

from __future__ import annotations

import sys
from pathlib import Path

import dns.resolver
import pytest
from ansible_collections.chatmail.relay.plugins.modules import address_check

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dns_server import AuthoritativeServer

RECORDS = {
    ".": {"SOA": [". hostmaster.test. 1 3600 600 86400 60"]},
    "7.2.0.192.in-addr.arpa.": {"PTR": ["relay.test."]},
    "relay.test.": {"A": ["192.0.2.7"]},
    "8.2.0.192.in-addr.arpa.": {"PTR": ["relay.test."]},  # relay.test is not 192.0.2.8
    "7.2.0.192.bl.test.": {"A": ["127.0.0.2"], "TXT": ['"spam seen"']},
    "7.2.0.192.refusing.test.": {"A": ["127.255.255.254"]},
}


@pytest.fixture
def resolver():
    with AuthoritativeServer(".", RECORDS) as server:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [server.address]
        resolver.port = server.port
        resolver.lifetime = 2
        yield resolver


def test_a_ptr_record_that_resolves_back_to_the_domain_matches(resolver):
    entry = address_check._ptr(resolver, "192.0.2.7", "Relay.test")
    assert entry == {
        "address": "192.0.2.7",
        "names": ["relay.test"],
        "confirmed": ["relay.test"],
        "matches": True,
        "error": "",
    }


def test_a_ptr_name_that_does_not_resolve_back_does_not_match(resolver):
    entry = address_check._ptr(resolver, "192.0.2.8", "relay.test")
    assert (entry["names"], entry["confirmed"], entry["matches"]) == (["relay.test"], [], False)


def test_no_ptr_record_does_not_match(resolver):
    assert address_check._ptr(resolver, "192.0.2.9", "relay.test")["names"] == []


@pytest.mark.parametrize(
    ("zone", "status", "detail"),
    [
        ("bl.test", "listed", "spam seen"),
        ("other.test", "clean", ""),
        ("refusing.test", "refused", ""),
    ],
)
def test_blocklists_are_read(resolver, zone, status, detail):
    entry = address_check._blocklist(resolver, "192.0.2.7", zone)
    assert (entry["status"], entry["detail"]) == (status, detail)
