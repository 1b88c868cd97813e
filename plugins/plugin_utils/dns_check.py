# SPDX-License-Identifier: MIT
"""Compare the DNS records a relay needs with what its nameservers serve.

Pure Python on dnspython, without Ansible; the action plugin ``chatmail.relay.dns_check``
wraps it. The expected records are those of :func:`dns_zone.zone_records` (name, type,
presentation value, required). Each name and type is asked of every nameserver, and
each expected value is compared with the answer by meaning rather than by text:

* names compare case-insensitively (also inside MX, SRV and CNAME data);
* a TXT record is the concatenation of its strings, however it is split;
* a CAA record compares its tag and, for ``issue``/``issuewild``, the issuer domain
  case-insensitively and without the blanks RFC 8659 allows around ``;``;
* everything else compares in DNSSEC canonical form (``2001:db8::1`` equals
  ``2001:0db8:0::1``).

A value is ``ok`` when every nameserver serves it, ``missing`` when a nameserver has no
record of that name and type, and ``wrong`` when a nameserver has records of that name
and type but not this value. For A, AAAA and CNAME the answer must also hold no value
besides the expected ones, since a stale address sends part of the traffic elsewhere.
Invalid input raises :class:`DnsCheckInputError`; a nameserver that gives no usable
answer raises :class:`DnsQueryError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

try:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.resolver
    from dns.rdtypes.ANY.CAA import CAA
    from dns.rdtypes.ANY.TXT import TXT
except ImportError as exc:
    # dnspython is the controller's to install (requirements.txt). Without it this module
    # still imports, as Ansible's plugins must; the action says what to install.
    DNSPYTHON_MISSING: ImportError | None = exc
else:
    DNSPYTHON_MISSING = None

DEFAULT_PORT = 53
DEFAULT_TIMEOUT = 5.0
# UDP answers may be lost; each address of a nameserver is tried this many times.
ATTEMPTS = 2
# The EDNS buffer size of DNS Flag Day 2020: fits unfragmented; larger answers use TCP.
EDNS_PAYLOAD = 1232
RECORD_FIELDS = frozenset({"name", "type", "value", "required", "ttl"})
# Types whose whole RRset belongs to the relay: any further value is wrong.
EXCLUSIVE_TYPES = frozenset({"A", "AAAA", "CNAME"})

Status = Literal["ok", "missing", "wrong"]


class DnsCheckInputError(ValueError):
    """The records or options are invalid; the message names which."""


class DnsQueryError(RuntimeError):
    """A nameserver could not be asked or gave no usable answer."""


@dataclass(frozen=True)
class Expected:
    """One expected record, parsed."""

    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    rdata: dns.rdata.Rdata
    required: bool

    @property
    def type_text(self) -> str:
        return dns.rdatatype.to_text(self.rdtype)


@dataclass(frozen=True)
class Nameserver:
    """A nameserver to ask: its name (or address) and the addresses to try in turn."""

    label: str
    addresses: tuple[str, ...]


class Entry(TypedDict):
    """The outcome for one expected record."""

    name: str
    type: str
    required: bool
    expected: str
    found: list[str]
    nameservers: list[str]


class Report(TypedDict):
    """The outcome of a check; ``failed`` when a required record is missing or wrong."""

    ok: list[Entry]
    missing: list[Entry]
    wrong: list[Entry]
    failed: bool
    msg: str
    warnings: list[str]


# Asks one nameserver for one name and type; returns the records found (none for
# NXDOMAIN or no data) and raises DnsQueryError when there is no usable answer.
Ask = Callable[[Nameserver, "dns.name.Name", "dns.rdatatype.RdataType"], list["dns.rdata.Rdata"]]


def parse_records(records: Any) -> list[Expected]:
    """Return the expected records, refusing input that is not a list of records."""
    if not isinstance(records, list | tuple):
        raise DnsCheckInputError(f"records must be a list, got {type(records).__name__}")
    if not records:
        raise DnsCheckInputError("records is empty: there is nothing to check")
    return [_parse_record(record, f"records[{index}]") for index, record in enumerate(records)]


def _parse_record(record: Any, where: str) -> Expected:
    if not isinstance(record, Mapping):
        raise DnsCheckInputError(f"{where} must be a dict with name, type and value")
    unknown = sorted(str(key) for key in record if key not in RECORD_FIELDS)
    if unknown:
        known = ", ".join(sorted(RECORD_FIELDS))
        raise DnsCheckInputError(f"{where}: unknown field {', '.join(unknown)} (known: {known})")
    for field in ("name", "type", "value"):
        if not isinstance(record.get(field), str) or not record[field].strip():
            raise DnsCheckInputError(f"{where}.{field} is required and must be a string")
    required = record.get("required", True)
    if not isinstance(required, bool):
        raise DnsCheckInputError(f"{where}.required must be true or false, got {required!r}")
    try:
        name = dns.name.from_text(record["name"])
    except dns.exception.DNSException as exc:
        raise DnsCheckInputError(
            f"{where}.name {record['name']!r} is not a DNS name: {exc}"
        ) from None
    try:
        rdtype = dns.rdatatype.from_text(record["type"].strip().upper())
    except dns.exception.DNSException:
        raise DnsCheckInputError(f"{where}.type {record['type']!r} is not a record type") from None
    try:
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN, rdtype, record["value"], origin=dns.name.root, relativize=False
        )
    except (dns.exception.DNSException, ValueError) as exc:
        raise DnsCheckInputError(
            f"{where}.value {record['value']!r} is not a valid {dns.rdatatype.to_text(rdtype)}"
            f" record: {exc}"
        ) from None
    return Expected(name=name, rdtype=rdtype, rdata=rdata, required=required)


def given_nameservers(addresses: Any) -> list[Nameserver]:
    """Return one nameserver per IP address given, refusing anything else."""
    if not isinstance(addresses, list | tuple) or not addresses:
        raise DnsCheckInputError("nameservers must be a non-empty list of IP addresses")
    servers = []
    for index, address in enumerate(addresses):
        try:
            if not isinstance(address, str):
                raise ValueError
            text = ipaddress.ip_address(address).compressed
        except ValueError:
            raise DnsCheckInputError(
                f"nameservers[{index}] {address!r} is not an IP address"
            ) from None
        servers.append(Nameserver(label=text, addresses=(text,)))
    return list(dict.fromkeys(servers))


def authoritative_nameservers(
    records: Sequence[Expected],
    zone: str | None = None,
    resolver: dns.resolver.Resolver | None = None,
) -> list[Nameserver]:
    """Return the nameservers of the zone that holds the records, found with ``resolver``.

    The zone is ``zone`` if given, else the zone (by its SOA record) of the longest name
    all records share. Each NS target becomes one nameserver with its IPv4 addresses
    before its IPv6 ones, so a controller without IPv6 still reaches it.
    """
    resolver = resolver or dns.resolver.Resolver()
    if zone:
        try:
            origin = dns.name.from_text(zone)
        except dns.exception.DNSException as exc:
            raise DnsCheckInputError(f"zone {zone!r} is not a DNS name: {exc}") from None
    else:
        common = _common_ancestor([record.name for record in records])
        if common == dns.name.root:
            raise DnsCheckInputError(
                "the records share no domain; give the zone or the nameservers"
            )
        try:
            origin = dns.resolver.zone_for_name(common, resolver=resolver)
        except dns.exception.DNSException as exc:
            raise DnsQueryError(
                f"could not find the zone of {common} with the system resolver: {exc}; "
                "give the zone or the nameservers"
            ) from None
    try:
        targets = sorted({rdata.target for rdata in resolver.resolve(origin, "NS")})
    except dns.exception.DNSException as exc:
        raise DnsQueryError(f"could not look up the NS records of {origin}: {exc}") from None
    servers = []
    for target in targets:
        addresses = [
            address
            for rdtype in ("A", "AAAA")
            for address in sorted(_addresses(resolver, target, rdtype))
        ]
        if not addresses:
            raise DnsQueryError(f"the nameserver {target} of {origin} has no address")
        servers.append(Nameserver(label=target.to_text(), addresses=tuple(addresses)))
    return servers


def _common_ancestor(names: Iterable[dns.name.Name]) -> dns.name.Name:
    common: dns.name.Name | None = None
    for name in names:
        if common is None:
            common = name
        else:
            shared = common.fullcompare(name)[2]
            common = dns.name.Name(common.labels[len(common.labels) - shared :])
    return common or dns.name.root


def _addresses(resolver: dns.resolver.Resolver, target: dns.name.Name, rdtype: str) -> set[str]:
    try:
        answer = resolver.resolve(target, rdtype)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return set()
    except dns.exception.DNSException as exc:
        raise DnsQueryError(f"could not look up the {rdtype} records of {target}: {exc}") from None
    return {rdata.address for rdata in answer}


def asker(
    port: int = DEFAULT_PORT, timeout: float = DEFAULT_TIMEOUT, recursion: bool = False
) -> Ask:
    """Return an :data:`Ask` that queries over UDP (TCP when truncated).

    Without ``recursion`` the queries do not ask for it (RD clear), as suits authoritative
    servers; set it for a recursive resolver.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise DnsCheckInputError(f"port must be from 1 to 65535, got {port!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise DnsCheckInputError(f"timeout must be a positive number of seconds, got {timeout!r}")

    # The address of each nameserver that answered last, tried first next time, so an
    # unreachable address (IPv6 on a controller without it) costs one timeout, not many.
    answering: dict[str, str] = {}

    def ask(
        server: Nameserver, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> list[dns.rdata.Rdata]:
        query = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
        if not recursion:
            query.flags &= ~dns.flags.RD
        what = f"{name} {dns.rdatatype.to_text(rdtype)}"
        addresses = sorted(server.addresses, key=lambda a: a != answering.get(server.label))
        errors = []
        for _attempt in range(ATTEMPTS):
            for address in addresses:
                try:
                    response, _used_tcp = dns.query.udp_with_fallback(
                        query, address, timeout=timeout, port=port
                    )
                except dns.exception.Timeout:
                    errors.append(f"{address}: no answer within {timeout:g} s")
                except (OSError, dns.exception.DNSException) as exc:
                    errors.append(f"{address}: {exc or type(exc).__name__}")
                else:
                    answering[server.label] = address
                    return _records(response, server, what)
        tried = "; ".join(dict.fromkeys(errors))
        raise DnsQueryError(f"the nameserver {server.label} did not answer for {what} ({tried})")

    return ask


def _records(response: dns.message.Message, server: Nameserver, what: str) -> list[dns.rdata.Rdata]:
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise DnsQueryError(
            f"the nameserver {server.label} answered {dns.rcode.to_text(rcode)} for {what};"
            " is it a nameserver of the zone?"
        )
    if not response.flags & (dns.flags.AA | dns.flags.RA):
        # Neither authoritative nor recursive: a referral, for example to a delegated
        # subdomain. Its empty answer says nothing about the record.
        raise DnsQueryError(
            f"the nameserver {server.label} is not authoritative for {what} and does not"
            " recurse (a referral?); ask the nameservers of the zone that holds it"
        )
    if not isinstance(response, dns.message.QueryMessage):
        raise DnsQueryError(f"the nameserver {server.label} sent no answer to a query for {what}")
    try:
        answer = response.resolve_chaining().answer
    except dns.exception.DNSException as exc:
        raise DnsQueryError(
            f"the nameserver {server.label} sent an unusable answer for {what}: {exc}"
        ) from None
    return list(answer) if answer is not None else []


def check(records: Sequence[Expected], nameservers: Sequence[Nameserver], ask: Ask) -> Report:
    """Ask every nameserver for every expected record and sort the records by outcome."""
    if not nameservers:
        raise DnsCheckInputError("there are no nameservers to ask")
    answers: dict[tuple[dns.name.Name, dns.rdatatype.RdataType, str], list[dns.rdata.Rdata]] = {}
    for name, rdtype in dict.fromkeys((record.name, record.rdtype) for record in records):
        for server in nameservers:
            answers[name, rdtype, server.label] = ask(server, name, rdtype)

    wanted: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], set[Hashable]] = {}
    for record in records:
        wanted.setdefault((record.name, record.rdtype), set()).add(_key(record.rdata))

    report = Report(ok=[], missing=[], wrong=[], failed=False, msg="", warnings=[])
    problems: list[tuple[Entry, Status]] = []
    for record in records:
        statuses: dict[str, Status] = {}
        found: set[str] = set()
        for server in nameservers:
            rdatas = answers[record.name, record.rdtype, server.label]
            found.update(rdata.to_text() for rdata in rdatas)
            statuses[server.label] = _status(record, rdatas, wanted[record.name, record.rdtype])
        outcomes = set(statuses.values())
        status: Status = (
            "wrong" if "wrong" in outcomes else "missing" if outcomes - {"ok"} else "ok"
        )
        entry = Entry(
            name=record.name.to_text(),
            type=record.type_text,
            required=record.required,
            expected=record.rdata.to_text(),
            found=sorted(found),
            nameservers=[label for label, outcome in statuses.items() if outcome != "ok"],
        )
        report[status].append(entry)
        if status != "ok":
            problems.append((entry, status))

    labels = [server.label for server in nameservers]
    required = [_describe(entry, status, labels) for entry, status in problems if entry["required"]]
    recommended = [
        _describe(entry, status, labels) for entry, status in problems if not entry["required"]
    ]
    if recommended:
        report["warnings"].append(
            "recommended DNS records missing or wrong: " + ", ".join(recommended)
        )
    if required:
        report["failed"] = True
        report["msg"] = "required DNS records missing or wrong: " + ", ".join(required)
    else:
        report["msg"] = (
            f"all {sum(record.required for record in records)} required DNS records are served"
            f" by {', '.join(labels)}; {len(report['ok'])} of {len(records)} records are ok"
        )
    return report


