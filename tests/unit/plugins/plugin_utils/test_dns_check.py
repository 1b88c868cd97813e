"""Checking a relay's records against a real (tiny, in-process) authoritative server."""

from __future__ import annotations

import base64
import copy
import socket
from collections.abc import Iterator

import dns.flags
import dns.resolver
import pytest
from ansible_collections.chatmail.relay.plugins.plugin_utils.dns_check import (
    DnsCheckInputError,
    DnsQueryError,
    Nameserver,
    asker,
    authoritative_nameservers,
    check,
    given_nameservers,
    parse_records,
)
from ansible_collections.chatmail.relay.plugins.plugin_utils.dns_zone import zone_records
from dns_server import AuthoritativeServer

ZONE = "example.test."
# Long enough that the DKIM record needs two TXT strings.
KEY = base64.b64encode(bytes(range(256)) + bytes(range(40))).decode()
SOA = ["ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60"]
RELAY = {
    "domain": "example.test",
    "ipv4": ["127.0.0.1"],
    "ipv6": ["2001:db8::10"],
    "dkim": [{"selector": "dkim", "public_key": KEY}],
    "mta_sts_id": "1",
    "caa_issuer": "letsencrypt.org",
}
RECORDS = zone_records(RELAY)
DKIM_NAME = "dkim._domainkey.example.test."
DKIM_TEXT = f"v=DKIM1;k=rsa;p={KEY};s=email;t=s"


def served(records: list[dict] = RECORDS) -> dict[str, dict[str, list[str]]]:
    """The zone a correct provider serves: the records, SOA and NS."""
    zone: dict[str, dict[str, list[str]]] = {
        ZONE: {"SOA": SOA, "NS": ["ns1.example.test."]},
        "ns1.example.test.": {"A": ["127.0.0.1"]},
    }
    for record in records:
        zone.setdefault(record["name"], {}).setdefault(record["type"], []).append(record["value"])
    return zone


def split(text: str, size: int) -> str:
    return " ".join(f'"{text[i : i + size]}"' for i in range(0, len(text), size))


def run(zone: dict, records: list[dict] = RECORDS, **options) -> dict:
    with AuthoritativeServer(ZONE, zone) as server:
        ask = asker(port=server.port, timeout=1, **options)
        return check(parse_records(records), given_nameservers([server.address]), ask)


def names(entries: list[dict]) -> list[tuple[str, str]]:
    return [(entry["name"], entry["type"]) for entry in entries]


@pytest.fixture
def zone() -> dict:
    return copy.deepcopy(served())


def test_every_record_served_is_ok(zone):
    report = run(zone)
    assert names(report["ok"]) == names(RECORDS)
    assert report["missing"] == report["wrong"] == report["warnings"] == []
    assert not report["failed"]
    required = sum(record["required"] for record in RECORDS)
    assert report["msg"] == (
        f"all {required} required DNS records are served by 127.0.0.1;"
        f" {len(RECORDS)} of {len(RECORDS)} records are ok"
    )
    dkim = next(entry for entry in report["ok"] if entry["name"] == DKIM_NAME)
    assert dkim == {
        "name": DKIM_NAME,
        "type": "TXT",
        "required": True,
        "expected": split(DKIM_TEXT, 255),
        "found": [split(DKIM_TEXT, 255)],
        "nameservers": [],
    }


def test_a_txt_record_split_elsewhere_is_the_same_record(zone):
    zone[DKIM_NAME]["TXT"] = [split(DKIM_TEXT, 100)]
    report = run(zone)
    assert (DKIM_NAME, "TXT") in names(report["ok"])
    assert not report["failed"]


def test_case_and_notation_do_not_matter(zone):
    del zone[ZONE]["MX"], zone[ZONE]["CAA"], zone[ZONE]["AAAA"]
    upper = {
        name.upper(): {
            rdtype: [value.upper() if rdtype in ("SRV", "CNAME") else value for value in values]
            for rdtype, values in types.items()
        }
        for name, types in zone.items()
        if name != ZONE
    }
    upper[ZONE.upper()] = {
        **zone[ZONE],
        "MX": ["10 Example.TEST."],
        "CAA": ['0 ISSUE "LetsEncrypt.ORG"'],
        "AAAA": ["2001:0db8:0000::0010"],
    }
    report = run(upper)
    assert names(report["ok"]) == names(RECORDS)


def test_a_caa_issuer_with_parameters_compares_without_blanks(zone):
    uri = "https://acme-v02.api.letsencrypt.org/acme/acct/1"
    records = zone_records({**RELAY, "caa_accounturi": uri})
    zone[ZONE]["CAA"] = [f'0 issue "letsencrypt.org ; accounturi={uri}"']
    assert (ZONE, "CAA") in names(run(zone, records)["ok"])

    zone[ZONE]["CAA"] = [f'0 issue "letsencrypt.org; accounturi={uri}2"']
    assert (ZONE, "CAA") in names(run(zone, records)["wrong"])


