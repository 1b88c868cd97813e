"""Mail between two relays and from the classic mail world (SPEC §3, §4).

Relays find each other by MX at the test zones' nameserver, deliver to each other over
HTTPS (/mxdeliv) and to the classic world over SMTP, with the peer's certificate verified
(Pebble's root and the classic server's test CA are extra trusted CAs of theirs), and
admit mail from outside only with a valid DKIM signature of the From: domain.
"""

from __future__ import annotations

import re
import time

from mailclient import cleartext_message, pgp_mime, submit, wait_for_messages
from servers import through_classic


def test_encrypted_mail_crosses_over_https_with_aligned_dkim(direction, gpg):
    sender_relay, recipient_relay = direction
    since = time.time() - 1
    sender, recipient = sender_relay.new_account(), recipient_relay.new_account()
    armored = gpg.encrypt("across relays\n")

    message = pgp_mime(sender[0], recipient[0], armored)
    assert submit(sender_relay.ip, sender, recipient[0], message)[0] == {}

    [delivered] = wait_for_messages(recipient_relay.ip, *recipient, count=1, timeout=30)
    assert armored.strip().splitlines()[3].encode() in delivered
    domain = recipient_relay.domain
    sent_log = sender_relay.journal(since, "postfix*", "chatmail-delivery")
    # Postfix handed it to the delivery service, which named the channel it used.
    assert f"{domain}: 1x 250 via https ({domain})" in sent_log, sent_log
    assert re.search(
        rf"to=<{re.escape(recipient[0])}>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+,.*"
        rf" status=sent \(250 .*\({re.escape(domain)} over https\)\)",
        sent_log,
    ), sent_log
    received_log = recipient_relay.journal(since, "chatmail-mxdeliv")
    accepted = (
        f"incoming: accept 250 over https (encrypted, DKIM valid for d={sender_relay.domain})"
    )
    assert accepted in received_log, received_log


def test_a_bounce_from_the_peer_comes_back_signed_and_is_accepted(relay1, relay2, gpg):
    since = time.time() - 1
    sender = relay1.new_account()
    # Never logged in: no such account on relay2, whose Dovecot refuses it after Postfix
    # accepted the message, so relay2 reports back to the sender.
    unknown = f"{sender[0][:9]}@{relay2.domain}"

    submit(relay1.ip, sender, unknown, pgp_mime(sender[0], unknown, gpg.encrypt("anyone?")))

    [bounce] = wait_for_messages(relay1.ip, *sender, count=1, timeout=60)
    assert b"Undelivered Mail Returned to Sender" in bounce
    assert f"<MAILER-DAEMON@{relay2.domain}>".encode() in bounce
    signed = relay2.journal(since, "opendkim")
    assert f"DKIM-Signature field added (s=dkim, d={relay2.domain})" in signed
    # relay2 sent its report over HTTPS, with no envelope sender.
    accepted = relay1.journal(since, "chatmail-mxdeliv")
    report = f"accept 250 over https (mailer-daemon report, DKIM valid for d={relay2.domain})"
    assert report in accepted, accepted


def test_the_classic_world_gets_mail_over_smtp_with_verified_tls(relay1, classic, gpg):
    since = time.time() - 1
    sender = relay1.new_account()
    recipient = f"bob@{classic.domain}"

    assert (
        submit(relay1.ip, sender, recipient, pgp_mime(sender[0], recipient, gpg.encrypt("hi")))[0]
        == {}
    )

    deadline = time.monotonic() + 30
    while f"{classic.domain}: 1x 250 via smtp" not in (
        log := relay1.journal(since, "chatmail-delivery")
    ):
        assert time.monotonic() < deadline, log
        time.sleep(0.5)
    # No /mxdeliv there (nothing listens on 443): HTTPS failed first, then SMTP took it.
    assert f"{classic.domain}: https to {classic.domain} failed" in log
    received = classic.host.run("journalctl --no-pager -o cat -u 'postfix*'").stdout
    assert re.search(rf"to=<{re.escape(recipient)}>.* status=sent", received), received
    assert "TLS connection established from" in received


def test_unsigned_mail_from_the_classic_world_is_refused(relay2, classic, gpg):
    recipient = relay2.new_account()
    sender = f"alice@{classic.domain}"
    message = pgp_mime(sender, recipient[0], gpg.encrypt("unsigned"))

    # Port 2525 of the classic server hands mail on without its DKIM signer.
    outcome = through_classic(classic, sender, recipient[0], message, port=2525)

    assert "status=bounced" in outcome
    assert "said: 554 5.7.1 No DKIM signature found" in outcome
    assert wait_for_messages(relay2.ip, *recipient, count=1, timeout=2) == []


def test_mail_signed_for_another_domain_than_from_is_refused(relay2, classic, gpg):
    recipient = relay2.new_account()
    # The classic server signs forged.test mail with its own key: d=classic.test.
    sender = "mallory@forged.test"
    message = pgp_mime(sender, recipient[0], gpg.encrypt("misaligned"))

    outcome = through_classic(classic, sender, recipient[0], message)

    assert "said: 554 5.7.1 No valid DKIM signature found" in outcome
    signed = classic.host.run("journalctl --no-pager -o cat -u opendkim").stdout
    assert f"DKIM-Signature field added (s=mail, d={classic.domain})" in signed


def test_signed_encrypted_mail_from_the_classic_world_is_delivered(relay2, classic, gpg):
    since = time.time() - 1
    recipient = relay2.new_account()
    sender = f"alice@{classic.domain}"
    armored = gpg.encrypt("signed and encrypted")

    outcome = through_classic(
        classic, sender, recipient[0], pgp_mime(sender, recipient[0], armored)
    )

    assert "status=sent" in outcome
    [delivered] = wait_for_messages(relay2.ip, *recipient, count=1, timeout=30)
    assert armored.strip().splitlines()[3].encode() in delivered
    accepted = relay2.journal(since, "chatmail-filter-incoming")
    assert f"incoming: accept 250 (encrypted, DKIM valid for d={classic.domain})" in accepted


def test_signed_cleartext_reaches_only_accounts_that_accept_it(relay2, classic):
    sender = f"alice@{classic.domain}"
    enforcing = relay2.new_account()
    accepting = relay2.new_account()
    # New accounts refuse cleartext from outside; an account made before that rule has no
    # marker file and still takes it.
    relay2.host.run(f"rm /home/vmail/mail/{relay2.domain}/{accepting[0]}/enforceE2EEincoming")

    refused, delivered = (
        through_classic(classic, sender, account[0], cleartext_message(sender, account[0]))
        for account in (enforcing, accepting)
    )

    assert "said: 523 Encryption Needed" in refused, refused
    assert "status=sent" in delivered
    [message] = wait_for_messages(relay2.ip, *accepting, count=1, timeout=30)
    assert b"this is not encrypted" in message
    assert wait_for_messages(relay2.ip, *enforcing, count=1, timeout=1) == []
