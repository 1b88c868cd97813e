# SPDX-License-Identifier: MIT
from __future__ import annotations

DOCUMENTATION = r"""
name: secret
author: chatmail.relay developers (@chatmail)
version_added: 0.1.0
short_description: Create a secret once per host and name on the controller, then reuse it
description:
  - Returns the secret called O(_terms) of the host O(host). The first call creates it from
    the system's cryptographically secure random generator and stores it on the controller;
    every later call, in this run or any later one, returns the stored value.
  - The store keeps one file per secret, C(<store>/<host>/<name>), with mode C(0600) in
    directories with mode C(0700). Creation takes an exclusive lock and renames a complete
    temporary file into place, so parallel forks agree on one value.
  - To use a value made elsewhere (a password a provider gave you, a key from another tool),
    write it to C(<store>/<host>/<name>) before the first run, with mode C(0600). The lookup
    never overwrites an existing file; a final newline is not part of the secret.
  - To replace a secret, delete its file; the next run creates a new one.
options:
  _terms:
    description:
      - Names of the secrets, for example V(turn) or V(metrics_password).
      - A name may not begin with C(.) and may not contain C(/), C(\) or control characters.
    type: list
    elements: str
    required: true
  host:
    description:
      - The host the secret belongs to; a directory of that name holds its secrets.
      - Same rules as for names.
    type: str
    vars:
      - name: inventory_hostname
  store:
    description:
      - The directory that holds the secrets of all hosts.
      - Defaults to C({{ inventory_dir }}/secrets), the directory C(secrets) in the directory
        of the inventory that defines the host. Keep it out of version control, or encrypted.
      - C(~) is expanded; a relative path is taken from the directory Ansible runs in, so
        prefer an absolute one such as C({{ playbook_dir }}/../secrets).
    type: path
  length:
    description: Number of characters of a new secret.
    type: int
    default: 32
  alphabet:
    description:
      - Characters a new secret is drawn from.
      - Either a comma-separated list of names of Python's C(string) constants, V(ascii_letters),
        V(ascii_lowercase), V(ascii_uppercase), V(digits), V(hexdigits), V(octdigits) and
        V(punctuation), or, if any part is not such a name, the literal characters to use.
      - Whitespace and control characters are refused.
    type: str
    default: ascii_letters,digits
  hash:
    description:
      - Return a hash of the secret instead of the secret itself.
      - V(sha512_crypt) returns C({SHA512-CRYPT}$6$<salt>$<hash>), ready for a Dovecot passdb.
        The salt is stored beside the secret, so the string stays the same on every run.
      - Needs the Python library C(passlib) on the controller.
    type: str
    choices:
      - sha512_crypt
notes:
  - Lookups run on the controller as the user running Ansible; C(become) does not apply.
  - The values are secrets; set C(no_log) on tasks that pass them.
  - Changing O(length) or O(alphabet) does not change a secret that already exists.
  - When the inventory is a directory, Ansible parses every file below it as inventory,
    the default store included, and would make secrets into host names. Exclude the store
    in C(ansible.cfg) (C([inventory] ignore_patterns = ^secrets$), as this collection's
    own C(ansible.cfg) does) or set O(store) to a directory outside the inventory.
seealso:
  - plugin: ansible.builtin.password
    plugin_type: lookup
"""

EXAMPLES = r"""
- name: Configure the TURN server with this host's shared secret
  ansible.builtin.template:
    src: turnserver.conf.j2
    dest: /etc/turnserver.conf
    mode: "0600"
  vars:
    turn_secret: "{{ lookup('chatmail.relay.secret', 'turn', host=inventory_hostname) }}"
  no_log: true

- name: Store a Dovecot-ready hash of a password, stable across runs
  ansible.builtin.copy:
    dest: /etc/dovecot/metrics.passwd
    content: >-
      metrics:{{ lookup('chatmail.relay.secret', 'metrics', hash='sha512_crypt') }}
    mode: "0600"
  no_log: true

- name: A longer secret with punctuation, kept in a store outside the inventory
  ansible.builtin.set_fact:
    relay_api_token: >-
      {{ lookup('chatmail.relay.secret', 'api_token', length=48,
                alphabet='ascii_letters,digits,punctuation',
                store='~/.local/share/chatmail/secrets') }}
  no_log: true

- name: Several secrets at once, as a list
  ansible.builtin.debug:
    msg: "{{ query('chatmail.relay.secret', 'turn', 'metrics') | length }} secrets"
"""

RETURN = r"""
_raw:
  description:
    - One value per name in O(_terms), the stored secret or, with O(hash), its hash.
  type: list
  elements: str
"""

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display
from ansible_collections.chatmail.relay.plugins.plugin_utils.secret_store import (
    SecretStoreError,
    alphabet,
    check_length,
    check_name,
    loosely_readable,
    secret,
    sha512_crypt,
)

display = Display()


class LookupModule(LookupBase):
    def run(
        self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[str]:
        self.set_options(var_options=variables, direct=kwargs)
        try:
            return self._secrets(terms, variables or {})
        except SecretStoreError as exc:
            raise AnsibleLookupError(f"chatmail.relay.secret: {exc}") from exc

    def _secrets(self, terms: list[Any], variables: dict[str, Any]) -> list[str]:
        host = check_name(self.get_option("host"), "host")
        store = self._store(variables)
        length = check_length(self.get_option("length"))
        chars = alphabet(self.get_option("alphabet"))
        scheme = self.get_option("hash")
        values = []
        for term in terms:
            name = check_name(term, "name")
            value = secret(store, host, name, length, chars)
            if loosely_readable(store, host, name):
                display.warning(
                    f"chatmail.relay.secret: {store / host / name} is readable by group or"
                    " others; run chmod 0600 on it"
                )
            values.append(sha512_crypt(store, host, name, value) if scheme else value)
        return values

    def _store(self, variables: dict[str, Any]) -> Path:
        store = self.get_option("store")
        if store:
            return Path(store)
        inventory_dir = variables.get("inventory_dir")
        if not inventory_dir:
            raise SecretStoreError(
                "store is not set and the host has no inventory_dir (an implicit localhost?);"
                " pass store=<directory>"
            )
        return Path(inventory_dir) / "secrets"
