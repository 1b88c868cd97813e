"""The encryption filter over real SMTP: Postfix's side played by smtplib and a sink."""

from __future__ import annotations

import logging
import os
import smtplib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import chatrelay
import pgp_samples as s
import pytest
from chatrelay import filter as relay_filter
from chatrelay import mailbox
from chatrelay.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st
from relay_servers import Counted, close, free_port, run

DOMAIN = "example.org"
ALICE = "alice@example.org"
BOB = "bob@example.org"
REMOTE = "carol@example.net"
ENCRYPTED = s.armor(s.PKESK + s.SEIPD)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Filter:
    port: int
    config: Config
    clock: Clock

    def mailbox(self, address: str, enforce: bool) -> None:
        user_dir = mailbox.directory(self.config, address)
        user_dir.mkdir(parents=True, exist_ok=True)
        if enforce:
            (user_dir / mailbox.E2EE_MARKER).touch()


@pytest.fixture
def start_filter(loop, sink, tmp_path, dkim_dns):
    servers = []

    def start(outgoing: bool, **settings) -> Filter:
        settings.setdefault("reinject_outgoing_port", sink.port)
        settings.setdefault("reinject_incoming_port", sink.port)
        config = Config(mail_domain=DOMAIN, mailboxes_dir=tmp_path / "mailboxes", **settings)
        clock = Clock()
        sock = socket.create_server(("127.0.0.1", 0))
        coroutine = relay_filter.start_server(
            config, outgoing, sock, dnsfunc=dkim_dns.lookup, clock=clock
        )
        servers.append(run(loop, coroutine))
        return Filter(sock.getsockname()[1], config, clock)

    yield start
    for server in servers:
        run(loop, close(server))


def send(
    port: int,
    sender: str,
    recipients: list[str],
    content: bytes,
    options: tuple[str, ...] = (),
    client: smtplib.SMTP | None = None,
) -> tuple[int, str]:
    """Send like Postfix's proxy does; return the reply that ended the transaction."""
    smtp = client or smtplib.SMTP("127.0.0.1", port, local_hostname="postfix", timeout=10)
    try:
        smtp.ehlo()
        code, text = smtp.mail(sender, list(options))
        if code != 250:
            smtp.rset()
            return code, text.decode()
        for recipient in recipients:
            code, text = smtp.rcpt(recipient)
            if code != 250:
                smtp.rset()
                return code, text.decode()
        try:
            code, text = smtp.data(content)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        return code, text.decode()
    finally:
        if client is None:
            smtp.quit()


def encrypted_mail(sender: str = ALICE, recipient: str = REMOTE) -> bytes:
    return s.pgp_mime(ENCRYPTED, sender, recipient)


# --- outgoing ------------------------------------------------------------------------


def test_outgoing_encrypted_mail_is_relayed_unchanged(start_filter, sink):
    f = start_filter(outgoing=True)
    mail = encrypted_mail()
    assert send(f.port, ALICE, [REMOTE, BOB], mail) == (250, "2.0.0 Ok: queued as SINK1")
    assert sink.received == [(ALICE, [REMOTE, BOB], mail, [])]


def test_outgoing_cleartext_to_remote_is_refused(start_filter, sink):
    f = start_filter(outgoing=True)
    code, text = send(f.port, ALICE, [REMOTE], s.cleartext(ALICE, REMOTE))
    assert (code, text) == (523, "Encryption Needed: Invalid Unencrypted Mail")
    assert sink.received == []


def test_outgoing_cleartext_to_local_recipients(start_filter, sink):
    f = start_filter(outgoing=True)
    f.mailbox(BOB, enforce=False)
    f.mailbox("dave@example.org", enforce=True)
    mail = s.cleartext(ALICE, BOB)
    assert send(f.port, ALICE, [BOB], mail)[0] == 250
    assert send(f.port, ALICE, ["new@example.org"], mail)[0] == 250
    assert send(f.port, ALICE, ["Dave@Example.org"], mail)[0] == 523
    assert send(f.port, ALICE, [BOB, "dave@example.org"], mail)[0] == 523
    assert send(f.port, ALICE, [BOB, REMOTE], mail)[0] == 523
    assert [rcpts for _unused, rcpts, _unused, _unused in sink.received] == [
        [BOB],
        ["new@example.org"],
    ]


