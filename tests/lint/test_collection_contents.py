"""The tarball holds the collection's content and nothing else a checkout holds.

galaxy.yml's `manifest` is an allow-list: a copy of the working tree gets the files a
checkout gathers (the controller's secrets, caches, test output) planted into it, and
none of them may reach the tarball built from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from collection_build import build, copy_working_tree, files

PLANTED = [
    "inventories/example/secrets/chat.example.org/dkim-dkim.key",
    "inventories/local/secrets/x",
    "roles/base/files/secrets/chat.example.org/turn",
    ".ansible/x",
    ".hypothesis/x",
    ".coverage",
    "roles/base/__pycache__/x.pyc",
    "build/chatmail-relay-0.0.1.tar.gz",
]
# Each top-level entry of the tarball; galaxy.yml says why each is there.
SHIPPED = {
    "CHANGELOG.md",
    "FILES.json",
    "LICENSE",
    "MANIFEST.json",
    "README.md",
    "changelogs",
    # Example alert rules and dashboard for the metrics (docs/monitoring).
    "docs",
    "inventories",
    "meta",
    "playbooks",
    "plugins",
    "requirements.txt",
    "requirements.yml",
    "roles",
}


def test_the_tarball_ships_only_the_content(tmp_path):
    tree = copy_working_tree(tmp_path / "tree")
    for name in PLANTED:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("planted by the test\n")
    output = tmp_path / "output"
    output.mkdir()

    tarball = build(tree, output)
    shipped = files(tarball)
    names = {member.name for member in shipped}
    top = sorted({name.split("/", 1)[0] for name in names})
    print(f"{tarball.name}: {tarball.stat().st_size} bytes, {len(shipped)} files; top level:")
    print("  " + "  ".join(top))

    assert not names & set(PLANTED)
    assert not [name for name in names if "secrets" in name]
    assert set(top) == SHIPPED
    assert {name.split("/")[1] for name in names if name.startswith("inventories/")} == {"example"}
    assert {"changelogs/changelog.yaml", "playbooks/site.yml", "meta/runtime.yml"} <= names
