# SPDX-License-Identifier: MIT
"""Documentation of chatmail.relay.dns_check; the action plugin of that name does the work."""

from __future__ import annotations

DOCUMENTATION = r"""
module: dns_check
author: chatmail.relay developers (@chatmail)
version_added: 0.1.0
short_description: Check that DNS serves a relay's records
description:
  - Asks nameservers for every record in O(records) and reports each as ok, missing or wrong.
    Fails when a required record is missing or wrong; a recommended one only warns.
  - By default it asks the authoritative nameservers of the zone directly, so it sees a change
    as soon as they serve it, without waiting for caches. It finds them with the controller's
    system resolver (the zone's SOA and NS records and the addresses of the NS targets).
  - "Values are compared by meaning, not by text: names case-insensitively (also inside MX,
    SRV and CNAME data); TXT records by the concatenation of their strings, so a DKIM key
    split differently still matches; CAA records by flags, tag and, for C(issue), the issuer
    domain without regard to case; addresses in any notation."
  - A record is ok when every nameserver serves its value. It is missing when a nameserver has
    no record of that name and type, and wrong when a nameserver has records of that name and
    type but not this value. For A, AAAA and CNAME the answer may hold no further values, since
    a stale address would send part of the traffic elsewhere; other types may (a TXT record
    beside the SPF record, a second MX).
  - A nameserver that cannot be reached, refuses the query or answers without authority (a
    referral) makes the task fail with a message that names it.
  - Runs on the controller, whatever the host; it needs the Python package C(dnspython) there.
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: It only reads, so it checks in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: all
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
options:
  records:
    description:
      - The expected records, as the filter P(chatmail.relay.zone_records#filter) returns them.
      - A name or type that appears several times is asked once per nameserver.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The owner name. Relative names are taken as absolute.
        type: str
        required: true
      type:
        description: The record type, for example V(TXT).
        type: str
        required: true
      value:
        description: The record data in zone file presentation form, for example V(10 example.org.).
        type: str
        required: true
      required:
        description: Whether a missing or wrong record fails the task (V(true)) or only warns.
        type: bool
        default: true
      ttl:
        description: Accepted so the filter's output passes unchanged; not compared.
        type: int
  nameservers:
    description:
      - IP addresses of the nameservers to ask, for example a hidden primary that takes dynamic
        updates. Each must serve every record.
      - When omitted, the authoritative nameservers of the zone (see O(zone)).
    type: list
    elements: str
  zone:
    description:
      - The zone whose NS records name the nameservers to ask, when O(nameservers) is omitted.
      - When omitted, the zone that holds the longest name common to all records, found by its
        SOA record.
    type: str
  port:
    description: The port the nameservers listen on.
    type: int
    default: 53
  timeout:
    description:
      - Seconds to wait for each answer. An unanswered query is sent again once, to each
        address of the nameserver in turn.
    type: float
    default: 5.0
  recursion:
    description:
      - Ask for recursion (set the RD flag). Needed when O(nameservers) are recursive resolvers
        rather than the zone's own servers; then the answers may come from their caches.
    type: bool
    default: false
seealso:
  - plugin: chatmail.relay.zone_records
    plugin_type: filter
  - module: community.general.nsupdate
"""

EXAMPLES = r"""
- name: Check the relay's records at the zone's authoritative nameservers
  chatmail.relay.dns_check:
    records: "{{ relay_dns | chatmail.relay.zone_records }}"

- name: Check them at the primary that took the dynamic update
  chatmail.relay.dns_check:
    records: "{{ relay_dns | chatmail.relay.zone_records }}"
    nameservers: [192.0.2.53]
    timeout: 2

- name: Check one new DKIM key, without failing when it is not yet published
  chatmail.relay.dns_check:
    records:
      - name: dkim202611._domainkey.chat.example.org.
        type: TXT
        value: '"v=DKIM1;k=rsa;p=MIIBIjANBgkq..." "...IDAQAB;s=email;t=s"'
  register: new_key
  failed_when: new_key.ok is not defined  # a lookup error; a missing record is expected

# A failure reads:
# required DNS records missing or wrong: chat.example.org. MX (missing),
#   dkim._domainkey.chat.example.org. TXT (wrong)
# and, when only some nameservers lack a record, names them:
#   chat.example.org. A (missing at ns2.example.net.)
"""

RETURN = r"""
nameservers:
  description:
    The nameservers asked; by name when found from the zone's NS records, else by address.
  returned: success
  type: list
  elements: str
  sample: [ns1.example.net., ns2.example.net.]
ok:
  description: The records every nameserver serves.
  returned: success
  type: list
  elements: dict
  contains: &entry
    name:
      description: The owner name, absolute.
      type: str
      sample: chat.example.org.
    type:
      description: The record type.
      type: str
      sample: MX
    required:
      description: Whether the record is required.
      type: bool
    expected:
      description: The expected value in presentation form.
      type: str
      sample: 10 chat.example.org.
    found:
      description: The values of that name and type the nameservers serve (from all of them).
      type: list
      elements: str
      sample: [20 old.example.org.]
    nameservers:
      description: The nameservers that lack the value; empty for records that are ok.
      type: list
      elements: str
      sample: [ns2.example.net.]
missing:
  description: The records some nameserver has no record of that name and type for.
  returned: success
  type: list
  elements: dict
  contains: *entry
wrong:
  description: The records some nameserver serves with other values only (or, for A, AAAA and
    CNAME, with further values).
  returned: success
  type: list
  elements: dict
  contains: *entry
msg:
  description:
    - When a required record is missing or wrong, the list of them by name and type, else a summary.
    - Recommended records that are missing or wrong are listed in a warning.
  returned: always
  type: str
  sample: "required DNS records missing or wrong: dkim._domainkey.chat.example.org. TXT (missing)"
"""
