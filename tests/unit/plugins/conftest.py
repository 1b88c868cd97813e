"""Make the collection importable as ansible_collections.chatmail.relay in plugin tests.

The checkout is the collection: .collections/ansible_collections/chatmail/relay links to
the repository root. Ansible's collection loader, pointed at .collections, resolves the
plugins' own ``ansible_collections...`` imports and lets the lookup loader find them.
"""

from __future__ import annotations

from pathlib import Path

from ansible.plugins.loader import init_plugin_loader

ROOT = Path(__file__).resolve().parents[3]
COLLECTIONS = ROOT / ".collections"

init_plugin_loader([str(COLLECTIONS)])
