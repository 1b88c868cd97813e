"""The collection builds into a tarball that installs and exposes its content."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_build_and_install(tmp_path):
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", "--output-path", tmp_path, ROOT],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    tarball = tmp_path / f"chatmail-relay-{galaxy['version']}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "roles/base/tasks/main.yml" in names
    assert "playbooks/site.yml" in names
    assert not [n for n in names if n.startswith(("tests/", "molecule/", ".venv", ".collections"))]

    subprocess.run(
        [
            BIN / "ansible-galaxy",
            "collection",
            "install",
            "--offline",
            "--no-deps",
            "-p",
            tmp_path / "installed",
            tarball,
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,  # away from ansible.cfg, where the checkout counts as installed
    )
    installed = tmp_path / "installed" / "ansible_collections" / "chatmail" / "relay"
    assert (installed / "MANIFEST.json").is_file()
    assert (installed / "roles" / "base" / "meta" / "argument_specs.yml").is_file()


def test_dependencies_match_requirements():
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    requirements = yaml.safe_load((ROOT / "requirements.yml").read_text())
    listed = {c["name"]: c["version"] for c in requirements["collections"]}
    assert listed == galaxy["dependencies"]
