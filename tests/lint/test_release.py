"""scripts/release --dry-run makes the release in a clone and leaves the repository alone.

The repository is a copy of this working tree committed on a fresh main (this
checkout may have changes, and is never released from a test); its .venv is this one's.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from collection_build import ROOT, copy_working_tree, galaxy

FRAGMENT = "---\nminor_changes:\n  - The release test's change.\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository on main holding this working tree and one changelog fragment."""
    repo = copy_working_tree(tmp_path / "repo")
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "config", "user.name", "Release Test")
    git(repo, "config", "user.email", "release-test@example.org")
    (repo / ".venv").symlink_to(ROOT / ".venv")
    (repo / ".git" / "info" / "exclude").write_text(".venv\n")
    (repo / "changelogs" / "fragments" / "release-test.yml").write_text(FRAGMENT)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "The working tree")
    return repo


def release(repo: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    temporary = tmp_path / "tmp"
    temporary.mkdir(exist_ok=True)
    return subprocess.run(
        [repo / "scripts" / "release", *args],
        cwd=repo,
        env={**os.environ, "TMPDIR": str(temporary)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_dry_run_releases_in_a_clone_only(repo, tmp_path):
    before = git(repo, "rev-parse", "HEAD")
    version = "0.2.0"
    assert galaxy(repo)["version"] == "0.1.0"

    result = release(repo, tmp_path, "--dry-run", version)
    assert result.returncode == 0, result.stdout + result.stderr
    clone = Path(re.search(r"^Dry run in (\S+)", result.stdout, re.MULTILINE).group(1))
    assert clone.parent == tmp_path / "tmp"

    assert git(clone, "log", "-1", "--format=%s") == f"Release {version}"
    assert git(clone, "cat-file", "-t", version) == "tag"  # annotated
    assert git(clone, "rev-parse", f"{version}^{{commit}}") == git(clone, "rev-parse", "HEAD")
    assert git(clone, "status", "--porcelain") == ""
    assert galaxy(clone)["version"] == version
    changelog = yaml.safe_load((clone / "changelogs" / "changelog.yaml").read_text())
    changes = changelog["releases"][version]["changes"]
    assert "The release test's change." in changes["minor_changes"]
    assert not list((clone / "changelogs" / "fragments").glob("*.yml"))
    assert "v0\\.2\\.0" in (clone / "CHANGELOG.md").read_text()

    tarball = clone / "build" / f"chatmail-relay-{version}.tar.gz"
    checksum = (clone / "build" / f"{tarball.name}.sha256").read_text().split()
    assert checksum == [hashlib.sha256(tarball.read_bytes()).hexdigest(), tarball.name]
    assert checksum[0] in result.stdout

    assert git(repo, "rev-parse", "HEAD") == before
    assert git(repo, "tag") == ""
    assert git(repo, "status", "--porcelain") == ""
    assert galaxy(repo)["version"] == "0.1.0"
    assert not (repo / "build").exists()


@pytest.mark.parametrize(
    ("version", "change", "refusal"),
    [
        ("0.1.0", None, "0.1.0 is not newer than galaxy.yml's version 0.1.0"),
        ("v0.2", None, "v0.2 is not a semantic version"),
        ("0.2.0", "README.md", "the working tree has changes"),
        ("0.2.0", "branch", "releases are made from main; this checkout is on topic"),
    ],
    ids=["older", "not-semver", "dirty", "not-main"],
)
def test_the_release_refuses(repo, tmp_path, version, change, refusal):
    if change == "branch":
        git(repo, "checkout", "--quiet", "-b", "topic")
    elif change:
        with (repo / change).open("a") as file:
            file.write("\n")
    result = release(repo, tmp_path, "--dry-run", version)
    assert result.returncode != 0
    assert refusal in result.stderr
    assert list((tmp_path / "tmp").iterdir()) == []  # no clone was made
