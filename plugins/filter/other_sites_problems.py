# SPDX-License-Identifier: MIT
"""The filter chatmail.relay.other_sites_problems (documentation beside it, in the .yml)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.chatmail.relay.plugins.plugin_utils import other_sites


def other_sites_problems(
    sites: Any, own_names: list[str], taken_ports: list[Any], name: str = "nginx_other_sites"
) -> list[str]:
    return other_sites.problems(sites, own_names, taken_ports, name)


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"other_sites_problems": other_sites_problems}
