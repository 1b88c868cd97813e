"""The app-version hints check: every problem named by its field, nothing converted."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ansible_collections.chatmail.relay.plugins.plugin_utils import appversions

DEFAULTS = (
    Path(__file__).resolve().parents[4] / "roles" / "relay_services" / "defaults" / "main.yml"
)


def default_document() -> dict:
    return yaml.safe_load(DEFAULTS.read_text())["relay_services_appversions"]


def with_change(path: list, value: object) -> dict:
    document = copy.deepcopy(default_document())
    *parents, last = path
    target = document
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return document


def test_the_role_default_is_the_reference_document_and_passes() -> None:
    document = default_document()
    assert appversions.problems(document) == []
    [client] = document["clients"]
    assert client["clientId"] == "deltachat"
    assert client["sources"] == [
        {
            "sourceId": "gplay",
            "versionInteger": 754,
            "versionString": "2.57.0",
            "downloadUrl": "https://github.com/deltachat/deltachat-android/releases/download/"
            "v2.57.0/deltachat-gplay-release-2.57.0.apk",
        }
    ]


SOURCE = ["clients", 0, "sources", 0]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            [*SOURCE, "versionInteger"],
            "12",
            "x.clients[0].sources[0].versionInteger must be an integer, not a string '12'",
        ),
        ([*SOURCE, "versionInteger"], True, "versionInteger must be an integer, not a boolean"),
        ([*SOURCE, "versionInteger"], 12.0, "versionInteger must be an integer, not a number"),
        ([*SOURCE, "versionInteger"], 2**32, "versionInteger must be between 0 and 4294967295"),
        ([*SOURCE, "versionInteger"], -1, "versionInteger must be between 0 and 4294967295"),
        ([*SOURCE, "downloadUrl"], KeyError, "x.clients[0].sources[0].downloadUrl is missing"),
        ([*SOURCE, "versionString"], 2, "versionString must be a string, not an integer 2"),
        ([*SOURCE, "sourceId"], "", "x.clients[0].sources[0].sourceId must not be empty"),
        ([*SOURCE, "url"], "https://x", "x.clients[0].sources[0].url is not a known key"),
        (["clients", 0, "clientId"], None, "x.clients[0].clientId must be a string, not null"),
        (["clients", 0, "sources"], [], "x.clients[0].sources must not be empty"),
        (["clients", 0, "sources"], {}, "x.clients[0].sources must be a list, not a mapping"),
        (["clients"], [], "x.clients must not be empty"),
        (["clients"], KeyError, "x.clients is missing"),
        (["version"], 1, "x.version is not a known key"),
    ],
)
def test_each_problem_names_its_field(path: list, value: object, message: str) -> None:
    found = appversions.problems(with_change(path, value), "x")
    assert len(found) == 1 and message in found[0], found


def test_ids_are_unique() -> None:
    document = default_document()
    client = document["clients"][0]
    client["sources"].append(dict(client["sources"][0]))
    document["clients"].append(copy.deepcopy(client))
    assert appversions.problems(document, "x") == [
        "x.clients[0].sources has sourceId 'gplay' twice",
        "x.clients[1].sources has sourceId 'gplay' twice",
        "x.clients has clientId 'deltachat' twice",
    ]


@pytest.mark.parametrize("document", [None, [], "clients", 1])
def test_a_document_that_is_no_mapping(document: object) -> None:
    [problem] = appversions.problems(document, "x")
    assert problem.startswith("x must be a mapping, not ")
