"""Accounts are created by their first login, under the rules of SPEC §5."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from mailclient import (
    imap_login,
    new_credentials,
    pgp_mime,
    smtp_login,
    submit,
    tls_context,
    wait_for_messages,
)


def test_first_login_creates_the_account_and_later_logins_work(relay_ip, domain, host):
    address, password = new_credentials(domain)
    assert not host.file(f"/home/vmail/mail/{domain}/{address}").exists

    imap = imap_login(relay_ip, address, password)
    assert imap.select("INBOX")[0] == "OK"
    imap.logout()
    account_dir = host.file(f"/home/vmail/mail/{domain}/{address}")
    assert account_dir.is_directory
    assert account_dir.user == "vmail"
    assert host.file(f"{account_dir.path}/enforceE2EEincoming").exists
    assert host.file(f"{account_dir.path}/password").content_string.startswith("{SHA512-CRYPT}")

    imap_login(relay_ip, address, password).logout()
    smtp_login(relay_ip, address, password).quit()


def test_wrong_password_fails_and_does_not_overwrite(relay_ip, account, host, domain):
    address, password = account
    stored = host.file(f"/home/vmail/mail/{domain}/{address}/password").content_string
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_login(relay_ip, address, password + "x")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        smtp_login(relay_ip, address, password + "x")
    assert host.file(f"/home/vmail/mail/{domain}/{address}/password").content_string == stored
    imap_login(relay_ip, address, password).logout()


@pytest.mark.parametrize(
    "make_address, password",
    [
        pytest.param(lambda d: new_credentials(d)[0], "short", id="password too short"),
        pytest.param(lambda d: new_credentials(d)[0].upper(), "longenough1", id="upper case"),
        pytest.param(lambda d: new_credentials(d, length=8)[0], "longenough1", id="8 chars"),
        pytest.param(lambda d: new_credentials(d, length=10)[0], "longenough1", id="10 chars"),
        pytest.param(lambda d: "abc+defgh@" + d, "longenough1", id="bad character"),
        pytest.param(lambda d: new_credentials("example.org")[0], "longenough1", id="other domain"),
    ],
)
def test_unacceptable_new_accounts_are_refused(relay_ip, domain, host, make_address, password):
    address = make_address(domain)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_login(relay_ip, address, password)
    assert not host.file(f"/home/vmail/mail/{domain}/{address}").exists


def test_concurrent_first_logins_create_one_account(relay_ip, domain, host):
    address, password = new_credentials(domain)

    def login(_unused):
        imap = imap_login(relay_ip, address, password)
        imap.logout()
        return True

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert all(pool.map(login, range(10)))
    listed = host.run(f"ls /home/vmail/mail/{domain}").stdout.split()
    assert listed.count(address) == 1
    assert host.file(f"/home/vmail/mail/{domain}/{address}/password").exists


def test_kill_switch_stops_new_accounts_only(relay_ip, domain, host, account):
    existing, password = account
    host.run("touch /etc/chatmail-nocreate")
    try:
        address, new_password = new_credentials(domain)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap_login(relay_ip, address, new_password)
        imap_login(relay_ip, existing, password).logout()
    finally:
        host.run("rm -f /etc/chatmail-nocreate")
    imap_login(relay_ip, address, new_password).logout()


def test_imap_announces_a_chatmail_relay(relay_ip, account):
    imap = imap_login(relay_ip, *account)
    assert {"XCHATMAIL", "XDELTAPUSH"} <= set(imap.capabilities)
    imap.logout()


@pytest.mark.parametrize("port", [993, 465])
def test_clients_need_tls_1_3(relay_ip, port):
    context = tls_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((relay_ip, port), timeout=10) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw)


def test_login_records_only_the_day(relay_ip, account, host, domain):
    password_file = f"/home/vmail/mail/{domain}/{account[0]}/password"
    host.run(f"touch -d '2001-02-03 04:05:06 UTC' {password_file}")
    imap_login(relay_ip, *account).logout()
    deadline = time.monotonic() + 5
    while (mtime := host.file(password_file).mtime.timestamp()) < 10**9 + 10**8:
        assert time.monotonic() < deadline, "the login did not update the last-login day"
        time.sleep(0.1)
    assert mtime % 86400 == 0
    assert time.time() - mtime < 86400


def test_an_account_deleted_by_expiry_gets_no_more_mail(relay_ip, domain, host, account, gpg):
    """Dovecot's auth cache must not keep a deleted account alive."""
    address, password = account
    sender = new_credentials(domain)
    imap_login(relay_ip, *sender).logout()
    home = f"/home/vmail/mail/{domain}/{address}"

    def send(text: str) -> None:
        submit(relay_ip, sender, address, pgp_mime(sender[0], address, gpg.encrypt(text)))

    # A delivery makes Dovecot look the account up (and keep the answer).
    send("before")
    assert len(wait_for_messages(relay_ip, address, password, count=1)) == 1
    # Those logins record the day (asynchronously); then the account falls idle.
    deadline = time.monotonic() + 5
    while host.file(f"{home}/password").mtime.timestamp() % 86400:
        assert time.monotonic() < deadline, "the logins did not record the last-login day"
        time.sleep(0.1)
    host.run_test(f"touch -d '400 days ago' {home}/password")
    host.run_test("systemctl start chatmail-expire.service")
    assert not host.file(home).exists, "the expiry did not delete the inactive account"

    send("after")
    bounces = wait_for_messages(relay_ip, *sender, count=1)
    assert not host.file(home).exists, "a delivery brought the deleted account back"
    assert bounces, "mail for the deleted account was taken, not bounced"
    assert b"Undelivered Mail Returned to Sender" in bounces[0]
