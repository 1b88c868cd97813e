# SPDX-License-Identifier: MIT
"""The filter chatmail.relay.appversions_problems (documentation beside it, in the .yml)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.chatmail.relay.plugins.plugin_utils import appversions


def appversions_problems(document: Any, name: str = "appversions") -> list[str]:
    return appversions.problems(document, name)


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"appversions_problems": appversions_problems}
