"""POST /mxdeliv over real HTTP: the receiving end of HTTPS delivery between relays.

The service runs on a socket of its own, a sink stands in for Postfix's reinjection
smtpd, and DKIM keys come from the shared fake DNS: what the sink receives is what the
relay's queue would hold.
"""

from __future__ import annotations

import http.client
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pgp_samples as s
import pytest
from chatrelay import mailbox, mxdeliv
from chatrelay.config import Config
from relay_servers import free_port, run

DOMAIN = "example.org"
ALICE = "alice@example.org"
REMOTE = "carol@example.net"
ENCRYPTED = s.armor(s.PKESK + s.SEIPD)


@dataclass
class Receiver:
    port: int
    config: Config

    def post(
        self, body: bytes, headers: list[tuple[str, str]], method: str = "POST"
    ) -> tuple[int, str, http.client.HTTPResponse]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.putrequest(method, mxdeliv.PATH)
            for name, value in [*headers, ("Content-Length", str(len(body)))]:
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.read().decode().strip(), response
        finally:
            connection.close()

    def deliver(self, body: bytes, sender: str = REMOTE, recipients=(ALICE,)):
        return self.post(body, mxdeliv.request_headers(sender, recipients))[:2]


@pytest.fixture
def receiver(loop, sink, tmp_path, dkim_dns) -> Iterator:
    runners = []

    def start(**settings) -> Receiver:
        settings.setdefault("reinject_incoming_port", sink.port)
        config = Config(mail_domain=DOMAIN, mailboxes_dir=tmp_path / "mailboxes", **settings)
        sock = socket.create_server(("127.0.0.1", 0))
        runners.append(run(loop, mxdeliv.start_server(config, sock, dnsfunc=dkim_dns.lookup)))
        return Receiver(sock.getsockname()[1], config)

    yield start
    for runner in runners:
        run(loop, runner.cleanup())


def signed(dkim_dns, message: bytes) -> bytes:
    return dkim_dns.sign(message, "example.net")


def test_signed_encrypted_mail_is_queued_and_answered_200(receiver, sink, dkim_dns, caplog):
    r = receiver()
    mail = signed(dkim_dns, s.pgp_mime(ENCRYPTED, REMOTE, ALICE))
    with caplog.at_level(logging.INFO, logger="chatrelay.mxdeliv"):
        assert r.deliver(mail) == (200, "250 2.0.0 Ok: queued as SINK1")
    assert sink.received == [(REMOTE, [ALICE], mail, [])]
    assert (
        "incoming: accept 250 over https (encrypted, DKIM valid for d=example.net)" in caplog.text
    )


def test_several_recipients_in_one_request(receiver, sink, dkim_dns):
    r = receiver()
    bob = "bob@example.org"
    mail = signed(dkim_dns, s.pgp_mime(ENCRYPTED, REMOTE, ALICE))
    assert r.deliver(mail, recipients=[ALICE, bob])[0] == 200
    assert sink.received[0][1] == [ALICE, bob]


def test_switched_off_accounts_are_left_out_and_their_mail_dropped(receiver, sink, dkim_dns):
    r = receiver()
    bob = "bob@example.org"
    home = mailbox.directory(r.config, bob)
    home.mkdir(parents=True)
    (home / mailbox.PASSWORD_FILE).write_text("{X}x\n")
    assert mailbox.set_disabled(r.config, bob, True)
    mail = signed(dkim_dns, s.pgp_mime(ENCRYPTED, REMOTE, ALICE))
    assert r.deliver(mail, recipients=[ALICE, bob])[0] == 200
    assert sink.received == [(REMOTE, [ALICE], mail, [])]
    # Only for the switched-off account: answered as queued (the sender need not retry).
    assert r.deliver(mail, recipients=[bob]) == (200, "250 2.0.0 OK")
    assert len(sink.received) == 1


def test_a_repeated_request_is_answered_as_before_and_queued_once(receiver, sink, dkim_dns, caplog):
    # A sending relay that crashed after the 200 sends the same request again.
    r = receiver()
    mail = signed(dkim_dns, s.pgp_mime(ENCRYPTED, REMOTE, ALICE))
    first = r.deliver(mail)
    with caplog.at_level(logging.INFO, logger="chatrelay.mxdeliv"):
        assert r.deliver(mail) == first == (200, "250 2.0.0 Ok: queued as SINK1")
    assert len(sink.received) == 1
    assert "a repeat, queued before" in caplog.text
    # Another recipient, or other content, is another message.
    bob = "bob@example.org"
    assert r.deliver(mail, recipients=[ALICE, bob])[0] == 200
    other = signed(dkim_dns, s.pgp_mime(ENCRYPTED, REMOTE, bob))
    assert r.deliver(other)[0] == 200
    assert len(sink.received) == 3