def test_outgoing_cleartext_to_path_like_local_part_is_refused(start_filter, sink):
    f = start_filter(outgoing=True)
    assert send(f.port, ALICE, ['"../x"@example.org'], s.cleartext())[0] == 523


def test_outgoing_securejoin_and_setup_message(start_filter, sink):
    f = start_filter(outgoing=True)
    assert send(f.port, ALICE, [REMOTE], s.securejoin("vg-request", ALICE, REMOTE))[0] == 250
    assert send(f.port, ALICE, [ALICE], s.setup_message(ALICE, ALICE))[0] == 250
    assert send(f.port, ALICE, [REMOTE], s.setup_message(ALICE, REMOTE))[0] == 523
    assert len(sink.received) == 2


@pytest.mark.parametrize("sender", ['"a@b"@example.org', "alice"])
def test_outgoing_sender_needs_exactly_one_at(start_filter, sink, sender):
    f = start_filter(outgoing=True)
    code, text = send(f.port, sender, [REMOTE], encrypted_mail(sender))
    assert (code, text) == (553, "5.1.7 Envelope sender must contain exactly one @")
    assert sink.received == []


def test_outgoing_from_header_must_match_envelope_sender(start_filter, sink):
    f = start_filter(outgoing=True)
    code, text = send(f.port, ALICE, [REMOTE], encrypted_mail(sender=BOB))
    assert code == 500 and "From" in text
    assert send(f.port, ALICE, [REMOTE], encrypted_mail(sender="ALICE@example.ORG"))[0] == 250
    two_from = encrypted_mail().replace(b"From: <", b"From: <bob@example.org>\r\nFrom: <", 1)
    assert send(f.port, ALICE, [REMOTE], two_from)[0] == 500
    no_from = encrypted_mail().replace(b"From: <alice@example.org>\r\n", b"")
    assert send(f.port, ALICE, [REMOTE], no_from)[0] == 500
    assert len(sink.received) == 1


def test_outgoing_rate_limit(start_filter, sink):
    f = start_filter(outgoing=True, max_user_send_per_minute=60, max_user_send_burst_size=10)
    mail = encrypted_mail()
    for _unused in range(10):
        assert send(f.port, ALICE, [REMOTE], mail)[0] == 250
    # Worded as the reference relay's (SPEC section 12): one token back takes a second.
    assert send(f.port, ALICE, [REMOTE], mail) == (
        450,
        f"4.7.1: Too much mail from {ALICE}, try again in 1 second",
    )
    # Another sender has a bucket of its own.
    assert send(f.port, BOB, [REMOTE], encrypted_mail(BOB))[0] == 250
    # 60 a minute: one more message a second.
    f.clock.now += 1.0
    assert send(f.port, ALICE, [REMOTE], mail)[0] == 250
    assert send(f.port, ALICE, [REMOTE], mail)[0] == 450
    f.clock.now += 3600
    for _unused in range(10):
        assert send(f.port, ALICE, [REMOTE], mail)[0] == 250
    assert send(f.port, ALICE, [REMOTE], mail)[0] == 450
    assert len(sink.received) == 22


def test_the_rate_limit_reply_says_when_to_try_again(start_filter, sink):
    f = start_filter(outgoing=True, max_user_send_per_minute=6, max_user_send_burst_size=1)
    assert send(f.port, ALICE, [REMOTE], encrypted_mail())[0] == 250
    # Six a minute: the next token is ten seconds away, then two and a half.
    assert send(f.port, ALICE, [REMOTE], encrypted_mail())[1].endswith("try again in 10 seconds")
    f.clock.now += 7.5
    reply = send(f.port, ALICE, [REMOTE], encrypted_mail())
    assert reply == (450, f"4.7.1: Too much mail from {ALICE}, try again in 3 seconds")
    f.clock.now += 2.5
    assert send(f.port, ALICE, [REMOTE], encrypted_mail())[0] == 250


