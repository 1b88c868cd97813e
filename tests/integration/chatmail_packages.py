"""The chatmail Dovecot packages, served in the test bed under their upstream file names.

The real files are not reachable from here: their content is our own patched
build of each Debian release, given the upstream package version, so apt on a
relay sees what it would see with the real ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml
from containers import ROOT, docker, testbed

DEFAULTS = yaml.safe_load((ROOT / "roles/dovecot/defaults/main.yml").read_text())
RELEASES = sorted(DEFAULTS["dovecot_chatmail_packages"])
PACKAGES = ("core", "imapd", "lmtpd")
NETWORK = testbed.platform()["networks"][0]["name"]


def current(release: str) -> str:
    """The version role dovecot installs on Debian RELEASE by default."""
    return DEFAULTS["dovecot_chatmail_packages"][release]["version"]


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


@contextlib.contextmanager
def package_server(
    name: str, served: Path, wanted: dict[str, list[str]]
) -> Iterator[tuple[str, dict]]:
    """An HTTP server (container NAME) with, per release, the packages of each version wanted.

    Yields its URL and, per (release, version), the dovecot_chatmail_packages setting for
    exactly those files.
    """
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
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    docker("run", "-d", "--name", name, "--network", NETWORK, "-v", f"{served}:/srv:ro",
           testbed.image("12"), "python3", "-m", "http.server", "8080",
           "--directory", "/srv")  # fmt: skip
    try:
        yield f"http://{name}:8080/", settings
    finally:
        docker("rm", "-f", name)