def test_a_refused_request_is_checked_again_when_repeated(receiver, sink, dkim_dns):
    mail = signed(dkim_dns, s.pgp_mime(ENCRYPTED, REMOTE, ALICE))
    sink.refuse_recipient = ALICE
    r = receiver()
    assert r.deliver(mail)[0] == 400
    sink.refuse_recipient = None
    assert r.deliver(mail)[0] == 200
    assert len(sink.received) == 1


def test_the_memory_of_queued_requests_is_bounded_in_time_and_size():
    now = [1000.0]
    queued = mxdeliv.Queued(window=60, limit=2, clock=lambda: now[0])
    digests = [mxdeliv.Queued.digest(REMOTE, [ALICE], bytes([n])) for n in range(3)]
    for digest in digests:
        queued.add(digest, "250 ok")
    assert [queued.reply(d) for d in digests] == [None, "250 ok", "250 ok"]
    now[0] += 61
    assert queued.reply(digests[2]) is None


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_any_method_but_post_gets_405(receiver, sink, method):
    status, body, response = receiver().post(b"", [], method=method)
    assert (status, response.getheader("Allow")) == (405, "POST")
    assert body.startswith("405 ")
    assert sink.received == []


@pytest.mark.parametrize(
    ("headers", "reply"),
    [
        ([("X-Mail-From", REMOTE)], mxdeliv.REPLY_NO_RECIPIENT),
        ([("X-Mail-From", "carol"), ("X-Mail-To", ALICE)], mxdeliv.REPLY_BAD_SENDER),
        ([("X-Mail-From", ""), ("X-Mail-To", ALICE)], mxdeliv.REPLY_BAD_SENDER),
        ([("X-Mail-From", f"<{REMOTE}>"), ("X-Mail-To", ALICE)], mxdeliv.REPLY_BAD_SENDER),
        (
            [("X-Mail-From", REMOTE), ("X-Mail-From", REMOTE), ("X-Mail-To", ALICE)],
            mxdeliv.REPLY_TWO_SENDERS,
        ),
        ([("X-Mail-From", REMOTE), ("X-Mail-To", "alice")], mxdeliv.REPLY_BAD_RECIPIENT),
        ([("X-Mail-From", REMOTE), ("X-Mail-To", "a b@example.org")], mxdeliv.REPLY_BAD_RECIPIENT),
    ],
)
def test_bad_envelope_headers_are_refused_with_400(receiver, sink, dkim_dns, headers, reply):
    mail = signed(dkim_dns, s.pgp_mime(ENCRYPTED, REMOTE, ALICE))
    assert receiver().post(mail, headers)[:2] == (400, reply)
    assert sink.received == []


def test_a_recipient_of_another_domain_is_refused_no_open_relay(receiver, sink, dkim_dns):
    mail = signed(dkim_dns, s.pgp_mime(ENCRYPTED, REMOTE, "dave@example.com"))
    status, body = receiver().deliver(mail, recipients=[ALICE, "dave@example.com"])
    assert (status, body) == (400, "554 5.7.1 <dave@example.com>: Relay access denied")
    assert sink.received == []


def test_too_many_recipients_is_a_temporary_refusal(receiver, sink, dkim_dns):
    mail = signed(dkim_dns, s.pgp_mime(ENCRYPTED, REMOTE, ALICE))
    recipients = [f"user{i}@example.org" for i in range(3)]
    assert receiver(max_smtp_recipients=2).deliver(mail, recipients=recipients) == (
        503,
        mxdeliv.REPLY_TOO_MANY,
    )


def test_unsigned_and_wrongly_signed_mail_is_refused(receiver, sink, dkim_dns):
    r = receiver()
    mail = s.pgp_mime(ENCRYPTED, REMOTE, ALICE)
    assert r.deliver(mail) == (400, "554 5.7.1 No DKIM signature found")
    forged = signed(dkim_dns, mail).replace(b"Subject:", b"Subject: changed", 1)
    assert r.deliver(forged) == (400, "554 5.7.1 No valid DKIM signature found")
    assert sink.received == []


