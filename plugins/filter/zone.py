# SPDX-License-Identifier: MIT
"""The filters chatmail.relay.zone_records and chatmail.relay.zone_file.

Their documentation lives beside this file in zone_records.yml and zone_file.yml, the
form ansible-doc reads for a file that holds several filters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.chatmail.relay.plugins.plugin_utils import dns_zone


def _reporting(name: str, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(data: Any) -> Any:
        try:
            return function(data)
        except dns_zone.ZoneInputError as exc:
            raise AnsibleFilterError(f"{name}: {exc}") from exc

    run.__name__ = name
    run.__doc__ = function.__doc__
    return run


class FilterModule:
    def filters(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "zone_records": _reporting("zone_records", dns_zone.zone_records),
            "zone_file": _reporting("zone_file", dns_zone.zone_file),
        }