def test_rate_limiter_forgets_idle_senders():
    clock = Clock()
    limiter = relay_filter.RateLimiter(60, 10, clock)
    for index in range(100):
        assert limiter.allow(f"user{index}@example.org")
    assert len(limiter) == 100
    clock.now += 3600
    assert limiter.allow(ALICE)
    assert len(limiter) == 1


def test_outgoing_oversize_is_refused(start_filter, sink):
    f = start_filter(outgoing=True, max_message_size=5000)
    big = s.pgp_mime(s.armor(s.PKESK + s.packet(18, s.seipd_body(6000))), ALICE, REMOTE)
    assert send(f.port, ALICE, [REMOTE], big) == (552, "5.3.4 Message too big")
    huge = s.pgp_mime(s.armor(s.PKESK + s.packet(18, s.seipd_body(200_000))), ALICE, REMOTE)
    assert send(f.port, ALICE, [REMOTE], huge)[0] == 552
    assert send(f.port, ALICE, [REMOTE], encrypted_mail())[0] == 250
    assert len(sink.received) == 1


def test_reinjection_down_is_a_temporary_failure(start_filter, sink):
    f = start_filter(outgoing=True, reinject_outgoing_port=free_port())
    reply = send(f.port, ALICE, [REMOTE], encrypted_mail())
    assert f"{reply[0]} {reply[1]}" == relay_filter.REPLY_REINJECT_DOWN


def test_reinjection_refusal_is_passed_back(start_filter, sink):
    f = start_filter(outgoing=True)
    code, text = send(f.port, ALICE, [REMOTE, sink.refuse_recipient], encrypted_mail())
    assert (code, text) == (550, "5.1.1 <refused@example.net>: Recipient address rejected")
    assert sink.received == []


def filtered(direction: str, via: str, result: str, rule: str) -> str:
    labels = f"direction={direction},result={result},rule={rule},via={via}"
    return "chatmail_filter_messages_total{" + labels + "}"


def test_the_outgoing_filter_counts_each_decision_by_rule(start_filter, sink):
    f = start_filter(outgoing=True, max_user_send_burst_size=5)
    counted = Counted()
    assert send(f.port, ALICE, [REMOTE], encrypted_mail())[0] == 250
    for _unused in range(3):
        assert send(f.port, ALICE, [REMOTE], s.cleartext(ALICE, REMOTE))[0] == 523
    assert send(f.port, ALICE, [REMOTE, sink.refuse_recipient], encrypted_mail())[0] == 550
    assert send(f.port, ALICE, [REMOTE], encrypted_mail())[0] == 450  # the sixth: rate limit
    assert counted.moved() == {
        filtered("outgoing", "smtp", "accepted", "encrypted"): 1,
        filtered("outgoing", "smtp", "refused", "encryption_needed"): 3,
        filtered("outgoing", "smtp", "refused", "reinjection"): 1,
        filtered("outgoing", "smtp", "refused", "rate_limit"): 1,
    }


def test_the_incoming_filter_counts_dkim_refusals(start_filter, sink):
    f = start_filter(outgoing=False)
    counted = Counted()
    assert send(f.port, REMOTE, [BOB], encrypted_mail(REMOTE, BOB))[0] == 554
    assert counted.moved() == {filtered("incoming", "smtp", "refused", "dkim"): 1}


# --- switched-off accounts (SPEC section 12) -----------------------------------------


def switch_off(f: Filter, address: str) -> None:
    f.mailbox(address, enforce=True)
    mailbox.directory(f.config, address).joinpath(mailbox.PASSWORD_FILE).write_text("{X}x\n")
    assert mailbox.set_disabled(f.config, address, True)


