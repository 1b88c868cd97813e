"""The relay's metrics (role relay_services' README): what an operator's Prometheus sees.

Each test scrapes the exporter inside the relay (it listens on loopback only), makes
traffic as a client would, scrapes again and checks that exactly that traffic moved
the counters. The relay tests run one at a time, so nothing else sends meanwhile.
"""

from __future__ import annotations

import shutil
import smtplib
import subprocess

import pytest
from mailclient import (
    cleartext_message,
    imap_login,
    new_credentials,
    pgp_mime,
    submit,
    wait_for_messages,
)
from metricsclient import filtered, moved, scrape, scrape_text
from metricsclient import metrics_port as exporter_port

REMOTE = "someone@example.org"


@pytest.fixture(scope="module")
def metrics_port(host) -> int:
    return exporter_port(host)


def test_mail_and_logins_move_the_counters_by_exactly_their_amount(
    host, metrics_port, relay_ip, domain, gpg
):
    before = scrape(host, metrics_port)
    sender, recipient = new_credentials(domain), new_credentials(domain)
    for account in (sender, recipient):
        imap_login(relay_ip, *account).logout()
    with pytest.raises(Exception, match="AUTHENTICATIONFAILED"):
        imap_login(relay_ip, sender[0], "not the password")
    with pytest.raises(Exception, match="AUTHENTICATIONFAILED"):
        imap_login(relay_ip, f"short@{domain}", "long enough password")  # invalid: too short
    for _unused in range(3):
        with pytest.raises(smtplib.SMTPDataError, match="Encryption Needed"):
            submit(relay_ip, sender, REMOTE, cleartext_message(sender[0], REMOTE))
    for _unused in range(2):
        message = pgp_mime(sender[0], recipient[0], gpg.encrypt("counted\n"))
        submit(relay_ip, sender, recipient[0], message)
    wait_for_messages(relay_ip, *recipient, count=2)
    after = scrape(host, metrics_port)

    assert moved(
        before,
        after,
        [
            "chatmail_accounts_created_total{}",
            "chatmail_accounts{}",
            'chatmail_account_refusals_total{rule="invalid"}',
            filtered("outgoing", "refused", "encryption_needed"),
            filtered("outgoing", "accepted", "encrypted"),
            "dovecot_mail_delivery_total{}",
            "dovecot_auth_failure_total{}",
        ],
    ) == {
        "chatmail_accounts_created_total{}": 2,
        "chatmail_accounts{}": 2,
        'chatmail_account_refusals_total{rule="invalid"}': 1,
        filtered("outgoing", "refused", "encryption_needed"): 3,
        filtered("outgoing", "accepted", "encrypted"): 2,
        "dovecot_mail_delivery_total{}": 2,
        # The wrong password, and the invalid address (its lookup finds no account).
        "dovecot_auth_failure_total{}": 2,
    }
    assert after['chatmail_accounts_active{days="1"}'] >= 2
    assert after['dovecot_imap_command_total{cmd_name="LOGOUT"}'] >= 2
    errors = {name: value for name, value in after.items() if "source_errors" in name}
    assert errors and set(errors.values()) == {0.0}, errors


def test_the_metrics_pass_promtool(host, metrics_port):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH (scripts/bootstrap links it into .venv/bin)"
    text = scrape_text(host, metrics_port)
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "chatmail_filter_messages_total" in text and "dovecot_auth_success_total" in text


def test_the_metrics_listen_on_loopback_only(host, metrics_port):
    listening = host.socket(f"tcp://0.0.0.0:{metrics_port}")
    assert not listening.is_listening
    assert host.socket(f"tcp://127.0.0.1:{metrics_port}").is_listening
