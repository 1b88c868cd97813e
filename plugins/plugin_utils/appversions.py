# SPDX-License-Identifier: MIT
"""The app-version hints document (SPEC section 12), checked as strictly as a client reads it.

A Delta Chat client drops the whole document when one value has the wrong type, so the
check does not convert anything: "12" is not the integer 12.

    {"clients": [{"clientId": str, "sources": [{"sourceId": str, "versionInteger": u32,
                                                "versionString": str, "downloadUrl": str}]}]}

Every key is required, no other key is allowed, lists are not empty, and clientId and
sourceId (within its client) are unique.
"""

from __future__ import annotations

from typing import Any

MAX_U32 = 2**32 - 1
CLIENT_KEYS = ("clientId", "sources")
SOURCE_KEYS = ("sourceId", "versionInteger", "versionString", "downloadUrl")


# Checked in this order: a bool is an int too. Ansible hands over subclasses (its
# tagged strings and such), so isinstance, not the exact type.
_TYPE_NAMES = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a mapping"),
    (type(None), "null"),
)


def _type_name(value: Any) -> str:
    for kind, name in _TYPE_NAMES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _shown(value: Any) -> str:
    """The value as Python would write it, whatever subclass carries it."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return repr(kind(value))
    return repr(value)


def _keys(where: str, value: Any, keys: tuple[str, ...]) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where} must be a mapping, not {_type_name(value)}"]
    problems = [f"{where}.{key} is missing" for key in keys if key not in value]
    problems += [f"{where}.{key} is not a known key" for key in value if key not in keys]
    return problems


def _text(where: str, value: Any) -> list[str]:
    if isinstance(value, str) and value.strip():
        return []
    if isinstance(value, str):
        return [f"{where} must not be empty"]
    return [f"{where} must be a string, not {_type_name(value)} {_shown(value)}"]


def _list(where: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        return [f"{where} must be a list, not {_type_name(value)}"]
    return [] if value else [f"{where} must not be empty"]


def _source(where: str, source: Any) -> list[str]:
    problems = _keys(where, source, SOURCE_KEYS)
    if problems:
        return problems
    for key in ("sourceId", "versionString", "downloadUrl"):
        problems += _text(f"{where}.{key}", source[key])
    number = source["versionInteger"]
    if isinstance(number, bool) or not isinstance(number, int):
        problems.append(
            f"{where}.versionInteger must be an integer, not {_type_name(number)} {_shown(number)}"
        )
    elif not 0 <= number <= MAX_U32:
        problems.append(f"{where}.versionInteger must be between 0 and {MAX_U32}, not {number}")
    return problems


def _unique(where: str, items: list[Any], key: str) -> list[str]:
    seen: set[str] = set()
    problems = []
    for item in items:
        name = item.get(key) if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in seen:
                problems.append(f"{where} has {key} {name!r} twice")
            seen.add(name)
    return problems


def problems(document: Any, where: str = "appversions") -> list[str]:
    """Every reason a client would drop the document, each naming its field; [] if none."""
    found = _keys(where, document, ("clients",))
    if found:
        return found
    clients = document["clients"]
    found = _list(f"{where}.clients", clients)
    if found:
        return found
    for index, client in enumerate(clients):
        place = f"{where}.clients[{index}]"
        client_problems = _keys(place, client, CLIENT_KEYS)
        if not client_problems:
            client_problems = _text(f"{place}.clientId", client["clientId"])
            sources = client["sources"]
            listed = _list(f"{place}.sources", sources)
            client_problems += listed
            if not listed:
                for number, source in enumerate(sources):
                    client_problems += _source(f"{place}.sources[{number}]", source)
                client_problems += _unique(f"{place}.sources", sources, "sourceId")
        found += client_problems
    return found + _unique(f"{where}.clients", clients, "clientId")