def test_mail_from_a_switched_off_account_is_answered_250_and_dropped(start_filter, sink):
    f = start_filter(outgoing=True)
    switch_off(f, ALICE)
    counted = Counted()
    assert send(f.port, ALICE, [REMOTE, BOB], encrypted_mail()) == (250, "2.0.0 OK")
    # Whatever it is: the rules are not even asked.
    assert send(f.port, ALICE, [REMOTE], s.cleartext(ALICE, REMOTE)) == (250, "2.0.0 OK")
    assert sink.received == []
    assert counted.moved() == {filtered("outgoing", "smtp", "accepted", "disabled"): 2}
    assert mailbox.set_disabled(f.config, ALICE, False)
    assert send(f.port, ALICE, [REMOTE], encrypted_mail())[0] == 250
    assert len(sink.received) == 1


@pytest.mark.parametrize("outgoing", [True, False])
def test_switched_off_recipients_are_left_out(start_filter, sink, dkim_dns, outgoing):
    f = start_filter(outgoing=outgoing)
    switch_off(f, BOB)
    sender = BOB.replace("bob", "dave") if outgoing else REMOTE
    mail = encrypted_mail(sender, ALICE)
    if not outgoing:
        mail = dkim_dns.sign(mail, "example.net")
    # Upper case reaches the same account: Dovecot lowercases user names.
    assert send(f.port, sender, [ALICE, BOB.upper()], mail)[0] == 250
    assert sink.received == [(sender, [ALICE], mail, [])]
    # A message for nobody else is answered as if queued, and goes nowhere.
    assert send(f.port, sender, [BOB], mail) == (250, "2.0.0 OK")
    assert len(sink.received) == 1


def test_several_messages_and_rset_in_one_session(start_filter, sink):
    f = start_filter(outgoing=True)
    client = smtplib.SMTP("127.0.0.1", f.port, local_hostname="postfix", timeout=10)
    mail = encrypted_mail()
    assert send(f.port, ALICE, [REMOTE], mail, client=client)[0] == 250
    assert send(f.port, ALICE, [REMOTE], s.cleartext(), client=client)[0] == 523
    client.mail(ALICE)
    client.rcpt("other@example.net")
    client.rset()
    assert send(f.port, ALICE, [BOB], mail, client=client)[0] == 250
    client.quit()
    assert [rcpts for _unused, rcpts, _unused, _unused in sink.received] == [[REMOTE], [BOB]]


def test_mail_options_and_utf8_are_passed_on(start_filter, sink):
    f = start_filter(outgoing=True)
    mail = encrypted_mail().replace(b"Subject: [...]", "Subject: Grüße".encode())
    options = ("BODY=8BITMIME", "SMTPUTF8")
    assert send(f.port, ALICE, [REMOTE], mail, options)[0] == 250
    [(_unused, _unused, content, received_options)] = sink.received
    assert content == mail
    assert received_options == list(options)


def test_dots_and_long_lines_survive_unchanged(start_filter, sink):
    f = start_filter(outgoing=True)
    f.mailbox(BOB, enforce=False)
    mail = s.cleartext(ALICE, BOB, text=".\r\n..leading dots\r\n" + "x" * 5000)
    assert send(f.port, ALICE, [BOB], mail)[0] == 250
    assert sink.received[0][2] == mail


# --- incoming and DKIM ---------------------------------------------------------------


def test_incoming_signed_encrypted_mail_is_accepted(start_filter, sink, dkim_dns, caplog):
    f = start_filter(outgoing=False)
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, REMOTE, ALICE), "example.net")
    with caplog.at_level(logging.INFO, logger="chatrelay.filter"):
        assert send(f.port, REMOTE, [ALICE], mail) == (250, "2.0.0 Ok: queued as SINK1")
    assert sink.received == [(REMOTE, [ALICE], mail, [])]
    # The operator's log names the domain whose signature admitted the mail.
    assert "incoming: accept 250 (encrypted, DKIM valid for d=example.net)" in caplog.text


