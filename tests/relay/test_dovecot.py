"""The relay runs the Dovecot it was deployed with, and no stale binary."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

SOURCE = os.environ.get("CHATMAIL_DOVECOT_SOURCE", "chatmail")
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "roles/dovecot/files/build-dovecot.sh"
[BUILD_SUFFIX] = re.findall(r"^readonly local_suffix=(\S+)$", BUILD_SCRIPT.read_text(), re.M)


@pytest.mark.skipif(SOURCE == "debian", reason="stock Dovecot is neither patched nor pinned")
@pytest.mark.parametrize("package", ["dovecot-core", "dovecot-imapd", "dovecot-lmtpd"])
def test_patched_dovecot_is_installed_and_pinned(host, package):
    version = host.package(package).version
    release = host.file("/etc/debian_version").content_string.split(".")[0]
    if SOURCE == "build":
        # Built for this release: <Debian version><suffix>+deb<release>.
        assert version.endswith(f"{BUILD_SUFFIX}+deb{release}"), version
    else:
        assert version == f"1:2.3.21+dfsg1-3+chatmail2+deb{release}u1", version
    policy = host.run(f"apt-cache policy {package}").stdout
    debian_versions = [
        line
        for line in policy.splitlines()
        if line.strip().startswith("1:") and "chatmail" not in line
    ]
    # Debian's own versions may be listed, but never with a priority apt would install.
    assert all(line.rstrip().endswith(" -1") for line in debian_versions), policy


def test_running_dovecot_is_the_installed_binary(host):
    pid = host.file("/run/dovecot/master.pid").content_string.strip()
    exe = host.run(f"readlink /proc/{pid}/exe").stdout.strip()
    assert exe == "/usr/sbin/dovecot"
    started = host.run(f"stat -c %Y /proc/{pid}").stdout.strip()
    installed = host.run("stat -c %Y /usr/sbin/dovecot").stdout.strip()
    assert int(started) >= int(installed)
