"""The changelog's sources are valid and CHANGELOG.md is generated from them.

changelogs/changelog.yaml holds the released notes, changelogs/fragments the next
release's; antsibull-changelog writes CHANGELOG.md from the former (RELEASING.md).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from collection_build import BIN, ROOT


def antsibull_changelog(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "antsibull-changelog", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    "command", [["lint"], ["lint-changelog-yaml", "changelogs/changelog.yaml"]], ids=lambda c: c[0]
)
def test_antsibull_changelog_reports_nothing(command):
    result = antsibull_changelog(*command)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_changelog_md_is_generated_from_changelog_yaml(tmp_path):
    for name in ("galaxy.yml", "CHANGELOG.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "changelogs", tmp_path / "changelogs")
    result = antsibull_changelog("generate", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    generated = (tmp_path / "CHANGELOG.md").read_text()
    assert generated == (ROOT / "CHANGELOG.md").read_text(), (
        "CHANGELOG.md differs from what antsibull-changelog generates: add changes as"
        " changelogs/fragments/<name>.yml (RELEASING.md) and run antsibull-changelog generate"
    )
