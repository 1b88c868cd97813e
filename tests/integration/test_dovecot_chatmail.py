"""dovecot_source=chatmail: download, checksum, fallback, install and pin, for real.

The chatmail packages are served under their upstream file names by an HTTP
server in a container of the test bed; their content is our own patched build
(the real files are not reachable from here).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from containers import ROOT, docker, run_playbook, testbed

PLATFORM = testbed.platform()
IMAGE = PLATFORM["image"]
NETWORK = PLATFORM["networks"][0]["name"]
VERSION = "2.3.21+dfsg1-3"
PACKAGES = ("core", "imapd", "lmtpd")


def built_packages() -> Path:
    """Our patched build (from the controller's cache, or built now)."""
    out = subprocess.run(
        ["bash", ROOT / "roles/dovecot/files/build-dovecot.sh",
         "--patch", ROOT / "roles/dovecot/files/remove-idle-notify-delay.patch",
         "--cache-dir", "/var/cache/chatmail-relay/dovecot", "--image", IMAGE],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return Path(out.splitlines()[-1])


@pytest.fixture(scope="module")
def package_server(tmp_path_factory):
    """An HTTP server in the test bed holding the packages under upstream names."""
    served = tmp_path_factory.mktemp("served")
    sha256 = {}
    for package in PACKAGES:
        [built] = built_packages().glob(f"dovecot-{package}_*_amd64.deb")
        target = served / f"dovecot-{package}_{VERSION}_amd64.deb"
        shutil.copy(built, target)
        sha256[package] = hashlib.sha256(target.read_bytes()).hexdigest()
    served.chmod(0o755)
    name = "chatmail-test-pkgserver"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    docker("run", "-d", "--name", name, "--network", NETWORK, "-v", f"{served}:/srv:ro", IMAGE,
           "python3", "-m", "http.server", "8080", "--directory", "/srv")  # fmt: skip
    yield f"http://{name}:8080/", sha256
    docker("rm", "-f", name)


@pytest.fixture
def relay(systemd_container):
    return systemd_container


def install(relay: str, url: str, fallback: str, sha256: dict) -> subprocess.CompletedProcess:
    settings = {
        "dovecot_source": "chatmail",
        "dovecot_chatmail_url": url,
        "dovecot_chatmail_fallback_url": fallback,
        "dovecot_chatmail_sha256": {"amd64": sha256},
    }
    return run_playbook(relay, "dovecot_install.yml", settings)


def installed_version(relay: str, package: str) -> str:
    return subprocess.run(
        ["docker", "exec", relay, "dpkg-query", "-W", "-f", "${Status} ${Version}", package],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip


def test_wrong_checksum_fails_cleanly_and_installs_nothing(relay, package_server):
    url, sha256 = package_server
    wrong = {**sha256, "core": hashlib.sha256(b"not the package").hexdigest()}
    result = install(relay, url, url, wrong)
    assert result.returncode != 0
    assert "checksum" in result.stdout.lower(), result.stdout[-3000:]
    for package in PACKAGES:
        assert "ok installed" not in installed_version(relay, f"dovecot-{package}")
    assert docker("exec", relay, "ls", "/etc/apt/preferences.d/").strip() == ""


def test_download_falls_back_installs_and_pins(relay, package_server):
    url, sha256 = package_server
    result = install(relay, url + "missing/", url, sha256)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "from the fallback location" in result.stdout

    built = built_packages()
    for package in PACKAGES:
        [deb] = built.glob(f"dovecot-{package}_*_amd64.deb")
        expected = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True,
                                  text=True, check=True).stdout.strip()  # fmt: skip
        assert installed_version(relay, f"dovecot-{package}") == f"install ok installed {expected}"
    policy = docker("exec", relay, "apt-cache", "policy", "dovecot-core")
    assert " -1\n" in policy, policy
    assert docker("exec", relay, "systemctl", "is-active", "dovecot").strip() == "active"

    again = install(relay, url, url, sha256)
    assert again.returncode == 0
    assert "changed=0" in again.stdout