def test_incoming_without_signature(start_filter, sink):
    f = start_filter(outgoing=False)
    mail = s.pgp_mime(ENCRYPTED, REMOTE, ALICE)
    assert send(f.port, REMOTE, [ALICE], mail) == (554, "5.7.1 No DKIM signature found")
    assert sink.received == []


@pytest.mark.parametrize(
    "signer",
    ["other.example", "mail.example.net"],
    ids=["other domain", "subdomain (relaxed alignment)"],
)
def test_incoming_misaligned_signature(start_filter, sink, dkim_dns, signer):
    f = start_filter(outgoing=False)
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, REMOTE, ALICE), signer)
    assert send(f.port, REMOTE, [ALICE], mail) == (554, "5.7.1 No valid DKIM signature found")
    assert sink.received == []


def test_incoming_signature_by_parent_domain_is_not_aligned(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False)
    sender = "carol@mail.example.net"
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, sender, ALICE), "example.net")
    assert send(f.port, sender, [ALICE], mail)[0] == 554
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, sender, ALICE), "mail.example.net")
    assert send(f.port, sender, [ALICE], mail)[0] == 250


def test_incoming_altered_body_fails_dkim(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False)
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, REMOTE, ALICE), "example.net")
    altered = mail.replace(b"Version: 1\r\n", b"Version: 1\r\n\r\n")
    assert altered != mail
    assert send(f.port, REMOTE, [ALICE], altered) == (
        554,
        "5.7.1 No valid DKIM signature found",
    )


def test_incoming_altered_from_fails_dkim(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False)
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, REMOTE, ALICE), "example.net")
    spoofed = mail.replace(b"From: <carol@", b"From: <mallory@")
    assert send(f.port, REMOTE, [ALICE], spoofed)[0] == 554


def test_incoming_unknown_key_fails_dkim(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False)
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, REMOTE, ALICE), "example.net")
    unpublished = mail.replace(b"s=sel;", b"s=gone;")
    assert unpublished != mail
    assert send(f.port, REMOTE, [ALICE], unpublished)[0] == 554


def test_incoming_dns_timeout_is_a_temporary_failure(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False)
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, REMOTE, ALICE), "example.net")
    slow = mail.replace(b"s=sel;", b"s=slow;")
    assert slow != mail
    reply = send(f.port, REMOTE, [ALICE], slow)
    assert f"{reply[0]} {reply[1]}" == relay_filter.REPLY_DKIM_TEMPFAIL
    assert sink.received == []


def test_incoming_aligned_signature_after_a_foreign_one(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False)
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, REMOTE, ALICE), "example.net")
    mail = dkim_dns.sign(mail, "other.example")
    assert send(f.port, REMOTE, [ALICE], mail)[0] == 250


def test_incoming_ip_literal_sender_skips_dkim(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False)
    sender = "carol@[192.0.2.1]"
    before = dkim_dns.lookups
    assert send(f.port, sender, [ALICE], s.pgp_mime(ENCRYPTED, sender, ALICE))[0] == 250
    assert dkim_dns.lookups == before


def test_incoming_cleartext_depends_on_recipients(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False)
    f.mailbox(ALICE, enforce=True)
    f.mailbox(BOB, enforce=False)
    mail = dkim_dns.sign(s.cleartext(REMOTE, ALICE), "example.net")
    assert send(f.port, REMOTE, [ALICE], mail) == (
        523,
        "Encryption Needed: Invalid Unencrypted Mail",
    )
    assert send(f.port, REMOTE, [ALICE, BOB], mail)[0] == 523
    assert send(f.port, REMOTE, [BOB], mail)[0] == 250
    unsigned = s.cleartext(REMOTE, BOB)
    assert send(f.port, REMOTE, [BOB], unsigned) == (554, "5.7.1 No DKIM signature found")
    assert len(sink.received) == 1


