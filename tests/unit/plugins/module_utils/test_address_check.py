"""The pure helpers of chatmail.relay.address_check."""

from __future__ import annotations

import pytest
from ansible_collections.chatmail.relay.plugins.module_utils import address_check


def test_blocklist_names_reverse_ipv4_octets():
    assert address_check.blocklist_name("192.0.2.7", "zen.spamhaus.org") == (
        "7.2.0.192.zen.spamhaus.org."
    )


def test_blocklist_names_reverse_ipv6_nibbles():
    name = address_check.blocklist_name("2001:db8::1", "bl.example.")
    assert name.startswith("1.0.0.0.0.0.0.0.")
    assert name.endswith(".8.b.d.0.1.0.0.2.bl.example.")
    assert len(name.split(".")) == 32 + 3


@pytest.mark.parametrize(
    ("answers", "verdict"),
    [
        ([], "clean"),
        (["127.0.0.2"], "listed"),
        (["127.0.0.4", "127.0.0.10"], "listed"),
        (["127.255.255.254"], "refused"),
        (["192.0.2.1"], "clean"),
    ],
)
def test_blocklist_answers_are_read(answers, verdict):
    assert address_check.blocklist_verdict(answers) == verdict


def test_addresses_are_compressed_and_others_named():
    assert address_check.parse_address(" 2001:0db8::0001 ") == "2001:db8::1"
    with pytest.raises(ValueError, match=r"'relay\.test' is not an IP address"):
        address_check.parse_address("relay.test")


def test_names_compare_without_case_or_final_dot():
    assert address_check.same_name("Relay1.Test.", "relay1.test")
    assert not address_check.same_name("mail.relay1.test", "relay1.test")
