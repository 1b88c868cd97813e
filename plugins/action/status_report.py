# SPDX-License-Identifier: MIT
"""The action chatmail.relay.status_report; its documentation is plugins/modules/status_report.py.

An action plugin: it only formats what earlier tasks found, on the controller, and its
warnings and failure are Ansible's own.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.chatmail.relay.plugins.plugin_utils import status_table

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "title": {"type": "str", "required": True},
    "checks": {"type": "list", "elements": "dict", "required": True},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True  # it only reports

    def run(
        self, tmp: str | None = None, task_vars: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            checks = status_table.parse_checks(args["checks"])
        except status_table.StatusInputError as exc:
            raise AnsibleActionFail(f"status_report: {exc}") from exc

        failures = status_table.problems(checks, "fail")
        soft = status_table.problems(checks, "warn")
        result.update(
            changed=False,
            table=status_table.render(args["title"], checks),
            problems=failures,
            # Shown like debug's output, without -v: the table is the point of the task.
            _ansible_verbose_always=True,
        )
        if soft:
            result["warnings"] = [
                *result.get("warnings", []),
                *(f"{args['title']}: {line}" for line in soft),
            ]
        if failures:
            result["failed"] = True
            result["msg"] = f"{args['title']}: " + "; ".join(failures)
        else:
            result["msg"] = f"{args['title']}: no problems" + (
                f", {len(soft)} warning{'s' if len(soft) != 1 else ''}" if soft else ""
            )
        return result
