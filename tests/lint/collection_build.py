"""Build, install and copy the collection as the lint tests need it.

Shared by test_collection.py (the build of the checkout installs), test_collection_contents.py
(what the tarball holds) and test_release.py (scripts/release in a copy).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def galaxy(root: Path = ROOT) -> dict[str, Any]:
    """galaxy.yml of the checkout ``root``."""
    return yaml.safe_load((root / "galaxy.yml").read_text())


def build(source: Path, output: Path) -> Path:
    """Build the collection in ``source`` into ``output``; return the tarball."""
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", "--output-path", output, source],
        check=True,
        capture_output=True,
        cwd=output,
    )
    return output / f"chatmail-relay-{galaxy(source)['version']}.tar.gz"


def install(tarball: Path, path: Path) -> Path:
    """Install ``tarball`` below ``path`` without its dependencies; return the collection."""
    command = [BIN / "ansible-galaxy", "collection", "install", "--offline", "--no-deps"]
    subprocess.run(
        [*command, "-p", path, tarball],
        check=True,
        capture_output=True,
        cwd=path.parent,  # away from ansible.cfg, where the checkout counts as installed
    )
    return path / "ansible_collections" / "chatmail" / "relay"


def files(tarball: Path) -> list[tarfile.TarInfo]:
    """The regular files in ``tarball``."""
    with tarfile.open(tarball) as tar:
        return [member for member in tar.getmembers() if member.isfile()]


def copy_working_tree(destination: Path) -> Path:
    """Copy what git would commit of the checkout (tracked and untracked files, not
    ignored ones) to ``destination``, symlinks as symlinks."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in sorted(set(filter(None, listed.split("\0")))):
        source = ROOT / name
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the working tree, not yet in git
        if not source.is_symlink() and source.is_dir():
            continue  # replaced a tracked symlink; git lists the files in it too
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return destination
