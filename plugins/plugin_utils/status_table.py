# SPDX-License-Identifier: MIT
"""A relay's status as one table, and the problems it names: pure helpers.

The action chatmail.relay.status_report wraps these. A check is a dict with ``check``
(its name), ``level`` (``ok``, ``warn`` or ``fail``) and ``detail`` (a line, or a list of
lines shown one under the other).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LEVELS = ("ok", "warn", "fail")


class StatusInputError(ValueError):
    """A check is malformed; the message names which."""


def parse_checks(checks: Any) -> list[dict[str, Any]]:
    """The checks with their details as lists of lines, refusing malformed ones."""
    if not isinstance(checks, Sequence) or isinstance(checks, str):
        raise StatusInputError(f"checks must be a list, got {type(checks).__name__}")
    parsed = []
    for index, check in enumerate(checks):
        where = f"checks[{index}]"
        if not isinstance(check, Mapping):
            raise StatusInputError(f"{where} must be a dict with check, level and detail")
        if not isinstance(check.get("check"), str) or not check["check"]:
            raise StatusInputError(f"{where}.check must be a non-empty string")
        if check.get("level") not in LEVELS:
            raise StatusInputError(
                f"{where}.level is {check.get('level')!r}, not one of {', '.join(LEVELS)}"
            )
        detail = check.get("detail", "")
        lines = [detail] if isinstance(detail, str) else list(detail)
        if not all(isinstance(line, str) for line in lines):
            raise StatusInputError(f"{where}.detail must be a string or a list of strings")
        parsed.append({"check": check["check"], "level": check["level"], "detail": lines or [""]})
    return parsed


def render(title: str, checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table: a title line, then one row per check and detail line."""
    width = max((len(check["check"]) for check in checks), default=0)
    lines = [title]
    for check in checks:
        for number, detail in enumerate(check["detail"]):
            name, level = (check["check"], check["level"]) if number == 0 else ("", "")
            lines.append(f"{name:<{width}}  {level:<4}  {detail}".rstrip())
    return lines


def problems(checks: Sequence[Mapping[str, Any]], level: str) -> list[str]:
    """``check: detail`` of every check at ``level``, details joined by ``; ``."""
    return [
        f"{check['check']}: {'; '.join(check['detail'])}"
        for check in checks
        if check["level"] == level
    ]
