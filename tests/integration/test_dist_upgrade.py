"""A relay on Debian 12, upgraded in place to Debian 13, comes back with site.yml and loses nothing.

The two deployments are made the ways sysadmins run the collection besides
root over SSH: first on the relay itself (`connection: local`, the Ansible of
this checkout run inside the container), then from this controller as an
unprivileged user with `become` (sudo). Both with `dovecot_source: chatmail`,
the packages from the test bed's package server (chatmail_packages.py).

The relay gets two accounts and a message, and is upgraded as an operator does
it: apt sources to trixie, `apt full-upgrade` keeping the relay's
configuration files, a reboot (a container restart). Then site.yml again: it
installs the Debian 13 Dovecot packages (an upgrade from Debian 12's), and the
accounts log in with their old passwords, find their mail, DKIM signs with the
same key and mail is delivered.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dkim
import pytest
import yaml
from chatmail_packages import current, package_server
from containers import BIN, ROOT, docker, testbed, wait_for_systemd

sys.path.insert(0, str(ROOT / "tests" / "relay"))
from mailclient import Gpg, imap_login, new_credentials, pgp_mime, submit, wait_for_messages

DKIM_KEYS = "/etc/opendkim/keys"


def inventory(inventory_dir: Path, relay: str, host_vars: dict, settings: dict) -> Path:
    """An inventory of RELAY alone with the test bed's settings and SETTINGS."""
    path = inventory_dir / "hosts.yml"
    path.write_text(yaml.safe_dump({"chatmail_relays": {
        "hosts": {relay: host_vars},
        "vars": {**testbed.relay_settings(), **settings},
    }}))  # fmt: skip
    return path


