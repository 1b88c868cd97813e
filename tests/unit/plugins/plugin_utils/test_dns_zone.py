"""The relay's DNS records (SPEC §9) computed without Ansible."""

from __future__ import annotations

import base64
import copy
import re
import sys

import dns.name
import dns.rdata
import dns.rdatatype
import dns.zone
import pytest
from ansible_collections.chatmail.relay.plugins.plugin_utils.dns_zone import (
    ZoneInputError,
    txt,
    zone_file,
    zone_records,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

KEY_A = base64.b64encode(bytes(range(100))).decode()
KEY_B = base64.b64encode(bytes(range(50, 120))).decode()


def rsa_public_key(bits: int = 2048) -> tuple[str, str]:
    """A real key as PEM and as the base64 of its DER form."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(der).decode()


def relay(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "domain": "chat.example.org",
        "ipv4": ["203.0.113.10"],
        "ipv6": ["2001:db8::10"],
        "dkim": [{"selector": "opendkim", "public_key": KEY_A}],
        "mta_sts_id": "20240601",
        "tls_mode": "acme",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def by_key(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    index: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        index.setdefault((record["name"], record["type"]), []).append(record)
    return index


def txt_strings(value: str) -> list[bytes]:
    (rdata,) = [dns.rdata.from_text("IN", "TXT", value)]
    return list(rdata.strings)


def parsed(text: str) -> set[tuple[str, int, str, str]]:
    zone = dns.zone.from_text(text, relativize=False, check_origin=False)
    return {
        (name.to_text(), rdataset.ttl, dns.rdatatype.to_text(rdataset.rdtype), rdata.to_text())
        for name, rdataset in zone.iterate_rdatasets()
        for rdata in rdataset
    }


def as_tuples(records: list[dict]) -> set[tuple[str, int, str, str]]:
    return {(r["name"], r["ttl"], r["type"], r["value"]) for r in records}


def test_every_record_of_spec_section_9():
    records = zone_records(
        relay(
            caa_issuer="letsencrypt.org",
            caa_accounturi="https://acme-v02.api.letsencrypt.org/acme/acct/42",
            tlsrpt_rua="mailto:tlsrpt@example.org",
        )
    )
    d = "chat.example.org."
    dkim = f'"v=DKIM1;k=rsa;p={KEY_A};s=email;t=s"'
    assert records == [
        {"name": d, "ttl": 3600, "type": "A", "value": "203.0.113.10", "required": True},
        {"name": d, "ttl": 3600, "type": "AAAA", "value": "2001:db8::10", "required": True},
        {
            "name": d,
            "ttl": 3600,
            "type": "CAA",
            "value": '0 issue "letsencrypt.org;accounturi='
            'https://acme-v02.api.letsencrypt.org/acme/acct/42"',
            "required": False,
        },
        {"name": d, "ttl": 3600, "type": "MX", "value": f"10 {d}", "required": True},
        {"name": d, "ttl": 3600, "type": "TXT", "value": '"v=spf1 a ~all"', "required": False},
        {
            "name": f"_dmarc.{d}",
            "ttl": 3600,
            "type": "TXT",
            "value": '"v=DMARC1;p=reject;adkim=s;aspf=s"',
            "required": False,
        },
        {
            "name": f"_adsp._domainkey.{d}",
            "ttl": 3600,
            "type": "TXT",
            "value": '"dkim=discardable"',
            "required": False,
        },
        {
            "name": f"opendkim._domainkey.{d}",
            "ttl": 3600,
            "type": "TXT",
            "value": dkim,
            "required": True,
        },
        {
            "name": f"_mta-sts.{d}",
            "ttl": 3600,
            "type": "TXT",
            "value": '"v=STSv1; id=20240601"',
            "required": True,
        },
        {
            "name": f"_imap._tcp.{d}",
            "ttl": 3600,
            "type": "SRV",
            "value": f"0 1 143 {d}",
            "required": False,
        },
        {
            "name": f"_imaps._tcp.{d}",
            "ttl": 3600,
            "type": "SRV",
            "value": f"0 1 993 {d}",
            "required": False,
        },
        {
            "name": f"_submission._tcp.{d}",
            "ttl": 3600,
            "type": "SRV",
            "value": f"0 1 587 {d}",
            "required": False,
        },
        {
            "name": f"_submissions._tcp.{d}",
            "ttl": 3600,
            "type": "SRV",
            "value": f"0 1 465 {d}",
            "required": False,
        },
        {
            "name": f"_smtp._tls.{d}",
            "ttl": 3600,
            "type": "TXT",
            "value": '"v=TLSRPTv1; rua=mailto:tlsrpt@example.org"',
            "required": False,
        },
        {"name": f"mta-sts.{d}", "ttl": 3600, "type": "CNAME", "value": d, "required": True},
        {"name": f"www.{d}", "ttl": 3600, "type": "CNAME", "value": d, "required": True},
    ]


def test_output_is_deterministic_and_sorted():
    forward = relay(ipv4=["203.0.113.10", "198.51.100.7"], ipv6="2001:db8::10")
    backward = relay(ipv4=["198.51.100.7", "203.0.113.10", "198.51.100.7"], ipv6="2001:DB8::10")
    records = zone_records(forward)
    assert records == zone_records(backward)
    assert [r["value"] for r in records if r["type"] == "A"] == ["198.51.100.7", "203.0.113.10"]
    names = [dns.name.from_text(r["name"]) for r in records]
    assert names == sorted(names)  # dnspython compares names in DNSSEC canonical order
    assert zone_file(forward) == zone_file(backward)


def test_ipv6_only_relay_has_no_a_record():
    records = zone_records(relay(ipv4=None, ipv6="2001:db8::1"))
    types = {r["type"] for r in records if r["name"] == "chat.example.org."}
    assert "A" not in types
    assert by_key(records)["chat.example.org.", "AAAA"][0]["value"] == "2001:db8::1"


def test_addresses_may_be_absent_or_empty():
    for empty in (None, "", []):
        records = zone_records(relay(ipv4=empty, ipv6=empty))
        assert not {"A", "AAAA"} & {r["type"] for r in records}


def test_no_dkim_key_yet():
    for dkim in (None, []):
        records = zone_records(relay(dkim=dkim))
        dkim_names = [r["name"] for r in records if "._domainkey." in r["name"]]
        assert dkim_names == ["_adsp._domainkey.chat.example.org."]


def test_two_dkim_selectors():
    records = zone_records(
        relay(
            dkim=[
                {"selector": "2025", "public_key": KEY_B},
                {"selector": "Rotated.2024", "public_key": KEY_A},
            ]
        )
    )
    index = by_key(records)
    assert index["2025._domainkey.chat.example.org.", "TXT"][0]["value"] == (
        f'"v=DKIM1;k=rsa;p={KEY_B};s=email;t=s"'
    )
    rotated = index["rotated.2024._domainkey.chat.example.org.", "TXT"][0]
    assert rotated["required"] is True


def test_underscore_test_domain():
    records = zone_records(relay(domain="_test.example.org", tls_mode="self_signed"))
    index = by_key(records)
    assert index["_test.example.org.", "MX"][0]["value"] == "10 _test.example.org."
    assert ("www._test.example.org.", "CNAME") in index
    assert parsed(zone_file(relay(domain="_test.example.org"))) == as_tuples(
        zone_records(relay(domain="_test.example.org"))
    )


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("bücher.example", "xn--bcher-kva.example."),
        ("BÜCHER.Example.", "xn--bcher-kva.example."),
        ("straße.de", "xn--strae-oqa.de."),  # IDNA 2008, not 2003's "strasse"
        ("xn--bcher-kva.example", "xn--bcher-kva.example."),
    ],
)
def test_internationalised_domain_becomes_punycode(domain, expected):
    records = zone_records(relay(domain=domain))
    assert {r["name"] for r in records if r["type"] == "MX"} == {expected}
    assert by_key(records)[expected, "MX"][0]["value"] == f"10 {expected}"
    assert dns.name.from_text(domain).to_text().lower() == expected


def test_without_idna_package_an_internationalised_domain_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "idna", None)
    assert zone_records(relay(domain="example.org"))
    with pytest.raises(ZoneInputError, match=r"install the Python package 'idna'"):
        zone_records(relay(domain="bücher.example"))


def test_long_dkim_key_is_split_into_255_byte_strings():
    pem, der_base64 = rsa_public_key(4096)
    (record,) = by_key(zone_records(relay(dkim=[{"selector": "big", "public_key": pem}])))[
        "big._domainkey.chat.example.org.", "TXT"
    ]
    strings = txt_strings(record["value"])
    assert len(strings) == 3
    assert all(len(s) <= 255 for s in strings)
    assert [len(s) for s in strings[:-1]] == [255, 255]
    assert b"".join(strings).decode() == f"v=DKIM1;k=rsa;p={der_base64};s=email;t=s"
    assert re.fullmatch(r'"[^"]{255}" "[^"]{255}" "[^"]+"', record["value"])


def test_pem_and_base64_keys_give_the_same_record():
    pem, der_base64 = rsa_public_key()
    from_pem = zone_records(relay(dkim=[{"selector": "s", "public_key": pem}]))
    wrapped = "\n".join(der_base64[i : i + 64] for i in range(0, len(der_base64), 64))
    from_base64 = zone_records(relay(dkim=[{"selector": "s", "public_key": wrapped}]))
    assert from_pem == from_base64


@pytest.mark.parametrize("mode", ["self_signed", "external"])
def test_mta_sts_cname_only_in_acme_mode(mode):
    index = by_key(zone_records(relay(tls_mode=mode)))
    assert ("mta-sts.chat.example.org.", "CNAME") not in index
    assert ("_mta-sts.chat.example.org.", "TXT") in index
    assert ("mta-sts.chat.example.org.", "CNAME") in by_key(zone_records(relay(tls_mode=None)))


def test_optional_records():
    plain = by_key(zone_records(relay()))
    assert ("chat.example.org.", "CAA") not in plain
    assert ("_smtp._tls.chat.example.org.", "TXT") not in plain
    caa = by_key(zone_records(relay(caa_issuer="LetsEncrypt.org", caa_accounturi="")))
    assert caa["chat.example.org.", "CAA"][0]["value"] == '0 issue "letsencrypt.org"'
    long_uri = "https://ca.example/acme/acct/" + "7" * 300
    long_caa = by_key(zone_records(relay(caa_issuer="ca.example", caa_accounturi=long_uri)))
    (rdata,) = [dns.rdata.from_text("IN", "CAA", long_caa["chat.example.org.", "CAA"][0]["value"])]
    assert rdata.value.decode() == f"ca.example;accounturi={long_uri}"
    rua = "mailto:tls@example.org,https://report.example.org/tlsrpt"
    tlsrpt = by_key(zone_records(relay(tlsrpt_rua=rua)))["_smtp._tls.chat.example.org.", "TXT"]
    assert tlsrpt[0]["value"] == f'"v=TLSRPTv1; rua={rua}"'
    assert tlsrpt[0]["required"] is False


@pytest.mark.parametrize(("ttl", "expected"), [(None, 3600), (300, 300), ("600", 600), (0, 0)])
def test_ttl(ttl, expected):
    records = zone_records(relay(ttl=ttl))
    assert {r["ttl"] for r in records} == {expected}
    assert f"$TTL {expected}\n" in zone_file(relay(ttl=ttl))


def test_domain_may_end_with_a_dot_and_is_lowercased():
    assert zone_records(relay(domain="Chat.Example.ORG.")) == zone_records(relay())


def test_values_are_in_dnspython_presentation_form():
    records = zone_records(relay(caa_issuer="letsencrypt.org", tlsrpt_rua="mailto:a@b.example"))
    for record in records:
        rdata = dns.rdata.from_text("IN", record["type"], record["value"])
        assert rdata.to_text() == record["value"], record


def test_txt_quotes_and_escapes():
    assert txt("") == '""'
    assert txt('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert txt_strings(txt('a "b" \\c')) == [b'a "b" \\c']
    assert txt_strings(txt("x" * 256)) == [b"x" * 255, b"x"]
    assert txt("\x00\x7fé") == '"\\000\\127\\195\\169"'
    # 200 two-byte characters: the first string ends inside one of them.
    strings = txt_strings(txt("ü" * 200))
    assert [len(s) for s in strings] == [255, 145]
    assert b"".join(strings).decode() == "ü" * 200


def test_mta_sts_id_may_be_a_number():
    index = by_key(zone_records(relay(mta_sts_id=20240601)))
    assert index["_mta-sts.chat.example.org.", "TXT"][0]["value"] == '"v=STSv1; id=20240601"'


@pytest.mark.parametrize(
    "data",
    [
        relay(caa_issuer="letsencrypt.org", tlsrpt_rua="mailto:tlsrpt@example.org"),
        relay(ipv4=None, ipv6=["2001:db8::1", "2001:db8::2"], dkim=[]),
        relay(domain="_test.example.org", tls_mode="self_signed", ttl=60),
        relay(domain="bücher.example"),
        relay(
            dkim=[
                {"selector": "a", "public_key": rsa_public_key(4096)[1]},
                {"selector": "b", "public_key": KEY_B},
            ]
        ),
    ],
    ids=["full", "ipv6-only", "underscore", "idn", "two-dkim"],
)
def test_zone_file_holds_exactly_the_records(data):
    text = zone_file(data)
    records = zone_records(data)
    origin = next(r["name"] for r in records if r["type"] == "MX")
    assert f"$ORIGIN {origin}\n" in text
    assert text.index("; Required") < text.index("; Recommended")
    assert parsed(text) == as_tuples(records)
    assert zone_file(copy.deepcopy(data)) == text


LABEL = st.from_regex(r"[a-z0-9_](?:[a-z0-9_-]{0,20}[a-z0-9_])?", fullmatch=True)


@settings(deadline=None)  # dnspython's first zone parse is slow on a cold cache
@given(
    labels=st.lists(LABEL, min_size=1, max_size=4),
    ipv4=st.lists(st.ip_addresses(v=4).map(str), max_size=3),
    ipv6=st.lists(
        st.ip_addresses(v=6).filter(lambda a: int(a) >> 32 and not a.ipv4_mapped).map(str),
        max_size=3,
    ),
    selectors=st.lists(st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True), max_size=3, unique=True),
    ttl=st.integers(min_value=0, max_value=2**31 - 1),
    tls_mode=st.sampled_from(["acme", "self_signed", "external"]),
)
def test_zone_file_parses_for_any_valid_input(labels, ipv4, ipv6, selectors, ttl, tls_mode):
    data = relay(
        domain=".".join(labels),
        ipv4=ipv4,
        ipv6=ipv6,
        dkim=[{"selector": s, "public_key": KEY_A} for s in selectors],
        ttl=ttl,
        tls_mode=tls_mode,
    )
    assert parsed(zone_file(data)) == as_tuples(zone_records(data))


BAD_INPUT = [
    (["not", "a", "dict"], r"^input must be a dict, got list$"),
    (relay(ip4="1.2.3.4"), r"^unknown field ip4 \(known: "),
    (relay(domain=None), r"^domain is required$"),
    (relay(domain=""), r"^domain is required$"),
    (relay(domain=["chat.example.org"]), r"^domain must be a string, got list$"),
    (relay(domain="a..example.org"), r"^domain 'a..example.org' has an empty label$"),
    (relay(domain="."), r"^domain '.' has an empty label$"),
    (relay(domain="chat example.org"), r"^domain 'chat example.org': label 'chat example' may"),
    (relay(domain="-chat.example.org"), r"label '-chat' may only hold letters"),
    (relay(domain="x" * 64 + ".org"), r"label 'x{64}' is longer than 63 bytes$"),
    (relay(domain="ü" * 60 + ".org"), r"^domain 'ü{60}.org': label 'ü{60}' is not IDNA: "),
    (relay(domain="☃.example"), r"^domain '☃.example': label '☃' is not IDNA: "),
    (
        relay(domain=".".join(["x" * 60] * 4) + ".abcdefghijklm"),
        r"^domain: the name x{60}\..* is longer than 253 bytes$",
    ),
    (
        # Fits on its own, but not under _adsp._domainkey.
        relay(domain=".".join(["x" * 60] * 4), dkim=[]),
        r"^domain: the name _adsp\._domainkey\.x{60}.* is longer than 253 bytes$",
    ),
    (
        relay(
            domain=".".join(["x" * 60] * 3) + ".org",
            dkim=[{"selector": "y" * 60, "public_key": KEY_A}],
        ),
        r"^dkim\[0\]\.selector: the name y{60}\._domainkey\..* is longer than 253 bytes$",
    ),
    (relay(ipv4="1.2.3"), r"^ipv4 '1.2.3' is not an IPv4 address$"),
    (relay(ipv4=["1.2.3.4", "1.2.3.400"]), r"^ipv4\[1\] '1.2.3.400' is not an IPv4 address$"),
    (relay(ipv4=["2001:db8::1"]), r"^ipv4\[0\] '2001:db8::1' is not an IPv4 address$"),
    (relay(ipv4=[16909060]), r"^ipv4\[0\] 16909060 is not an IPv4 address$"),
    (relay(ipv4={"a": 1}), r"^ipv4 must be a string or a list, got dict$"),
    (relay(ipv6="203.0.113.1"), r"^ipv6 '203.0.113.1' is not an IPv6 address$"),
    (relay(ipv6=["fe80::1%eth0"]), r"^ipv6\[0\] 'fe80::1%eth0' is not an IPv6 address$"),
    (relay(ipv6="::ffff:192.0.2.1"), r"^ipv6 '::ffff:192.0.2.1' is an IPv4-mapped, IPv4-compat"),
    (relay(ipv6=["::192.0.2.1"]), r"^ipv6\[0\] '::192.0.2.1' is an IPv4-mapped"),
    (relay(ipv6=["::1"]), r"^ipv6\[0\] '::1' is an IPv4-mapped, .* loopback or unspecified"),
    (relay(dkim={"selector": "a"}), r"^dkim must be a list, got dict$"),
    (relay(dkim=["a"]), r"^dkim\[0\] must be a dict with selector and public_key$"),
    (
        relay(dkim=[{"selector": "a", "public_key": KEY_A, "key": 1}]),
        r"^dkim\[0\]: unknown field key$",
    ),
    (
        relay(dkim=[{"selector": "a_b", "public_key": KEY_A}]),
        r"^dkim\[0\]\.selector 'a_b' is not a DKIM selector",
    ),
    (
        relay(dkim=[{"selector": "", "public_key": KEY_A}]),
        r"^dkim\[0\]\.selector '' is not a DKIM selector",
    ),
    (relay(dkim=[{"public_key": KEY_A}]), r"^dkim\[0\]\.selector None is not a DKIM selector"),
    (
        relay(
            dkim=[{"selector": "a", "public_key": KEY_A}, {"selector": "A", "public_key": KEY_B}]
        ),
        r"^dkim\[1\]\.selector 'a' is repeated$",
    ),
    (relay(dkim=[{"selector": "a"}]), r"^dkim\[0\]\.public_key is required"),
    (relay(dkim=[{"selector": "a", "public_key": "  "}]), r"^dkim\[0\]\.public_key is required"),
    (
        relay(
            dkim=[
                {"selector": "a", "public_key": KEY_A},
                {"selector": "b", "public_key": "not base64!"},
            ]
        ),
        r"^dkim\[1\]\.public_key is not base64$",
    ),
    (
        relay(dkim=[{"selector": "a", "public_key": "QUJDR"}]),
        r"^dkim\[0\]\.public_key is not base64$",
    ),
    (
        relay(dkim=[{"selector": "a", "public_key": "-----BEGIN PUBLIC KEY-----"}]),
        r"^dkim\[0\]\.public_key is not base64$",
    ),
    (relay(mta_sts_id=None), r"^mta_sts_id is required"),
    (relay(mta_sts_id="2024-06-01"), r"^mta_sts_id '2024-06-01' must be 1 to 32 letters"),
    (relay(mta_sts_id="x" * 33), r"^mta_sts_id 'x{33}' must be 1 to 32 letters"),
    (relay(mta_sts_id=True), r"^mta_sts_id must be a string, got bool$"),
    (relay(tls_mode="letsencrypt"), r"^tls_mode must be one of acme, self_signed, external"),
    (relay(caa_issuer="lets encrypt"), r"^caa_issuer 'lets encrypt' is not a domain name"),
    (relay(caa_issuer=["letsencrypt.org"]), r"^caa_issuer \['letsencrypt.org'\] is not a domain"),
    (relay(caa_accounturi="https://ca.example/1"), r"^caa_accounturi is given but caa_issuer"),
    (
        relay(caa_issuer="letsencrypt.org", caa_accounturi='https://x/"1'),
        r"^caa_accounturi 'https://x/\"1' is not a URI$",
    ),
    (
        relay(caa_issuer="letsencrypt.org", caa_accounturi="no uri"),
        r"^caa_accounturi 'no uri' is not a URI$",
    ),
    (relay(tlsrpt_rua="tlsrpt@example.org"), r"^tlsrpt_rua 'tlsrpt@example.org': 'tlsrpt@exa"),
    (relay(tlsrpt_rua="ftp://x.example/r"), r"is not a mailto: or https: URI"),
    (relay(tlsrpt_rua="mailto:a@b.example; x"), r"is not a mailto: or https: URI"),
    (relay(tlsrpt_rua="mailto:tl\u017f@example.org"), r"is not a mailto: or https: URI"),
    (relay(tlsrpt_rua=["mailto:a@b.example"]), r"^tlsrpt_rua must be a string, got list$"),
    (relay(ttl=-1), r"^ttl must be an integer from 0 to 2147483647, got -1$"),
    (relay(ttl=2**31), r"^ttl must be an integer from 0 to 2147483647, got 2147483648$"),
    (relay(ttl="1h"), r"^ttl must be an integer .*, got '1h'$"),
    (relay(ttl=True), r"^ttl must be an integer .*, got True$"),
    (relay(ttl=1.5), r"^ttl must be an integer .*, got 1.5$"),
]


@pytest.mark.parametrize(("data", "message"), BAD_INPUT, ids=[m for _unused, m in BAD_INPUT])
def test_bad_input_names_the_field(data, message):
    with pytest.raises(ZoneInputError, match=message):
        zone_records(data)
    with pytest.raises(ValueError, match=message):
        zone_file(data)
