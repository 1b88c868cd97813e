"""The filters chatmail.relay.zone_records and chatmail.relay.zone_file in Ansible."""

from __future__ import annotations

import re

import dns.zone
import pytest
from ansible.errors import AnsibleError, AnsibleFilterError
from ansible.plugins.loader import filter_loader
from ansible.template import Templar, trust_as_template
from ansible_collections.chatmail.relay.plugins.filter.zone import FilterModule


def render(expression: str, relay: object) -> object:
    templar = Templar(loader=None, variables={"relay": relay})
    return templar.template(trust_as_template(expression))


RELAY = {
    "domain": "bücher.example",
    "ipv6": "2001:db8::1",
    "dkim": [{"selector": "opendkim", "public_key": "QUJDRA=="}],
    "mta_sts_id": "1",
}


def test_the_module_exposes_both_filters():
    filters = FilterModule().filters()
    assert sorted(filters) == ["zone_file", "zone_records"]
    assert filters["zone_records"].__name__ == "zone_records"
    assert "sorted" in filters["zone_records"].__doc__


def test_ansible_finds_the_filters_by_their_full_names():
    for name in ("chatmail.relay.zone_records", "chatmail.relay.zone_file"):
        assert filter_loader.get(name) is not None, name


def test_zone_records_in_a_template():
    records = render("{{ relay | chatmail.relay.zone_records }}", RELAY)
    assert records == FilterModule().filters()["zone_records"](RELAY)
    assert {"name": "xn--bcher-kva.example.", "ttl": 3600, "type": "AAAA",
            "value": "2001:db8::1", "required": True} in records  # fmt: skip
    required = render(
        "{{ relay | chatmail.relay.zone_records | selectattr('required') | map(attribute='type')"
        " | unique | sort }}",
        RELAY,
    )
    assert required == ["AAAA", "CNAME", "MX", "TXT"]


def test_zone_file_in_a_template_parses():
    text = render("{{ relay | chatmail.relay.zone_file }}", RELAY)
    zone = dns.zone.from_text(text, relativize=False, check_origin=False)
    assert zone.origin.to_text() == "xn--bcher-kva.example."
    records = FilterModule().filters()["zone_records"](RELAY)
    assert sum(len(rdataset) for _unused, rdataset in zone.iterate_rdatasets()) == len(records)


@pytest.mark.parametrize("name", ["zone_records", "zone_file"])
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**RELAY, "domain": ""}, "domain is required"),
        (
            {**RELAY, "dkim": [*RELAY["dkim"], {"selector": "new", "public_key": "%%"}]},
            "dkim[1].public_key is not base64",
        ),
        ({**RELAY, "ipv4": "300.1.1.1"}, "ipv4 '300.1.1.1' is not an IPv4 address"),
        ({**RELAY, "ttl": "soon"}, "ttl must be an integer from 0 to 2147483647, got 'soon'"),
        ("chat.example.org", "input must be a dict, got str"),
    ],
)
def test_bad_input_fails_with_the_filter_and_field_named(name, data, message):
    with pytest.raises(AnsibleFilterError) as error:
        FilterModule().filters()[name](data)
    assert error.value.message == f"{name}: {message}"

    with pytest.raises(AnsibleError, match=re.escape(f"{name}: {message}")):
        render(f"{{{{ relay | chatmail.relay.{name} }}}}", data)