def test_incoming_securejoin_and_bounce(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False)
    f.mailbox(ALICE, enforce=True)
    join = dkim_dns.sign(s.securejoin("vc-request", REMOTE, ALICE), "example.net")
    assert send(f.port, REMOTE, [ALICE], join)[0] == 250
    bounce = s.mailer_daemon_report("MAILER-DAEMON@example.net", ALICE)
    assert send(f.port, "<>", [ALICE], dkim_dns.sign(bounce, "example.net"))[0] == 250
    assert send(f.port, "<>", [ALICE], bounce)[0] == 554
    assert [sender for sender, _unused, _unused, _unused in sink.received] == [REMOTE, "<>"]


def test_incoming_oversize(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False, max_message_size=5000)
    body = s.pgp_mime(s.armor(s.PKESK + s.packet(18, s.seipd_body(6000))), REMOTE, ALICE)
    mail = dkim_dns.sign(body, "example.net")
    assert send(f.port, REMOTE, [ALICE], mail) == (552, "5.3.4 Message too big")


def test_incoming_has_no_rate_limit_or_sender_rule(start_filter, sink, dkim_dns):
    f = start_filter(outgoing=False, max_user_send_burst_size=1)
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, REMOTE, ALICE), "example.net")
    for _unused in range(3):
        assert send(f.port, REMOTE, [ALICE], mail)[0] == 250


# --- the decision functions never raise on junk -------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000))
def test_checks_never_raise_on_random_content(data):
    config = Config(mail_domain=DOMAIN, mailboxes_dir=Path("/nonexistent"))
    verdict = relay_filter.check_outgoing(config, ALICE, [REMOTE], data)
    assert verdict.reply is not None
    verdict = relay_filter.check_incoming(config, [ALICE], data, dnsfunc=lambda *a, **k: None)
    assert verdict.reply is not None


# --- the entry point -----------------------------------------------------------------


def connect(port: int, deadline: float) -> smtplib.SMTP:
    while True:
        try:
            return smtplib.SMTP("127.0.0.1", port, local_hostname="postfix", timeout=10)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _interpreters() -> list[str]:
    """This interpreter, and Debian's own when it has the packages the relay installs."""
    found = [sys.executable]
    system = Path("/usr/bin/python3")
    # A venv's python links to the system binary; its prefix tells them apart.
    if system.exists() and sys.prefix != sys.base_prefix:
        probe = subprocess.run(
            [str(system), "-c", "import aiosmtpd, dkim"], capture_output=True, check=False
        )
        if probe.returncode == 0:
            found.append(str(system))
    return found


@pytest.mark.parametrize("python", _interpreters())
def test_command_line_entry_point(tmp_path, sink, python):
    port = free_port()
    settings = tmp_path / "relay.ini"
    settings.write_text(
        "[relay]\n"
        f"mail_domain = {DOMAIN}\n"
        f"mailboxes_dir = {tmp_path}\n"
        f"filter_outgoing_port = {port}\n"
        f"reinject_outgoing_port = {sink.port}\n"
    )
    package_root = str(Path(chatrelay.__file__).parents[1])
    process = subprocess.Popen(
        [python, "-m", "chatrelay.filter", "outgoing", "--config", str(settings)],
        env={**os.environ, "PYTHONPATH": package_root},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = connect(port, time.monotonic() + 10)
        assert send(port, ALICE, [REMOTE], encrypted_mail(), client=client)[0] == 250
        assert send(port, ALICE, [REMOTE], s.cleartext(), client=client)[0] == 523
        client.quit()
    finally:
        process.terminate()
        _unused, log = process.communicate(timeout=10)
    assert len(sink.received) == 1
    assert "outgoing: accept 250 (encrypted)" in log
    assert "outgoing: reject 523 (not encrypted)" in log
    # The log tells decisions, not who wrote to whom.
    assert ALICE not in log and REMOTE not in log