def site_on_the_relay(relay: str, inventory_dir: Path, settings: dict):
    """site.yml run on RELAY itself, connection: local (this checkout is mounted there)."""
    hosts = inventory(inventory_dir, relay, {"ansible_connection": "local"}, settings)
    return subprocess.run(
        ["docker", "exec", "--env", f"ANSIBLE_CONFIG={ROOT}/ansible.cfg", "--env", "NO_COLOR=1",
         "--workdir", str(ROOT), relay,
         str(BIN / "ansible-playbook"), "-i", str(hosts), str(ROOT / "playbooks/site.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def site_as_deploy_user(relay: str, inventory_dir: Path, settings: dict):
    """site.yml from this controller as the unprivileged user deploy, with become (sudo)."""
    host_vars = {
        "ansible_connection": "community.docker.docker",
        "ansible_user": "deploy",
        "ansible_become": True,
    }
    hosts = inventory(inventory_dir, relay, host_vars, settings)
    return subprocess.run(
        [BIN / "ansible-playbook", "-i", hosts, ROOT / "playbooks/site.yml"],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "NO_COLOR": "1"},
    )  # fmt: skip


def relay_address(relay: str) -> str:
    return docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                  relay).strip()  # fmt: skip


def in_relay(relay: str, script: str) -> str:
    return docker("exec", relay, "bash", "-euo", "pipefail", "-c", script)


def dkim_keys(relay: str) -> str:
    return in_relay(relay, f"cd {DKIM_KEYS} && sha256sum *.private")


def signed_by_installed_key(relay: str, message: bytes, domain: str) -> bool:
    """MESSAGE's DKIM signature is valid for DOMAIN under the key installed on RELAY."""

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        selector = name.decode().split("._domainkey.")[0]
        pem = in_relay(relay, f"openssl rsa -in {DKIM_KEYS}/{selector}.private -pubout 2>/dev/null")
        key = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
        return f"v=DKIM1; k=rsa; p={key}".encode()

    tags = dict(re.findall(rb"\b([a-z]+)=([^;\s]+)", message.split(b"DKIM-Signature:", 1)[1][:600]))
    return tags[b"d"] == domain.encode() and dkim.verify(message, dnsfunc=lookup)


def send_encrypted(ip: str, sender: tuple[str, str], recipient: str, gpg: Gpg, text: str) -> None:
    refused, _unused = submit(
        ip, sender, recipient, pgp_mime(sender[0], recipient, gpg.encrypt(text))
    )
    assert refused == {}


@pytest.fixture
def served(tmp_path):
    """The chatmail packages of Debian 12 and 13 (the versions role dovecot installs)."""
    wanted = {"12": [current("12")], "13": [current("13")]}
    directory = tmp_path / "served"
    directory.mkdir()
    with package_server("chatmail-test-dist-upgrade-pkgserver", directory, wanted) as server:
        yield server


@pytest.fixture
def relay(tmp_path):
    """A Debian 12 test-bed container with this checkout and the test's directory mounted."""
    name = "chatmail-test-dist-upgrade"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    docker("run", f"--volume={ROOT}:{ROOT}:ro", f"--volume={tmp_path}:{tmp_path}",
           *testbed.docker_run_args(name, "12"))  # fmt: skip
    wait_for_systemd(name)
    yield name
    docker("rm", "-f", name)


def chatmail_source(url: str, settings: dict, release: str) -> dict:
    return {
        "dovecot_source": "chatmail",
        "dovecot_chatmail_url": url,
        "dovecot_chatmail_fallback_url": url,
        "dovecot_chatmail_packages": settings[release, current(release)],
    }


def test_dist_upgrade_to_debian_13_keeps_accounts_mail_and_keys(relay, served, tmp_path):
    url, packages = served
    domain = testbed.relay_settings()["chatmail_domain"]
    gpg = Gpg(tmp_path / "gnupg")
    inventory_dir = tmp_path / "inventory"
    inventory_dir.mkdir()
    started = time.monotonic()
    first = site_on_the_relay(relay, inventory_dir, chatmail_source(url, packages, "12"))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    deployed = time.monotonic()

    ip = relay_address(relay)
    alice, bob = new_credentials(domain), new_credentials(domain)
    for address, password in (alice, bob):
        imap_login(ip, address, password).logout()  # created on first login
    send_encrypted(ip, alice, bob[0], gpg, "before the upgrade\n")
    assert len(wait_for_messages(ip, *bob, count=1)) == 1
    keys = dkim_keys(relay)
    old_dovecot = in_relay(relay, "dpkg-query -W -f '${Version}' dovecot-core")
    assert old_dovecot == "1:" + current("12")

    # The operator's upgrade: trixie's sources, a full upgrade that keeps the
    # relay's configuration files, a reboot.
    in_relay(
        relay,
        """
        sed -i -E '/^Suites:/s/\\bbookworm\\b/trixie/g' /etc/apt/sources.list.d/*.sources
        apt-get -q update >/dev/null
        log=/var/log/chatmail-dist-upgrade.log
        DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Options::=--force-confold \\
            -o Dpkg::Options::=--force-confdef full-upgrade >$log 2>&1 \\
            || { tail -n 40 $log; exit 1; }
    """,
    )
    assert in_relay(relay, "cat /etc/debian_version").startswith("13.")
    docker("restart", relay)
    wait_for_systemd(relay)
    # The operator's deploy user: no root, sudo without a password.
    in_relay(relay, """
        DEBIAN_FRONTEND=noninteractive apt-get -q -y install sudo >/dev/null
        useradd --create-home --shell /bin/bash deploy
        echo 'deploy ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/deploy
        chmod 0440 /etc/sudoers.d/deploy
    """)  # fmt: skip
    upgraded = time.monotonic()

    again = site_as_deploy_user(relay, inventory_dir, chatmail_source(url, packages, "13"))
    assert again.returncode == 0, again.stdout[-3000:]
    assert "changed=0" not in again.stdout
    print(
        f"\ndeploy on 12 (local): {deployed - started:.0f} s, dist-upgrade and reboot: "
        f"{upgraded - deployed:.0f} s, site.yml on 13 (become): {time.monotonic() - upgraded:.0f} s"
    )
    new_dovecot = in_relay(relay, "dpkg-query -W -f '${Version}' dovecot-core")
    assert new_dovecot == "1:" + current("13"), new_dovecot
    services = "dovecot postfix opendkim nginx chatmail-auth"
    assert in_relay(relay, f"systemctl is-active {services}").split() == ["active"] * 5

    ip = relay_address(relay)
    # The accounts log in with their passwords; a wrong password still fails.
    [before] = wait_for_messages(ip, *bob, count=1)
    assert b"-----BEGIN PGP MESSAGE-----" in before
    with pytest.raises(Exception, match=r"AUTHENTICATIONFAILED|Authentication failed"):
        imap_login(ip, bob[0], bob[1] + "x")
    assert dkim_keys(relay) == keys
    send_encrypted(ip, alice, bob[0], gpg, "after the upgrade\n")
    assert len(wait_for_messages(ip, *bob, count=2)) == 2

    # Outgoing mail is signed with the same key: an undeliverable message
    # returns as it left, signature included.
    send_encrypted(ip, alice, "someone@nowhere.invalid", gpg, "signed\n")
    [bounce] = wait_for_messages(ip, *alice, count=1)
    parsed = email.message_from_bytes(bounce, policy=email.policy.compat32)
    [returned] = [part.get_payload(0) for part in parsed.walk()
                  if part.get_content_type() == "message/rfc822"]  # fmt: skip
    original = returned.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert signed_by_installed_key(relay, original, domain)
