"""dovecot_source=chatmail: download, checksum, fallback, install, pin and upgrade, for real.

The packages of Debian 12 and 13 come from the test bed's package server
(chatmail_packages.py), under their upstream file names and versions.
"""

from __future__ import annotations

import copy
import hashlib
import subprocess

import pytest
from chatmail_packages import PACKAGES, RELEASES, current, package_server
from containers import docker, run_playbook

# What the collection installed before the chatmail2 packages (Debian 12 only).
OLD_VERSION = "2.3.21+dfsg1-3"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The packages of every release, and the old ones of Debian 12 (see chatmail_packages)."""
    wanted = {release: [current(release)] for release in RELEASES}
    wanted["12"].append(OLD_VERSION)
    directory = tmp_path_factory.mktemp("served")
    with package_server("chatmail-test-pkgserver", directory, wanted) as server:
        yield server


@pytest.fixture
def relay(systemd_container):
    return systemd_container


def install(relay: str, url: str, fallback: str, packages: dict) -> subprocess.CompletedProcess:
    settings = {
        "dovecot_source": "chatmail",
        "dovecot_chatmail_url": url,
        "dovecot_chatmail_fallback_url": fallback,
        "dovecot_chatmail_packages": packages,
    }
    return run_playbook(relay, "dovecot_install.yml", settings)


def installed_version(relay: str, package: str) -> str:
    return subprocess.run(
        ["docker", "exec", relay, "dpkg-query", "-W", "-f", "${Status} ${Version}", package],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip


def dovecot_pid(relay: str) -> str:
    return docker("exec", relay, "systemctl", "show", "-P", "MainPID", "dovecot").strip()


@pytest.mark.parametrize("systemd_container", RELEASES, indirect=True)
def test_wrong_checksum_fails_cleanly_and_installs_nothing(relay, served):
    url, settings = served
    release = docker("exec", relay, "cat", "/etc/debian_version").split(".")[0]
    packages = settings[release, current(release)]
    wrong = copy.deepcopy(packages)
    wrong[release]["sha256"]["amd64"]["core"] = hashlib.sha256(b"not the package").hexdigest()
    result = install(relay, url, url, wrong)
    assert result.returncode != 0
    assert "checksum" in result.stdout.lower(), result.stdout[-3000:]
    for package in PACKAGES:
        assert "ok installed" not in installed_version(relay, f"dovecot-{package}")
    assert docker("exec", relay, "ls", "/etc/apt/preferences.d/").strip() == ""


@pytest.mark.parametrize("systemd_container", RELEASES, indirect=True)
def test_download_falls_back_installs_in_one_transaction_and_pins(relay, served):
    url, settings = served
    release = docker("exec", relay, "cat", "/etc/debian_version").split(".")[0]
    version = current(release)
    assert version.endswith(f"+deb{release}u1")
    result = install(relay, url + "missing/", url, settings[release, version])
    assert result.returncode == 0, result.stdout[-3000:]
    assert "from the fallback location" in result.stdout

    for package in PACKAGES:
        assert installed_version(relay, f"dovecot-{package}") == f"install ok installed 1:{version}"
    # One apt transaction installed all three.
    history = docker("exec", relay, "cat", "/var/log/apt/history.log").split("\n\n")
    [transaction] = [entry for entry in history if "dovecot-core" in entry]
    assert all(f"dovecot-{package}_{version}_amd64.deb" in transaction for package in PACKAGES)
    # Debian's own Dovecot (2.4 on Debian 13) never replaces it.
    policy = docker("exec", relay, "apt-cache", "policy", "dovecot-core")
    assert " -1\n" in policy, policy
    assert docker("exec", relay, "systemctl", "is-active", "dovecot").strip() == "active"

    again = install(relay, url, url, settings[release, version])
    assert again.returncode == 0
    assert "changed=0" in again.stdout


@pytest.mark.parametrize("systemd_container", ["12"], indirect=True)
def test_a_relay_with_the_old_packages_gets_the_new_ones(relay, served):
    """The upgrade path of a relay deployed with 2.3.21+dfsg1-3 (no security backports)."""
    url, settings = served
    old = install(relay, url, url, settings["12", OLD_VERSION])
    assert old.returncode == 0, old.stdout[-3000:]
    assert installed_version(relay, "dovecot-core") == f"install ok installed 1:{OLD_VERSION}"
    pid_before = dovecot_pid(relay)

    new = install(relay, url, url, settings["12", current("12")])
    assert new.returncode == 0, new.stdout[-3000:]
    expected = "install ok installed 1:" + current("12")
    for package in PACKAGES:
        assert installed_version(relay, f"dovecot-{package}") == expected
    # Restarted onto the new binary.
    assert docker("exec", relay, "systemctl", "is-active", "dovecot").strip() == "active"
    assert dovecot_pid(relay) not in ("0", pid_before)
    exe = docker("exec", relay, "readlink", f"/proc/{dovecot_pid(relay)}/exe")
    assert "deleted" not in exe
