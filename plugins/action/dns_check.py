# SPDX-License-Identifier: MIT
"""The action chatmail.relay.dns_check; its documentation is plugins/modules/dns_check.py.

An action plugin rather than a module so that it always runs on the controller, where
the pure helper in plugin_utils lives (modules can only take module_utils with them).
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.chatmail.relay.plugins.plugin_utils import dns_check

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "records": {"type": "list", "elements": "dict", "required": True},
    "nameservers": {"type": "list", "elements": "str"},
    "zone": {"type": "str"},
    "port": {"type": "int", "default": dns_check.DEFAULT_PORT},
    "timeout": {"type": "float", "default": dns_check.DEFAULT_TIMEOUT},
    "recursion": {"type": "bool", "default": False},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True  # it only reads

    def run(
        self, tmp: str | None = None, task_vars: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if dns_check.DNSPYTHON_MISSING is not None:
            # dnspython is the controller's to install (requirements.txt); say so instead
            # of "No module named 'dns'".
            raise AnsibleError(
                "chatmail.relay.dns_check needs the Python package dnspython on the controller:"
                " pip install dnspython"
            ) from None
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            records = dns_check.parse_records(args["records"])
            ask = dns_check.asker(args["port"], args["timeout"], args["recursion"])
            if args["nameservers"]:
                nameservers = dns_check.given_nameservers(args["nameservers"])
            else:
                nameservers = dns_check.authoritative_nameservers(records, args["zone"])
            report = dns_check.check(records, nameservers, ask)
        except (dns_check.DnsCheckInputError, dns_check.DnsQueryError) as exc:
            raise AnsibleActionFail(f"dns_check: {exc}") from exc

        result.update(
            changed=False,
            nameservers=[server.label for server in nameservers],
            ok=report["ok"],
            missing=report["missing"],
            wrong=report["wrong"],
            failed=report["failed"],
            msg=report["msg"],
        )
        if report["warnings"]:
            result["warnings"] = [*result.get("warnings", []), *report["warnings"]]
        return result
