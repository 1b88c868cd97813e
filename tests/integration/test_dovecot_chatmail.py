"""dovecot_source=chatmail: download, checksum, fallback, install, pin and upgrade, for real.

The chatmail packages are served under their upstream file names by an HTTP
server in a container of the test bed, for Debian 12 and 13. Their content is
our own patched build of that release (the real files are not reachable from
here), given the upstream package version, so apt sees what a relay would see.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from containers import ROOT, docker, run_playbook, testbed

NETWORK = testbed.platform()["networks"][0]["name"]
DEFAULTS = yaml.safe_load((ROOT / "roles/dovecot/defaults/main.yml").read_text())
RELEASES = sorted(DEFAULTS["dovecot_chatmail_packages"])
PACKAGES = ("core", "imapd", "lmtpd")
# What the collection installed before the chatmail2 packages (Debian 12 only).
OLD_VERSION = "2.3.21+dfsg1-3"


def built_packages(release: str) -> Path:
    """Our patched build for RELEASE (from the controller's cache, or built now)."""
    out = subprocess.run(
        ["bash", ROOT / "roles/dovecot/files/build-dovecot.sh",
         "--patch", ROOT / "roles/dovecot/files/remove-idle-notify-delay.patch",
         "--cache-dir", "/var/cache/chatmail-relay/dovecot", "--image", testbed.image(release)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return Path(out.splitlines()[-1])


def reversioned(deb: Path, version: str, target: Path) -> None:
    """DEB rebuilt as TARGET with package version 1:VERSION (and its dependencies on it)."""
    built_version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True,
                                   text=True, check=True).stdout.strip()  # fmt: skip
    tree = target.with_suffix(".tree")
    subprocess.run(["dpkg-deb", "-R", deb, tree], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text(control.read_text().replace(built_version, "1:" + version))
    subprocess.run(["dpkg-deb", "-Zgzip", "-z1", "-b", tree, target], check=True,
                   capture_output=True)  # fmt: skip
    shutil.rmtree(tree)


@pytest.fixture(scope="module")
def package_server(tmp_path_factory):
    """An HTTP server in the test bed with the packages of every release under upstream names.

    Yields its URL and, per release and version, the settings dovecot_chatmail_packages
    needs for exactly those files.
    """
    served = tmp_path_factory.mktemp("served")
    wanted = {release: [current(release)] for release in RELEASES}
    wanted["12"].append(OLD_VERSION)
    settings = {}
    for release, versions in wanted.items():
        for version in versions:
            sha256 = {}
            for package in PACKAGES:
                [built] = built_packages(release).glob(f"dovecot-{package}_*_amd64.deb")
                target = served / f"dovecot-{package}_{version}_amd64.deb"
                reversioned(built, version, target)
                sha256[package] = hashlib.sha256(target.read_bytes()).hexdigest()
            packages = {"version": version, "sha256": {"amd64": sha256}}
            settings[release, version] = {release: packages}
    served.chmod(0o755)
    name = "chatmail-test-pkgserver"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    docker("run", "-d", "--name", name, "--network", NETWORK, "-v", f"{served}:/srv:ro",
           testbed.image("12"), "python3", "-m", "http.server", "8080",
           "--directory", "/srv")  # fmt: skip
    yield f"http://{name}:8080/", settings
    docker("rm", "-f", name)


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


def current(release: str) -> str:
    return DEFAULTS["dovecot_chatmail_packages"][release]["version"]


@pytest.mark.parametrize("systemd_container", RELEASES, indirect=True)
def test_wrong_checksum_fails_cleanly_and_installs_nothing(relay, package_server):
    url, settings = package_server
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
def test_download_falls_back_installs_in_one_transaction_and_pins(relay, package_server):
    url, settings = package_server
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
def test_a_relay_with_the_old_packages_gets_the_new_ones(relay, package_server):
    """The upgrade path of a relay deployed with 2.3.21+dfsg1-3 (no security backports)."""
    url, settings = package_server
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
