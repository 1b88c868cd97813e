# SPDX-License-Identifier: MIT
"""The module chatmail.relay.address_check: PTR records and blocklist listings."""

from __future__ import annotations

DOCUMENTATION = r"""
module: address_check
author: chatmail.relay developers (@chatmail)
version_added: 0.2.0
short_description: Look up the PTR records and DNS blocklist listings of a relay's addresses
description:
  - For each address in O(addresses), looks up its PTR records and whether each PTR name
    resolves back to the address (forward-confirmed reverse DNS, which many mail servers
    demand of a sender), and compares the names with O(domain).
  - Asks each DNS blocklist zone in O(blocklists) whether it lists the address. An answer in
    127.0.0.0/8 means listed, no such name means not listed, and 127.255.255.252-255 means the
    blocklist refused the query (Spamhaus does so for queries from public resolvers).
  - Runs on the relay and asks its own resolver, as the mail servers it talks to would see it;
    needs the Python package dnspython there (Debian's C(python3-dnspython)).
  - Only reports; the caller decides what is a problem.
attributes:
  check_mode:
    support: full
    details: It only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  addresses:
    description: The relay's public IPv4 and IPv6 addresses.
    type: list
    elements: str
    required: true
  domain:
    description: The name each PTR record should hold.
    type: str
    required: true
  blocklists:
    description: DNS blocklist zones to ask, for example V(zen.spamhaus.org); none by default.
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds to wait for each lookup.
    type: float
    default: 5.0
"""

EXAMPLES = r"""
- name: Look up the relay's PTR records and blocklist listings
  chatmail.relay.address_check:
    addresses: [192.0.2.7, "2001:db8::7"]
    domain: chat.example.org
    blocklists: [zen.spamhaus.org, bl.spamcop.net]
  register: relay_addresses
"""

RETURN = r"""
ptr:
  description: One entry per address.
  returned: success
  type: list
  elements: dict
  contains:
    address:
      description: The address.
      type: str
      sample: 192.0.2.7
    names:
      description: The names of its PTR records, without the final dot.
      type: list
      elements: str
      sample: [chat.example.org]
    confirmed:
      description: The names among them that resolve back to the address.
      type: list
      elements: str
      sample: [chat.example.org]
    matches:
      description: Whether O(domain) is a PTR name of the address that resolves back to it.
      type: bool
    error:
      description: Why the lookup gave no answer; empty when it did.
      type: str
      sample: ""
blocklists:
  description: One entry per address and blocklist zone.
  returned: success
  type: list
  elements: dict
  contains:
    address:
      description: The address.
      type: str
    zone:
      description: The blocklist zone.
      type: str
      sample: zen.spamhaus.org
    status:
      description: V(listed), V(clean), V(refused) (the blocklist would not answer) or V(error).
      type: str
      sample: clean
    detail:
      description: The blocklist's TXT reason when listed, the error otherwise; may be empty.
      type: str
"""

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.chatmail.relay.plugins.module_utils import address_check

try:
    import dns.exception
    import dns.resolver
    import dns.reversename
except ImportError:
    DNS_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    DNS_IMPORT_ERROR = None


def _lookup(resolver: Any, name: Any, rdtype: str) -> list[str]:
    """The records of a name and type; none when the name or the type does not exist.

    A TXT record is the text of its strings, joined.
    """
    try:
        answer = resolver.resolve(name, rdtype)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    if rdtype == "TXT":
        return [b"".join(rdata.strings).decode(errors="replace") for rdata in answer]
    return [rdata.to_text() for rdata in answer]


def _ptr(resolver: Any, address: str, domain: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "address": address,
        "names": [],
        "confirmed": [],
        "matches": False,
        "error": "",
    }
    try:
        names = [
            name.rstrip(".")
            for name in _lookup(resolver, dns.reversename.from_address(address), "PTR")
        ]
        rdtype = "AAAA" if ":" in address else "A"
        confirmed = [
            name
            for name in names
            if address in map(address_check.parse_address, _lookup(resolver, name, rdtype))
        ]
    except dns.exception.DNSException as exc:
        entry["error"] = str(exc) or type(exc).__name__
        return entry
    entry.update(
        names=sorted(names),
        confirmed=sorted(confirmed),
        matches=any(address_check.same_name(name, domain) for name in confirmed),
    )
    return entry


def _blocklist(resolver: Any, address: str, zone: str) -> dict[str, Any]:
    entry = {"address": address, "zone": zone, "status": "clean", "detail": ""}
    name = address_check.blocklist_name(address, zone)
    try:
        status = address_check.blocklist_verdict(_lookup(resolver, name, "A"))
        reasons = _lookup(resolver, name, "TXT") if status == "listed" else []
    except dns.exception.DNSException as exc:
        entry.update(status="error", detail=str(exc) or type(exc).__name__)
        return entry
    entry.update(status=status, detail=" ".join(reasons))
    return entry


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "addresses": {"type": "list", "elements": "str", "required": True},
            "domain": {"type": "str", "required": True},
            "blocklists": {"type": "list", "elements": "str", "default": []},
            "timeout": {"type": "float", "default": 5.0},
        },
        supports_check_mode=True,
    )
    if DNS_IMPORT_ERROR:
        module.fail_json(
            msg=missing_required_lib("dnspython (Debian: python3-dnspython)"),
            exception=DNS_IMPORT_ERROR,
        )
    try:
        addresses = [address_check.parse_address(a) for a in module.params["addresses"]]
    except ValueError as exc:
        module.fail_json(msg=f"addresses: {exc}")
    resolver = dns.resolver.Resolver()
    resolver.lifetime = module.params["timeout"]
    module.exit_json(
        changed=False,
        ptr=[_ptr(resolver, address, module.params["domain"]) for address in addresses],
        blocklists=[
            _blocklist(resolver, address, zone)
            for address in addresses
            for zone in module.params["blocklists"]
        ],
    )


if __name__ == "__main__":
    main()