def test_a_missing_required_record_fails_naming_it(zone):
    del zone[DKIM_NAME]
    report = run(zone)
    assert report["failed"]
    assert report["msg"] == (
        "required DNS records missing or wrong: dkim._domainkey.example.test. TXT (missing)"
    )
    assert report["missing"] == [
        {
            "name": DKIM_NAME,
            "type": "TXT",
            "required": True,
            "expected": split(DKIM_TEXT, 255),
            "found": [],
            "nameservers": ["127.0.0.1"],
        }
    ]


def test_a_record_with_another_value_is_wrong_and_shows_both(zone):
    zone[ZONE]["MX"] = ["20 mail.example.net."]
    zone[ZONE]["TXT"] = ['"v=spf1 -all"']
    report = run(zone)
    assert report["failed"]
    assert report["msg"] == "required DNS records missing or wrong: example.test. MX (wrong)"
    assert names(report["wrong"]) == [(ZONE, "MX"), (ZONE, "TXT")]
    mx = report["wrong"][0]
    assert (mx["expected"], mx["found"]) == ("10 example.test.", ["20 mail.example.net."])
    assert report["warnings"] == [
        "recommended DNS records missing or wrong: example.test. TXT (wrong)"
    ]


def test_further_values_are_fine_beside_txt_and_mx_but_not_beside_addresses(zone):
    zone[ZONE]["TXT"].append('"google-site-verification=abc"')
    zone[ZONE]["MX"].append("20 backup.example.net.")
    zone[ZONE]["A"].append("192.0.2.1")
    report = run(zone)
    assert (ZONE, "TXT") in names(report["ok"])
    assert (ZONE, "MX") in names(report["ok"])
    assert names(report["wrong"]) == [(ZONE, "A")]
    assert report["wrong"][0]["found"] == ["127.0.0.1", "192.0.2.1"]


def test_srv_records_compare_every_field(zone):
    zone["_imaps._tcp.example.test."]["SRV"] = ["0 1 994 example.test."]
    del zone["_submission._tcp.example.test."]
    report = run(zone)
    assert names(report["wrong"]) == [("_imaps._tcp.example.test.", "SRV")]
    assert names(report["missing"]) == [("_submission._tcp.example.test.", "SRV")]


def test_recommended_records_only_warn(zone):
    for name in ("_dmarc.example.test.", "_adsp._domainkey.example.test."):
        del zone[name]
    del zone[ZONE]["CAA"]
    report = run(zone)
    assert not report["failed"]
    assert report["warnings"] == [
        "recommended DNS records missing or wrong: example.test. CAA (missing),"
        " _dmarc.example.test. TXT (missing), _adsp._domainkey.example.test. TXT (missing)"
    ]
    assert report["msg"].startswith("all 7 required DNS records are served by 127.0.0.1;")


def test_a_record_behind_a_cname_counts():
    records = [{"name": DKIM_NAME, "type": "TXT", "value": split(DKIM_TEXT, 255)}]
    zone = served(records)
    zone[DKIM_NAME] = {"CNAME": ["keys.example.test."]}
    zone["keys.example.test."] = {"TXT": [split(DKIM_TEXT, 200)]}
    assert names(run(zone, records)["ok"]) == [(DKIM_NAME, "TXT")]


@pytest.fixture
def two_servers(zone) -> Iterator[tuple[AuthoritativeServer, AuthoritativeServer]]:
    lagging = copy.deepcopy(zone)
    del lagging[DKIM_NAME]
    with AuthoritativeServer(ZONE, zone) as first:
        try:
            second = AuthoritativeServer(ZONE, lagging, address="127.0.0.2", port=first.port)
        except OSError:
            pytest.skip("127.0.0.2 is not usable here")
        with second:
            yield first, second


def test_every_nameserver_must_serve_the_record_and_the_laggard_is_named(two_servers):
    first, second = two_servers
    servers = given_nameservers([first.address, second.address])
    report = check(parse_records(RECORDS), servers, asker(port=first.port, timeout=1))
    assert report["msg"] == (
        "required DNS records missing or wrong:"
        " dkim._domainkey.example.test. TXT (missing at 127.0.0.2)"
    )
    assert report["missing"][0]["found"] == [split(DKIM_TEXT, 255)]
    assert report["missing"][0]["nameservers"] == ["127.0.0.2"]


def test_each_name_and_type_is_asked_once_per_server(zone):
    with AuthoritativeServer(ZONE, zone) as server:
        check(parse_records(RECORDS), given_nameservers([server.address]), asker(server.port))
    asked = [(q.question[0].name.to_text(), q.question[0].rdtype) for q in server.queries]
    assert len(asked) == len(set(asked)) == len({(r["name"], r["type"]) for r in RECORDS})