def _status(expected: Expected, found: list[dns.rdata.Rdata], wanted: set[Hashable]) -> Status:
    if not found:
        return "missing"
    keys = {_key(rdata) for rdata in found}
    if _key(expected.rdata) not in keys:
        return "wrong"
    if expected.type_text in EXCLUSIVE_TYPES and not keys <= wanted:
        return "wrong"
    return "ok"


def _key(rdata: dns.rdata.Rdata) -> Hashable:
    """What makes two records equal for the relay."""
    if isinstance(rdata, TXT):
        return (rdata.rdtype, b"".join(rdata.strings))
    if isinstance(rdata, CAA):
        tag = rdata.tag.lower()
        value = rdata.value
        if tag in (b"issue", b"issuewild"):
            issuer, *parameters = value.split(b";")
            value = b";".join(
                [issuer.strip().lower(), *(p.strip() for p in parameters if p.strip())]
            )
        return (rdata.rdtype, rdata.flags, tag, value)
    return (rdata.rdtype, rdata.to_digestable(dns.name.root))


def _describe(entry: Entry, status: Status, labels: Sequence[str]) -> str:
    where = ""
    if len(entry["nameservers"]) < len(labels):
        where = " at " + ", ".join(entry["nameservers"])
    return f"{entry['name']} {entry['type']} ({status}{where})"
