"""The table and problems of chatmail.relay.status_report."""

from __future__ import annotations

import pytest
from ansible_collections.chatmail.relay.plugins.plugin_utils import status_table

CHECKS = [
    {"check": "units", "level": "fail", "detail": "opendkim.service failed"},
    {"check": "deferred", "level": "warn", "detail": ["header", "nowhere.test  1  2m  refused"]},
    {"check": "dns", "level": "ok", "detail": "all served"},
]


def test_the_table_has_a_row_per_check_and_detail_line():
    checks = status_table.parse_checks(CHECKS)
    assert status_table.render("relay1.test", checks) == [
        "relay1.test",
        "units     fail  opendkim.service failed",
        "deferred  warn  header",
        "                nowhere.test  1  2m  refused",
        "dns       ok    all served",
    ]


def test_problems_are_named_by_check_per_level():
    checks = status_table.parse_checks(CHECKS)
    assert status_table.problems(checks, "fail") == ["units: opendkim.service failed"]
    assert status_table.problems(checks, "warn") == [
        "deferred: header; nowhere.test  1  2m  refused"
    ]


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ("units", "checks must be a list"),
        ([{"check": "units", "level": "bad"}], r"checks\[0\].level is 'bad'"),
        ([{"level": "ok"}], r"checks\[0\].check must be a non-empty string"),
        ([{"check": "x", "level": "ok", "detail": [1]}], r"checks\[0\].detail must be"),
    ],
)
def test_malformed_checks_are_refused_naming_them(checks, message):
    with pytest.raises(status_table.StatusInputError, match=message):
        status_table.parse_checks(checks)
