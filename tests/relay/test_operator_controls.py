"""What an operator controls: who may register, and switching an address off.

The playbooks run as an operator runs them (playbooks/invites.yml, accounts.yml and
site.yml --tags registration, on the scenario's inventory); chatmail-admin runs on the
relay. Every effect is checked from outside, as a client sees it.
"""

from __future__ import annotations

import imaplib
import json
import re
import time
from urllib.parse import urlsplit

import pytest
from mailclient import (
    fetch_all,
    imap_login,
    new_credentials,
    pgp_mime,
    smtp_login,
    submit,
    wait_for_messages,
)
from testbed import playbook, required_env
from webclient import https

# Seconds after which a message the relay accepted has long been delivered.
QUIET = 2.0


def succeeded(run) -> str:
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run.stdout


# The mode the relay runs in now; the scenario deploys it open.
MODE = {"now": "open"}


def on_relay(name: str, extra_vars: dict, *args: str) -> str:
    """Run playbooks/<name>.yml on the relay under test only (a scenario may have more)."""
    relay = required_env("CHATMAIL_RELAY_CONTAINER", "the relay container under test")
    return succeeded(playbook(name, extra_vars, "--limit", relay, *args))


def registration(mode: str) -> None:
    """Switch the mode as the role's README says: site.yml --tags registration."""
    on_relay("site", {"chatmail_registration": mode}, "--tags", "registration")
    MODE["now"] = mode


def post_new(relay_ip: str, domain: str, query: str = "") -> tuple[int, dict]:
    status, _unused, body = https(relay_ip, domain, "/new" + query, method="POST")
    return status, json.loads(body)


def logs_in(relay_ip: str, address: str, password: str) -> bool:
    try:
        imap_login(relay_ip, address, password).logout()
    except imaplib.IMAP4.error:
        return False
    return True


def landing_page(relay_ip: str, domain: str) -> str:
    status, _unused, body = https(relay_ip, domain, "/")
    assert status == 200
    return body.decode()


@pytest.fixture
def restore_open_registration():
    yield
    if MODE["now"] != "open":
        registration("open")


def test_invite_and_closed_registration(relay_ip, domain, host, account, restore_open_registration):
    registration("invite")
    page = landing_page(relay_ip, domain)
    assert "by invitation" in page and "qr-" not in page and "DCACCOUNT:" not in page
    status, answer = post_new(relay_ip, domain)
    assert status == 403 and "invitation" in answer["error"]

    made = on_relay("invites", {"chatmail_invite_action": "create", "chatmail_invite_label": "t"})
    [link] = re.findall(r'"msg": "(DCACCOUNT:https://[^"]+)"', made)
    url = urlsplit(link.removeprefix("DCACCOUNT:"))
    assert (url.netloc, url.path) == (domain, "/new")
    status, credentials = post_new(relay_ip, domain, "?" + url.query)
    assert status == 200, credentials
    assert logs_in(relay_ip, credentials["email"], credentials["password"])
    # One use: the second registration with the same link is refused and creates nothing.
    status, answer = post_new(relay_ip, domain, "?" + url.query)
    assert (status, answer) == (410, {"error": "this invite token is used up"})
    status, answer = post_new(relay_ip, domain, "?token=made-up-by-someone")
    assert (status, answer) == (403, {"error": "this invite token is not valid"})
    listed = host.run("chatmail-admin invites list")
    assert re.search(r"\bt\s+\S+\s+-\s+0\s+used up\b", listed.stdout), listed.stdout

    # An address /new never handed out gets no account at its first login ...
    uninvited = new_credentials(domain)
    assert not logs_in(relay_ip, *uninvited)
    # ... and existing accounts work in every mode.
    assert logs_in(relay_ip, *account)

    registration("closed")
    page = landing_page(relay_ip, domain)
    assert "no new accounts" in page and "qr-" not in page
    status, answer = post_new(relay_ip, domain, "?" + url.query)
    assert (status, answer) == (403, {"error": "registration is closed on this relay"})
    assert not logs_in(relay_ip, *new_credentials(domain))
    assert logs_in(relay_ip, *account)
    assert logs_in(relay_ip, credentials["email"], credentials["password"])

    # Back to open: the same uninvited address is let in, and the QR code is back.
    registration("open")
    assert logs_in(relay_ip, *uninvited)
    assert re.search(r'<img src="/qr-[0-9a-f]{12}\.png"', landing_page(relay_ip, domain))