@pytest.mark.parametrize(("recursion", "flag"), [(False, False), (True, True)])
def test_recursion_is_asked_for_only_when_wanted(zone, recursion, flag):
    with AuthoritativeServer(ZONE, zone) as server:
        ask = asker(server.port, recursion=recursion)
        check(parse_records(RECORDS[:1]), given_nameservers([server.address]), ask)
    assert bool(server.queries[0].flags & dns.flags.RD) is flag


def test_the_authoritative_servers_are_found_from_the_zone(zone):
    with AuthoritativeServer(ZONE, zone) as server:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [server.address]
        resolver.port = server.port
        records = parse_records(RECORDS)
        found = authoritative_nameservers(records, resolver=resolver)
        assert found == [Nameserver("ns1.example.test.", ("127.0.0.1",))]
        assert authoritative_nameservers(records[3:4], zone=ZONE, resolver=resolver) == found
        report = check(records, found, asker(server.port))
    assert not report["failed"]
    assert report["msg"].startswith("all 7 required DNS records are served by ns1.example.test.;")


def test_records_in_unrelated_domains_need_a_zone():
    records = parse_records(
        [
            {"name": "a.example.", "type": "A", "value": "192.0.2.1"},
            {"name": "b.example.net.", "type": "A", "value": "192.0.2.1"},
        ]
    )
    with pytest.raises(DnsCheckInputError, match="share no domain; give the zone"):
        authoritative_nameservers(records, resolver=dns.resolver.Resolver(configure=False))


def test_a_server_that_refuses_the_zone_fails_the_check(zone):
    records = [{"name": "chat.example.net.", "type": "MX", "value": "10 chat.example.net."}]
    with pytest.raises(DnsQueryError, match=r"127\.0\.0\.1 answered REFUSED for chat"):
        run(zone, records)


def test_a_referral_is_not_taken_for_a_missing_record(zone):
    with AuthoritativeServer(ZONE, zone, authoritative=False) as server:
        ask = asker(server.port)
        with pytest.raises(DnsQueryError, match=r"not authoritative for example\.test\. A"):
            check(parse_records(RECORDS[:1]), given_nameservers([server.address]), ask)


def test_a_silent_server_fails_after_a_retry(zone):
    with AuthoritativeServer(ZONE, zone, silent=True) as server:
        ask = asker(server.port, timeout=0.1)
        with pytest.raises(DnsQueryError) as error:
            check(parse_records(RECORDS[:1]), given_nameservers([server.address]), ask)
    assert str(error.value) == (
        "the nameserver 127.0.0.1 did not answer for example.test. A"
        " (127.0.0.1: no answer within 0.1 s)"
    )
    assert len(server.queries) == 2


def test_the_next_address_of_a_nameserver_is_tried(zone):
    with AuthoritativeServer(ZONE, zone) as server:
        # A port nobody listens on at the first address: refused or unanswered.
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            closed.bind(("127.0.0.3", server.port))
        except OSError:
            pytest.skip("127.0.0.3 is not usable here")
        with closed:
            servers = [Nameserver("ns1.example.test.", ("127.0.0.3", server.address))]
            report = check(parse_records(RECORDS), servers, asker(server.port, timeout=0.2))
    assert not report["failed"]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ("example.test. A 127.0.0.1", "records must be a list, got str"),
        ([], "records is empty"),
        (["x"], r"records\[0\] must be a dict"),
        ([{"name": "a.", "type": "A", "value": "192.0.2.1", "requried": True}],
         r"records\[0\]: unknown field requried \(known: name, required, ttl, type, value\)"),
        ([{"name": "a.", "type": "A"}], r"records\[0\]\.value is required"),
        ([{"name": "a.", "type": "A", "value": "1.2.3.4", "required": "yes"}],
         r"records\[0\]\.required must be true or false, got 'yes'"),
        ([{"name": "a..b", "type": "A", "value": "1.2.3.4"}], r"records\[0\]\.name 'a..b'"),
        ([{"name": "a.", "type": "AA", "value": "1.2.3.4"}],
         r"records\[0\]\.type 'AA' is not a record type"),
        ([{"name": "a.", "type": "mx", "value": "ten a."}],
         r"records\[0\]\.value 'ten a\.' is not a valid MX record"),
    ],
)  # fmt: skip
def test_invalid_records_are_refused_naming_the_field(records, message):
    with pytest.raises(DnsCheckInputError, match=message):
        parse_records(records)


def test_invalid_options_are_refused():
    with pytest.raises(DnsCheckInputError, match=r"nameservers\[1\] 'ns1.example.net'"):
        given_nameservers(["192.0.2.1", "ns1.example.net"])
    with pytest.raises(DnsCheckInputError, match="port must be from 1 to 65535, got 0"):
        asker(port=0)
    with pytest.raises(DnsCheckInputError, match="timeout must be a positive number"):
        asker(timeout=0)
    assert given_nameservers(["2001:DB8::1", "2001:db8::1"]) == [
        Nameserver("2001:db8::1", ("2001:db8::1",))
    ]