def test_cleartext_to_an_opted_in_account_is_refused(receiver, sink, dkim_dns):
    r = receiver()
    directory = mailbox.directory(r.config, ALICE)
    directory.mkdir(parents=True)
    (directory / mailbox.E2EE_MARKER).touch()
    status, body = r.deliver(signed(dkim_dns, s.cleartext(REMOTE, ALICE)))
    assert (status, body) == (400, "523 Encryption Needed: Invalid Unencrypted Mail")
    (directory / mailbox.E2EE_MARKER).unlink()
    assert r.deliver(signed(dkim_dns, s.cleartext(REMOTE, ALICE)))[0] == 200


def test_a_message_over_the_size_limit_gets_413(receiver, sink, dkim_dns):
    r = receiver(max_message_size=5000)
    mail = signed(dkim_dns, s.pgp_mime(s.armor(s.PKESK + s.SEIPD + b"x" * 6000), REMOTE, ALICE))
    assert r.deliver(mail) == (413, "552 Message exceeds maximum size")
    assert sink.received == []


def test_a_dkim_key_lookup_timeout_is_a_temporary_refusal(receiver, sink, dkim_dns):
    mail = dkim_dns.sign(s.pgp_mime(ENCRYPTED, REMOTE, ALICE), "example.net", selector="slow")
    assert receiver().deliver(mail) == (
        503,
        "451 4.4.3 Temporary DNS failure looking up the DKIM key",
    )


def test_reinjection_down_or_refusing_is_passed_back(receiver, sink, dkim_dns):
    mail = signed(dkim_dns, s.pgp_mime(ENCRYPTED, REMOTE, ALICE))
    status, body = receiver(reinject_incoming_port=free_port()).deliver(mail)
    assert (status, body[:3]) == (503, "451")
    sink.refuse_recipient = ALICE
    status, body = receiver().deliver(mail)
    assert (status, body[:3]) == (400, "550")
    assert sink.received == []


def test_a_bounce_comes_without_sender_and_is_queued_with_the_null_sender(receiver, sink, dkim_dns):
    r = receiver()
    report = signed(dkim_dns, s.mailer_daemon_report("MAILER-DAEMON@example.net", ALICE))
    assert r.post(report, [("X-Mail-To", ALICE)])[0] == 200
    assert sink.received[0][:2] == ("<>", [ALICE])


def test_eight_bit_content_is_reinjected_as_8bitmime(receiver, sink, dkim_dns):
    r = receiver()
    directory = mailbox.directory(r.config, ALICE)
    directory.mkdir(parents=True)
    message = s.cleartext(REMOTE, ALICE, text="nicht verschlüsselt")
    assert r.deliver(signed(dkim_dns, message))[0] == 200
    assert sink.received[0][3] == ["BODY=8BITMIME"]


@pytest.mark.parametrize(
    ("status", "body", "reply"),
    [
        (200, "250 2.0.0 Ok: queued as X\r\n", "250 2.0.0 Ok: queued as X"),
        (400, "554 5.7.1 No DKIM signature found", "554 5.7.1 No DKIM signature found"),
        (413, "552 Message exceeds maximum size", "552 Message exceeds maximum size"),
        (503, "451 4.4.3 later", "451 4.4.3 later"),
        # A status that does not match its reply, or a body that is none: not trusted.
        (200, "554 5.7.1 refused", "451 4.3.0 Unexpected answer to /mxdeliv: HTTP 200"),
        (404, "<html>Not Found</html>", "451 4.3.0 Unexpected answer to /mxdeliv: HTTP 404"),
        (502, "", "451 4.3.0 Unexpected answer to /mxdeliv: HTTP 502"),
    ],
)
def test_the_sender_reads_the_reply_an_answer_carries(status, body, reply):
    assert mxdeliv.reply_of(status, body) == reply


def test_request_headers_leave_out_the_null_sender():
    assert mxdeliv.request_headers("", [ALICE]) == [("X-Mail-To", ALICE)]
    assert mxdeliv.request_headers(REMOTE, [ALICE, "b@x"]) == [
        ("X-Mail-From", REMOTE),
        ("X-Mail-To", ALICE),
        ("X-Mail-To", "b@x"),
    ]
