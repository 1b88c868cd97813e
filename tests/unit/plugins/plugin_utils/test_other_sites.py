"""The check of the operator's other web sites: each problem names its item and what is wrong."""

from __future__ import annotations

import pytest
from ansible_collections.chatmail.relay.plugins.plugin_utils import other_sites

OWN = ["chat.example.org", "www.chat.example.org", "mta-sts.chat.example.org"]
TAKEN = [25, 80, 443, 8443, "3478"]


def check(*sites: dict) -> list[str]:
    return other_sites.problems(list(sites), OWN, TAKEN)


@pytest.mark.parametrize(
    "site",
    [
        {"names": ["www.example.org", "example.org"], "backend": "127.0.0.1:9443"},
        {"names": ["shop.example.org"], "backend": "web.internal:443", "proxy_protocol": True},
        {"names": ["example.net"], "backend": "[2001:db8::1]:443", "http_backend": "10.0.0.2:80"},
        {"names": ["_test.example.net"], "backend": "localhost:8444", "http_backend": ""},
    ],
)
def test_good_sites_pass(site):
    assert check(site) == []


@pytest.mark.parametrize(
    ("site", "message"),
    [
        (
            {"names": ["WWW.example.org"], "backend": "127.0.0.1:9443"},
            "nginx_other_sites[0] (WWW.example.org): name 'WWW.example.org' is not a lower-case"
            " host name",
        ),
        ({"names": [], "backend": "127.0.0.1:9443"}, "nginx_other_sites[0]: names must be"),
        ({"names": ["localhost"], "backend": "127.0.0.1:9443"}, "'localhost' is not a lower-case"),
        (
            {"names": ["example.org", "www.chat.example.org"], "backend": "127.0.0.1:9443"},
            "nginx_other_sites[0] (example.org): name 'www.chat.example.org' is one of the"
            " relay's own names",
        ),
        (
            {"names": ["example.org"], "backend": "127.0.0.1"},
            "nginx_other_sites[0] (example.org): backend '127.0.0.1' is not host:port",
        ),
        ({"names": ["example.org"], "backend": "127.0.0.1:65536"}, "is not host:port"),
        ({"names": ["example.org"], "backend": "300.0.0.1:443"}, "is not host:port"),
        ({"names": ["example.org"], "backend": "https://web:443"}, "is not host:port"),
        ({"names": ["example.org"], "backend": "2001:db8::1:443"}, "is not host:port"),
        ({"names": ["example.org"], "backend": 9443}, "backend must be host:port, not 9443"),
        (
            {"names": ["example.org"], "backend": "127.0.0.1:8443"},
            "nginx_other_sites[0] (example.org): backend '127.0.0.1:8443' is on loopback port"
            " 8443, which the relay uses (it uses 25, 80, 443, 3478, 8443)",
        ),
        ({"names": ["example.org"], "backend": "[::1]:443"}, "on loopback port 443"),
        ({"names": ["example.org"], "backend": "localhost:3478"}, "on loopback port 3478"),
        (
            {"names": ["example.org"], "backend": "web:443", "http_backend": "127.0.0.1:80"},
            "http_backend '127.0.0.1:80' is on loopback port 80",
        ),
        ("www.example.org", "nginx_other_sites[0] must be a mapping with names and backend"),
    ],
)
def test_a_bad_site_is_named_with_its_problem(site, message):
    [problem] = check(site)
    assert message in problem


def test_a_backend_elsewhere_may_use_any_port():
    assert check({"names": ["example.org"], "backend": "10.0.0.2:443"}) == []


def test_a_name_in_two_sites_is_reported_at_the_second():
    first = {"names": ["example.org"], "backend": "10.0.0.2:443"}
    second = {"names": ["www.example.org", "example.org"], "backend": "10.0.0.3:443"}
    assert check(first, second) == [
        "nginx_other_sites[1] (www.example.org): name 'example.org' is already in"
        " nginx_other_sites[0]"
    ]


def test_every_problem_is_reported():
    site = {"names": ["Bad", "chat.example.org"], "backend": "web", "http_backend": "x:0"}
    assert len(check(site)) == 4


def test_not_a_list():
    assert other_sites.problems({"names": []}, OWN, TAKEN) == [
        "nginx_other_sites must be a list of sites, not {'names': []}"
    ]
