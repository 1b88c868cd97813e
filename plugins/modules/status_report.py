# SPDX-License-Identifier: MIT
"""Documentation of chatmail.relay.status_report; the action plugin of that name does the work."""

from __future__ import annotations

DOCUMENTATION = r"""
module: status_report
author: chatmail.relay developers (@chatmail)
version_added: 0.2.0
short_description: Show a relay's checks as one table, warn on soft problems, fail on the others
description:
  - Formats the checks of one relay (playbooks/status.yml gathers them) as a table, one row per
    check with its level and detail, and shows it without C(-v), as M(ansible.builtin.debug)
    does.
  - Each check at level V(warn) becomes an Ansible warning naming the relay and the check. Any
    check at level V(fail) fails the task, and its message names every such check.
  - Runs on the controller and changes nothing.
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: It only reports.
  diff_mode:
    support: none
  platform:
    platforms: all
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
options:
  title:
    description: The first line of the table and the start of each warning and failure.
    type: str
    required: true
  checks:
    description: The checks, in the order of the table's rows.
    type: list
    elements: dict
    required: true
    suboptions:
      check:
        description: Its name, the first column.
        type: str
        required: true
      level:
        description: V(ok), V(warn) (a soft problem) or V(fail).
        type: str
        required: true
        choices: [ok, warn, fail]
      detail:
        description: What was found; a list gives one line each.
        type: raw
        default: ""
"""

EXAMPLES = r"""
- name: Report the relay's status
  chatmail.relay.status_report:
    title: chat.example.org
    checks:
      - check: services
        level: ok
        detail: 14 units active
      - check: certificate
        level: warn
        detail: chat.example.org, www.chat.example.org; expires in 9 days

# The table reads:
# chat.example.org
# services     ok    14 units active
# certificate  warn  chat.example.org, www.chat.example.org; expires in 9 days
"""

RETURN = r"""
table:
  description: The table, one line each.
  returned: success
  type: list
  elements: str
  sample: [chat.example.org, "services  ok    14 units active"]
problems:
  description: "C(check: detail) of every check at level V(fail)."
  returned: success
  type: list
  elements: str
  sample: ["services: chatmail-auth.service failed"]
msg:
  description: The problems, or that there are none and how many warnings.
  returned: always
  type: str
  sample: "chat.example.org: services: chatmail-auth.service failed"
"""
