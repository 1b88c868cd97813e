"""Mail leaving the relay carries a DKIM signature that verifies against its key."""

from __future__ import annotations

import email
import email.policy
import os
import re

import dkim
import dns.message
import dns.query
import dns.rdatatype
from mailclient import pgp_mime, submit, wait_for_messages


def public_key_record(host, selector: str) -> bytes:
    """The TXT record a resolver would serve for the selector, from the installed key."""
    pem = host.run(
        f"openssl rsa -in /etc/opendkim/keys/{selector}.private -pubout 2>/dev/null"
    ).stdout
    key = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert key, f"no key installed for selector {selector}"
    return f"v=DKIM1; k=rsa; p={key}".encode()


def published_record(server: str, name: bytes) -> bytes:
    """The TXT record as the relay's authoritative DNS server serves it."""
    query = dns.message.make_query(name.decode(), dns.rdatatype.TXT)
    response = dns.query.udp(query, server, timeout=5)
    [answer] = [rrset for rrset in response.answer if rrset.rdtype == dns.rdatatype.TXT]
    return b"".join(b"".join(rdata.strings) for rdata in answer)


def test_outgoing_mail_is_signed(relay_ip, account, domain, host, gpg):
    # An unresolvable domain bounces at once; the bounce returns the message
    # exactly as it left, signature included.
    remote = "someone@nowhere.invalid"
    submit(relay_ip, account, remote, pgp_mime(account[0], remote, gpg.encrypt("signed")))
    [bounce] = wait_for_messages(relay_ip, *account, count=1)
    parsed = email.message_from_bytes(bounce, policy=email.policy.compat32)
    [returned] = [
        part.get_payload(0) for part in parsed.walk() if part.get_content_type() == "message/rfc822"
    ]
    original = returned.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    signature = returned["DKIM-Signature"]
    assert signature, "the message left without a DKIM signature"
    tags = dict(re.findall(r"\b([a-z]+)=([^;\s]+)", signature))
    assert tags["d"] == domain
    assert tags["s"] == os.environ.get("CHATMAIL_DKIM_SELECTOR", tags["s"])
    # With a DNS server for the domain (the dns scenario), the key as published;
    # otherwise the key as installed on the relay.
    server = os.environ.get("CHATMAIL_DNS_SERVER")

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{tags['s']}._domainkey.{domain}.".encode()
        return published_record(server, name) if server else public_key_record(host, tags["s"])

    assert dkim.verify(original, dnsfunc=lookup)
    assert not dkim.verify(original.replace(b"Subject: [...]", b"Subject: [..]"), dnsfunc=lookup)


def test_bounce_for_an_unknown_local_user_is_signed(relay_ip, account, domain, host, gpg):
    unknown = f"nobody0{account[0][7:9]}@{domain}"
    submit(relay_ip, account, unknown, pgp_mime(account[0], unknown, gpg.encrypt("hello?")))
    [bounce] = wait_for_messages(relay_ip, *account, count=1)
    assert b"Undelivered Mail Returned to Sender" in bounce
    # Local delivery strips signatures, so the signer's own log tells.
    log = host.run("journalctl --no-pager -o cat -u 'postfix*' -u opendkim --since -2min").stdout
    [bounce_id] = re.findall(r"sender non-delivery notification: (\w+)", log)[-1:]
    selector = re.escape(os.environ.get("CHATMAIL_DKIM_SELECTOR", "")) or r"\w+"
    assert re.search(
        rf"{bounce_id}: DKIM-Signature field added \(s={selector}, d={re.escape(domain)}\)", log
    )
