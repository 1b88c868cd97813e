"""Mail leaving the relay carries a DKIM signature that verifies against its key."""

from __future__ import annotations

import email
import email.policy
import re

import dkim
from mailclient import pgp_mime, smtp_login, wait_for_messages


def public_key_record(host, selector: str) -> bytes:
    """The TXT record a resolver would serve for the selector, from the installed key."""
    pem = host.run(
        f"openssl rsa -in /etc/opendkim/keys/{selector}.private -pubout 2>/dev/null"
    ).stdout
    key = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert key, f"no key installed for selector {selector}"
    return f"v=DKIM1; k=rsa; p={key}".encode()


def test_outgoing_mail_is_signed(relay_ip, account, domain, host, gpg):
    # An unresolvable domain bounces at once; the bounce returns the message
    # exactly as it left, signature included.
    remote = "someone@nowhere.invalid"
    smtp = smtp_login(relay_ip, *account)
    try:
        smtp.sendmail(account[0], [remote], pgp_mime(account[0], remote, gpg.encrypt("signed")))
    finally:
        smtp.quit()
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
    record = public_key_record(host, tags["s"])

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{tags['s']}._domainkey.{domain}.".encode()
        return record

    assert dkim.verify(original, dnsfunc=dns)
    assert not dkim.verify(original.replace(b"Subject: [...]", b"Subject: [..]"), dnsfunc=dns)
