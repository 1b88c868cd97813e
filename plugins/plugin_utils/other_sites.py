# SPDX-License-Identifier: MIT
"""The operator's other web sites behind the relay's port 443 (role nginx, nginx_other_sites).

    [{"names": [str, ...], "backend": "host:port", "proxy_protocol": bool,
      "http_backend": "host:port" or ""}]

Each problem names the item by its index and first name and says what is wrong:
a name that is not a lower-case host name, one of the relay's own names or a name
of an earlier item; a backend that is not host:port (IPv4, [IPv6] or a host name,
port 1-65535); a backend on loopback that takes a port the relay uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOST_NAME = re.compile(rf"(?=.{{1,253}}$)_?{_LABEL}(\.{_LABEL})+")
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_BACKEND_HOST = (
    rf"(?P<ipv4>{_OCTET}(\.{_OCTET}){{3}})"
    r"|\[(?P<ipv6>[0-9a-f:.]*:[0-9a-f:.]*)\]"
    rf"|(?P<name>{_LABEL}(\.{_LABEL})*)"
)
BACKEND = re.compile(rf"(?:{_BACKEND_HOST}):(?P<port>[1-9][0-9]{{0,4}})")


def _is_loopback(match: re.Match[str]) -> bool:
    return (
        (match["ipv4"] or "").startswith("127.")
        or match["ipv6"] in ("::1", "0:0:0:0:0:0:0:1")
        or match["name"] == "localhost"
    )


def _backend(where: str, key: str, value: Any, taken_ports: set[int]) -> list[str]:
    if not isinstance(value, str):
        return [f"{where}: {key} must be host:port, not {value!r}"]
    match = BACKEND.fullmatch(value)
    # A "name" of digits and dots is a mistyped IPv4 address.
    numeric = match is not None and (match["name"] or "").replace(".", "").isdigit()
    if match is None or numeric or int(match["port"]) > 65535:
        return [
            f"{where}: {key} {value!r} is not host:port (an IPv4 address, an IPv6 address in"
            " brackets or a lower-case host name, and a port 1-65535)"
        ]
    port = int(match["port"])
    if _is_loopback(match) and port in taken_ports:
        return [
            f"{where}: {key} {value!r} is on loopback port {port}, which the relay uses"
            f" (it uses {', '.join(str(port) for port in sorted(taken_ports))})"
        ]
    return []


def problems(
    sites: Any,
    own_names: Iterable[str],
    taken_ports: Iterable[Any],
    where: str = "nginx_other_sites",
) -> list[str]:
    """Every problem of the sites, each naming its item; [] if there is none."""
    if not isinstance(sites, list):
        return [f"{where} must be a list of sites, not {sites!r}"]
    own = set(own_names)
    taken = {int(port) for port in taken_ports}
    claimed: dict[str, str] = {}
    found = []
    for index, site in enumerate(sites):
        if not isinstance(site, dict):
            found.append(f"{where}[{index}] must be a mapping with names and backend, not {site!r}")
            continue
        names = site.get("names")
        first = names[0] if isinstance(names, list) and names else None
        place = f"{where}[{index}]" + (f" ({first})" if isinstance(first, str) else "")
        if not isinstance(names, list) or not names:
            found.append(f"{place}: names must be a non-empty list of host names")
            names = []
        for name in names:
            if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
                found.append(f"{place}: name {name!r} is not a lower-case host name")
            elif name in own:
                found.append(f"{place}: name {name!r} is one of the relay's own names")
            elif name in claimed:
                found.append(f"{place}: name {name!r} is already in {claimed[name]}")
            else:
                claimed[name] = f"{where}[{index}]"
        found += _backend(place, "backend", site.get("backend"), taken)
        if site.get("http_backend"):
            found += _backend(place, "http_backend", site["http_backend"], taken)
    return found
