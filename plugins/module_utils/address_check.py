# SPDX-License-Identifier: MIT
"""How a relay's public addresses look to other mail servers: pure helpers.

The module chatmail.relay.address_check asks DNS; these functions build the names it
asks for and read the answers, without a network, so they test on their own.
"""

from __future__ import annotations

import ipaddress

# DNS blocklists answer a listed address with an A record in 127.0.0.0/8. Spamhaus
# answers 127.255.255.252-255 when it refuses the query (a public resolver, too many
# queries, a typo in the zone), which says nothing about the address.
LISTED_NETWORK = ipaddress.ip_network("127.0.0.0/8")
REFUSED_NETWORK = ipaddress.ip_network("127.255.255.252/30")


def parse_address(address: str) -> str:
    """The address in its compressed form; ValueError naming it when it is none."""
    try:
        return ipaddress.ip_address(address.strip()).compressed
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address") from None


def blocklist_name(address: str, zone: str) -> str:
    """The name that holds the listing of ``address`` in the blocklist ``zone``.

    IPv4 by reversed octets (192.0.2.7 → 7.2.0.192.<zone>), IPv6 by reversed nibbles.
    """
    ip = ipaddress.ip_address(address)
    labels = ip.reverse_pointer.split(".")[:-2]  # without in-addr.arpa / ip6.arpa
    return ".".join([*labels, zone.strip().rstrip(".")]) + "."


def blocklist_verdict(answers: list[str]) -> str:
    """``listed``, ``refused`` or ``clean`` for the A records a blocklist answered."""
    addresses = [ipaddress.ip_address(answer) for answer in answers]
    if any(a in REFUSED_NETWORK for a in addresses if a.version == 4):
        return "refused"
    if any(a in LISTED_NETWORK for a in addresses if a.version == 4):
        return "listed"
    return "clean"


def same_name(first: str, second: str) -> bool:
    """Whether two host names are equal: without regard to case or a final dot."""
    return first.rstrip(".").lower() == second.rstrip(".").lower()
