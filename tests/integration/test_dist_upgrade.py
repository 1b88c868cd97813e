"""A relay on Debian 12, upgraded in place to Debian 13, comes back with site.yml and loses nothing.

The relay is deployed by playbooks/site.yml with the test bed's settings (the
patched Dovecot built for Debian 12), gets two accounts and a message, and is
upgraded as an operator does it: apt sources to trixie, `apt full-upgrade`
keeping the relay's configuration files, a reboot (a container restart).
Then site.yml again: it installs the Debian 13 build of Dovecot, and the
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
from containers import BIN, ROOT, docker, testbed

sys.path.insert(0, str(ROOT / "tests" / "relay"))
from mailclient import Gpg, imap_login, new_credentials, pgp_mime, submit, wait_for_messages

DKIM_KEYS = "/etc/opendkim/keys"


def site(relay: str, inventory_dir: Path) -> subprocess.CompletedProcess:
    """playbooks/site.yml on RELAY, from an inventory of it alone with the test bed's settings."""
    inventory = inventory_dir / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"chatmail_relays": {
        "hosts": {relay: {"ansible_connection": "community.docker.docker"}},
        "vars": testbed.relay_settings(),
    }}))  # fmt: skip
    return subprocess.run(
        [BIN / "ansible-playbook", "-i", inventory, ROOT / "playbooks/site.yml"],
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


def wait_running(relay: str) -> None:
    for _ in range(60):
        state = subprocess.run(
            ["docker", "exec", relay, "systemctl", "is-system-running"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        if state in ("running", "degraded"):
            return
        time.sleep(1)
    raise TimeoutError(f"{relay} did not boot: {state}")


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
    refused, _ = submit(ip, sender, recipient, pgp_mime(sender[0], recipient, gpg.encrypt(text)))
    assert refused == {}


@pytest.mark.parametrize("systemd_container", ["12"], indirect=True)
def test_dist_upgrade_to_debian_13_keeps_accounts_mail_and_keys(systemd_container, tmp_path):
    relay = systemd_container
    domain = testbed.relay_settings()["chatmail_domain"]
    gpg = Gpg(tmp_path / "gnupg")
    started = time.monotonic()
    first = site(relay, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    deployed = time.monotonic()

    ip = relay_address(relay)
    alice, bob = new_credentials(domain), new_credentials(domain)
    for address, password in (alice, bob):
        imap_login(ip, address, password).logout()  # created on first login
    send_encrypted(ip, alice, bob[0], gpg, "before the upgrade\n")
    assert len(wait_for_messages(ip, *bob, count=1)) == 1
    keys = dkim_keys(relay)
    old_dovecot = in_relay(relay, "dpkg-query -W -f '${Version}' dovecot-core")
    assert old_dovecot.endswith("+deb12")

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
    wait_running(relay)
    upgraded = time.monotonic()

    again = site(relay, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    print(
        f"\ndeploy on 12: {deployed - started:.0f} s, dist-upgrade and reboot: "
        f"{upgraded - deployed:.0f} s, site.yml on 13: {time.monotonic() - upgraded:.0f} s"
    )
    new_dovecot = in_relay(relay, "dpkg-query -W -f '${Version}' dovecot-core")
    assert new_dovecot.endswith("+deb13"), new_dovecot
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