def accounts(action: str, address: str = "") -> str:
    settings = {"chatmail_account_action": action}
    if address:
        settings["chatmail_account"] = address
    return on_relay("accounts", settings)


def inbox(relay_ip: str, account: tuple[str, str]) -> list[bytes]:
    imap = imap_login(relay_ip, *account)
    try:
        return fetch_all(imap)
    finally:
        imap.logout()


def message_ids(messages: list[bytes]) -> list[str]:
    return [re.search(rb"^Message-ID: (\S+)", m, re.M | re.I).group(1).decode() for m in messages]


def test_a_switched_off_address_sends_and_receives_nothing(relay_ip, domain, host, gpg):
    def new_account() -> tuple[str, str]:
        credentials = new_credentials(domain)
        imap_login(relay_ip, *credentials).logout()
        return credentials

    alice, bob, carol = new_account(), new_account(), new_account()
    payload = gpg.encrypt("switched off\n")
    changed = accounts("disable", alice[0])
    assert '"changed": true' in changed
    listed = accounts("list")
    assert re.search(rf"{re.escape(alice[0])}\s+\d{{4}}-\d\d-\d\d\s+True", listed), listed

    # What alice sends is answered 250 and goes nowhere.
    refused, _unused = submit(relay_ip, alice, bob[0], pgp_mime(alice[0], bob[0], payload))
    assert refused == {}
    # Carol's message to both reaches bob only, and alice's would have come before it.
    to_both = pgp_mime(carol[0], bob[0], payload)
    smtp = smtp_login(relay_ip, *carol)
    try:
        assert smtp.sendmail(carol[0], [alice[0], bob[0]], to_both) == {}
    finally:
        smtp.quit()
    assert message_ids(wait_for_messages(relay_ip, *bob, count=1)) == message_ids([to_both])
    time.sleep(QUIET)
    assert message_ids(inbox(relay_ip, bob)) == message_ids([to_both])
    assert inbox(relay_ip, alice) == []

    # Switched on again (with the command on the relay), both directions work.
    enabled = host.run(f"chatmail-admin accounts enable {alice[0]}")
    assert enabled.rc == 0 and enabled.stdout.strip() == f"{alice[0]} enabled"
    from_alice = pgp_mime(alice[0], bob[0], payload)
    submit(relay_ip, alice, bob[0], from_alice)
    to_alice = pgp_mime(carol[0], alice[0], payload)
    submit(relay_ip, carol, alice[0], to_alice)
    assert message_ids(wait_for_messages(relay_ip, *alice, count=1)) == message_ids([to_alice])
    got = message_ids(wait_for_messages(relay_ip, *bob, count=2))
    assert message_ids([from_alice])[0] in got


def test_a_deleted_account_loses_its_mail(relay_ip, domain, gpg):
    dave = new_credentials(domain)
    imap_login(relay_ip, *dave).logout()
    sender = new_credentials(domain)
    imap_login(relay_ip, *sender).logout()
    submit(relay_ip, sender, dave[0], pgp_mime(sender[0], dave[0], gpg.encrypt("gone")))
    assert len(wait_for_messages(relay_ip, *dave, count=1)) == 1
    assert '"deleted": true' in accounts("delete", dave[0])
    assert dave[0] not in accounts("list")
    # The address is free again: its next first login is a new, empty account.
    assert inbox(relay_ip, dave) == []
