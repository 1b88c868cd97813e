"""The collection builds into a tarball that installs and exposes its content, and
declares the collections its content uses."""

from __future__ import annotations

import json
import re
import sys
import sysconfig
from pathlib import Path

import yaml
from ansible.galaxy.dependency_resolution.versioning import meets_requirements

sys.path.insert(0, str(Path(__file__).parent))
from collection_build import ROOT, build, files, galaxy, install

# What may name another collection: `community.crypto.x509_certificate` in YAML and
# templates, `ansible_collections.community.crypto` in Python. A match counts when the
# `ansible` package has a collection of that name (`fs.inotify.max_user_watches` is a
# sysctl key, `chat.example.org` a host).
YAML_FQCN = re.compile(r"\b([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b")
PYTHON_IMPORT = re.compile(r"\bansible_collections\.([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\b")
CONTENT = {
    YAML_FQCN: ["roles/**/*.yml", "roles/**/*.j2", "playbooks/*.yml", "plugins/**/*.yml",
                "inventories/example/**/*.yml"],
    PYTHON_IMPORT: ["plugins/**/*.py"],
}  # fmt: skip
OWN_OR_CORE = {"ansible.builtin", "ansible.legacy", "chatmail.relay"}
BUNDLED = Path(sysconfig.get_paths()["purelib"]) / "ansible_collections"


def test_build_and_install(tmp_path):
    tarball = build(ROOT, tmp_path)
    names = [member.name for member in files(tarball)]
    assert "roles/base/tasks/main.yml" in names
    assert "playbooks/site.yml" in names
    assert not [n for n in names if n.startswith(("tests/", "molecule/", ".venv", ".collections"))]

    installed = install(tarball, tmp_path / "installed")
    assert (installed / "MANIFEST.json").is_file()
    assert (installed / "roles" / "base" / "meta" / "argument_specs.yml").is_file()


def test_dependencies_match_requirements():
    requirements = yaml.safe_load((ROOT / "requirements.yml").read_text())
    listed = {c["name"]: c["version"] for c in requirements["collections"]}
    assert listed == galaxy()["dependencies"]


def test_dependencies_are_the_collections_the_content_uses():
    named = {
        (namespace, name)
        for regex, patterns in CONTENT.items()
        for pattern in patterns
        for path in ROOT.glob(pattern)
        for namespace, name in regex.findall(path.read_text())
    }
    used = {f"{ns}.{name}" for ns, name in named if (BUNDLED / ns / name).is_dir()}
    assert used - OWN_OR_CORE == set(galaxy()["dependencies"])


def test_the_ansible_package_bundles_what_the_collection_and_its_tests_need():
    tests = yaml.safe_load((ROOT / "tests" / "requirements.yml").read_text())["collections"]
    wanted = {**galaxy()["dependencies"], **{c["name"]: c["version"] for c in tests}}
    for collection, versions in wanted.items():
        manifest = BUNDLED.joinpath(*collection.split("."), "MANIFEST.json")
        bundled = json.loads(manifest.read_text())["collection_info"]["version"]
        assert meets_requirements(bundled, versions), f"{collection} {bundled}: not {versions}"


def test_the_support_window_starts_at_the_core_the_suite_runs_on():
    """requires_ansible names the oldest ansible-core the suite exercises (this venv's;
    tests/controller exercises the newest), and every role's meta says the same."""
    from ansible.release import __version__ as core

    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    lowest = re.fullmatch(r">=(\d+\.\d+)\.0", runtime["requires_ansible"])
    assert lowest, f"meta/runtime.yml requires_ansible: {runtime['requires_ansible']!r}"
    assert core.startswith(lowest[1] + "."), f"suite runs ansible-core {core}, not {lowest[1]}"
    for meta in sorted(ROOT.glob("roles/*/meta/main.yml")):
        info = yaml.safe_load(meta.read_text())["galaxy_info"]
        assert info["min_ansible_version"] == lowest[1], meta.relative_to(ROOT)
