"""The encryption filter: a Postfix before-queue SMTP proxy (smtpd_proxy_filter).

Postfix's smtpd hands every transaction to this proxy before queueing it. The proxy
decides on the whole message at end of DATA and either answers with a rejection or
relays the unchanged message to the reinjection smtpd, passing that server's reply
back, so a message is queued exactly when the client is told it was.

    python3 -m chatrelay.filter outgoing --config /etc/chatmail/relay.ini
    python3 -m chatrelay.filter incoming --config /etc/chatmail/relay.ini
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import smtplib
import socket
import time
from collections.abc import Callable, Iterable
from email.message import Message
from pathlib import Path
from typing import Any, NamedTuple

import dkim
import dkim.util
from aiosmtpd.smtp import SMTP, Envelope, Session
from dkim.dnsplug import get_txt

from chatrelay import config as relay_config
from chatrelay import mailbox, metrics, openpgp, systemd

log = logging.getLogger("chatrelay.filter")

LISTEN_HOST = "127.0.0.1"
REINJECT_HOST = "127.0.0.1"
# Room above max_message_size so that a message just over the limit reaches our own
# check (and its reply text) instead of aiosmtpd's generic one, while memory stays bounded.
SIZE_SLACK = 64 * 1024
# Postfix passes long lines through unchanged; refusing them at 1000 octets as aiosmtpd
# does by default would reject real-world mail, so allow long lines but not unbounded ones.
LINE_LENGTH_LIMIT = 1024 * 1024
# Below Postfix's smtpd_proxy_timeout (100 s), so Postfix hears our answer in time.
REINJECT_TIMEOUT = 60.0
# Verifying costs DNS lookups; a few signatures suffice for any real sender.
MAX_DKIM_SIGNATURES = 5

REPLY_BAD_SENDER = "553 5.1.7 Envelope sender must contain exactly one @"
REPLY_FROM_MISMATCH = "500 5.7.1 From: header address does not match the envelope sender"
REPLY_TOO_BIG = "552 5.3.4 Message too big"
REPLY_ENCRYPTION_NEEDED = "523 Encryption Needed: Invalid Unencrypted Mail"
REPLY_NO_DKIM = "554 5.7.1 No DKIM signature found"
REPLY_BAD_DKIM = "554 5.7.1 No valid DKIM signature found"
REPLY_DKIM_TEMPFAIL = "451 4.4.3 Temporary DNS failure looking up the DKIM key"
REPLY_REINJECT_DOWN = "451 4.3.0 Temporary failure passing the message on, try again later"
REPLY_INTERNAL_ERROR = "451 4.3.0 Internal error in the encryption filter, try again later"
# What a switched-off sender, or a message only for switched-off recipients, is told
# (SPEC section 12): the same as for mail that was queued.
REPLY_DROPPED = "250 2.0.0 OK"

DnsFunc = Callable[..., Any]


class Verdict(NamedTuple):
    """A decision on one message: reply is None to accept; reason is for the log,
    rule names what decided for the metrics (chatmail_filter_messages_total)."""

    reply: str | None
    reason: str
    rule: str


# A message from a switched-off account, or only for switched-off ones (SPEC
# section 12): answered REPLY_DROPPED and passed on to nobody.
DROPPED = Verdict(None, "switched-off account: dropped", "disabled")


def ascii_text(text: str) -> str:
    """Make text safe for an SMTP reply line (our peer may not speak SMTPUTF8)."""
    printable = "".join(char if char.isprintable() else "?" for char in text)
    return printable.encode("ascii", "replace").decode("ascii")


class RateLimiter:
    """Token bucket per sender: burst messages at once, refilled at per_minute a minute."""

    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._next_prune = 0.0

    def _tokens(self, key: str, now: float) -> float:
        tokens, then = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate)

    def allow(self, key: str) -> bool:
        """Take one token for key; False (and nothing taken) when none is left."""
        now = self.clock()
        self._prune(now)
        tokens = self._tokens(key, now)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def wait(self, key: str) -> float:
        """Seconds until key has a token again (0 if it has one now)."""
        missing = 1.0 - self._tokens(key, self.clock())
        return max(0.0, missing / self.rate) if self.rate > 0 else float("inf")

    def _prune(self, now: float) -> None:
        # A full bucket is the same as no bucket: drop those now and then, so memory
        # stays proportional to the senders active in the last refill period.
        if now < self._next_prune:
            return
        self._next_prune = now + 60.0
        full = [key for key in self._buckets if self._tokens(key, now) >= self.burst]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def _domain(address: str) -> str:
    return address.rpartition("@")[2]


def domain_key(domain: str) -> str:
    """Normalise a domain for comparison: case, trailing dot, IDN to A-labels."""
    domain = domain.strip().rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def accepts_cleartext(config: relay_config.Config, recipient: str) -> bool:
    """True for a local recipient who has not opted in to encrypted-only mail."""
    # A name that cannot be an account has no mailbox to take the cleartext.
    address = _local_account(config, recipient)
    if address is None:
        return False
    try:
        return not mailbox.enforces_e2ee(config, address)
    except OSError:
        return False


def _local_account(config: relay_config.Config, address: str) -> str | None:
    """The account address names (Dovecot lowercases user names), None if not ours."""
    local_part, at, domain = address.rpartition("@")
    if not at or not local_part or domain_key(domain) != domain_key(config.mail_domain):
        return None
    account = f"{local_part.lower()}@{config.mail_domain}"
    return account if mailbox.is_address(config, account) else None


def _switched_off(config: relay_config.Config, address: str) -> bool:
    account = _local_account(config, address)
    try:
        return account is not None and mailbox.is_disabled(config, account)
    except OSError:
        return False


def reachable_recipients(
    config: relay_config.Config, sender: str, recipients: Iterable[str]
) -> list[str]:
    """Whom a message still goes to once switched-off accounts are left out (SPEC
    section 12): nobody if its sender's is, else the recipients whose is not."""
    if _switched_off(config, sender):
        return []
    return [recipient for recipient in recipients if not _switched_off(config, recipient)]


def rate_limit_reply(address: str, wait: float) -> str:
    """The reference relay's wording (SPEC section 12), which tools match on."""
    seconds = max(1, math.ceil(wait))
    unit = "second" if seconds == 1 else "seconds"
    return f"450 4.7.1: Too much mail from {ascii_text(address)}, try again in {seconds} {unit}"


def _cleartext_allowed(config: relay_config.Config, recipients: Iterable[str]) -> bool:
    recipients = list(recipients)
    return bool(recipients) and all(accepts_cleartext(config, rcpt) for rcpt in recipients)


def check_outgoing(
    config: relay_config.Config, sender: str, recipients: list[str], content: bytes
) -> Verdict:
    """The rules for mail submitted by an account (after sender and rate checks)."""
    msg = openpgp.parse_message(content)
    from_address = openpgp.single_address(msg, "From")
    if from_address is None or from_address.lower() != sender.lower():
        reason = "From: does not match the envelope sender"
        return Verdict(REPLY_FROM_MISMATCH, reason, "from_mismatch")
    if len(content) > config.max_message_size:
        return Verdict(REPLY_TOO_BIG, "message too big", "size")
    if openpgp.is_encrypted(msg, outgoing=True):
        return Verdict(None, "encrypted", "encrypted")
    if openpgp.is_securejoin(msg):
        return Verdict(None, "secure-join request", "securejoin")
    if openpgp.is_autocrypt_setup_message(msg, sender, recipients):
        return Verdict(None, "autocrypt setup message", "autocrypt_setup")
    if _cleartext_allowed(config, recipients):
        return Verdict(None, "cleartext to local recipients accepting it", "cleartext_allowed")
    return Verdict(REPLY_ENCRYPTION_NEEDED, "not encrypted", "encryption_needed")


class _KeyLookup:
    """dnsfunc wrapper that remembers a DNS timeout, which dkimpy reports as plain failure."""

    def __init__(self, dnsfunc: DnsFunc) -> None:
        self.dnsfunc = dnsfunc
        self.timed_out = False

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        try:
            return self.dnsfunc(name, timeout=timeout)
        except dkim.DnsTimeoutError:
            self.timed_out = True
            raise


def check_dkim(msg: Message, content: bytes, dnsfunc: DnsFunc | None = None) -> Verdict:
    """Require a valid DKIM signature whose d= is exactly the From: domain."""
    from_address = openpgp.single_address(msg, "From")
    from_domain = _domain(from_address) if from_address else ""
    if from_domain.startswith("[") and from_domain.endswith("]"):
        # Test relays addressed by IP literal have no DNS to publish a key in.
        return Verdict(None, "IP-literal sender, DKIM skipped", "dkim")
    signatures = msg.get_all("DKIM-Signature", [])
    if not signatures:
        return Verdict(REPLY_NO_DKIM, "no DKIM signature", "dkim")
    if not from_domain:
        return Verdict(REPLY_BAD_DKIM, "DKIM: no single From: address to align with", "dkim")
    wanted = domain_key(from_domain)
    lookup = _KeyLookup(dnsfunc or get_txt)
    problem = "no signature with d= matching From:"
    verifier = None
    for index, signature in enumerate(signatures[:MAX_DKIM_SIGNATURES]):
        try:
            tags = dkim.util.parse_tag_value(str(signature).encode("utf-8", "surrogateescape"))
            signing_domain = tags.get(b"d", b"").decode("ascii", "replace")
            if domain_key(signing_domain) != wanted:
                continue
            if verifier is None:
                verifier = dkim.DKIM(content, logger=_dkim_log, minkey=1024)
            if verifier.verify(idx=index, dnsfunc=lookup):
                return Verdict(None, f"DKIM valid for d={signing_domain}", "dkim")
            problem = "signature not verified (bad signature or no key in DNS)"
        except Exception as exc:  # dkimpy raises assorted errors on junk
            problem = f"{type(exc).__name__}: {exc}"
    if lookup.timed_out:
        # The key may well exist: let the sender retry rather than bounce good mail.
        return Verdict(REPLY_DKIM_TEMPFAIL, "DKIM key lookup timed out", "dkim_tempfail")
    return Verdict(REPLY_BAD_DKIM, f"DKIM: {problem}", "dkim")


def check_incoming(
    config: relay_config.Config,
    recipients: list[str],
    content: bytes,
    dnsfunc: DnsFunc | None = None,
) -> Verdict:
    """The rules for mail arriving from other servers on port 25."""
    if len(content) > config.max_message_size:
        return Verdict(REPLY_TOO_BIG, "message too big", "size")
    msg = openpgp.parse_message(content)
    if openpgp.is_encrypted(msg, outgoing=False):
        kind, rule = "encrypted", "encrypted"
    elif openpgp.is_securejoin(msg):
        kind, rule = "secure-join request", "securejoin"
    elif openpgp.is_mailer_daemon_report(msg):
        kind, rule = "mailer-daemon report", "mailer_daemon"
    elif _cleartext_allowed(config, recipients):
        kind, rule = "cleartext to recipients accepting it", "cleartext_allowed"
    else:
        return Verdict(REPLY_ENCRYPTION_NEEDED, "not encrypted", "encryption_needed")
    verdict = check_dkim(msg, content, dnsfunc)
    if verdict.reply is not None:
        return verdict
    return Verdict(None, f"{kind}, {verdict.reason}", rule)


# dkimpy reports every failure on its logger; our decision line already names it.
_dkim_log = logging.getLogger("chatrelay.filter.dkim")
_dkim_log.propagate = False
_dkim_log.addHandler(logging.NullHandler())


def _format_reply(code: int, text: bytes | str) -> str:
    """Turn a reply read by smtplib back into SMTP reply lines (multi-line kept)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [ascii_text(line) for line in text.splitlines()] or [""]
    head = [f"{code}-{line}" for line in lines[:-1]]
    return "\r\n".join([*head, f"{code} {lines[-1]}"])


def reinject(host: str, port: int, envelope: Envelope) -> str:
    """Relay the message unchanged and return the reinjection server's reply.

    Any refusal ends the transaction without DATA, so the whole message is either
    queued once or not at all; an unreachable server becomes a temporary failure.
    """
    try:
        with smtplib.SMTP(host, port, timeout=REINJECT_TIMEOUT, local_hostname="localhost") as smtp:
            smtp.ehlo_or_helo_if_needed()
            options = list(envelope.mail_options) if smtp.does_esmtp else []
            code, text = smtp.mail(envelope.mail_from, options)
            if code != 250:
                return _format_reply(code, text)
            for recipient in envelope.rcpt_tos:
                code, text = smtp.rcpt(recipient)
                if code not in (250, 251):
                    return _format_reply(code, text)
            code, text = smtp.data(envelope.content)
            if not 200 <= code < 600:
                return REPLY_REINJECT_DOWN
            return _format_reply(code, text)
    except smtplib.SMTPDataError as exc:
        return _format_reply(exc.smtp_code, exc.smtp_error)
    except (OSError, smtplib.SMTPException, UnicodeError) as exc:
        log.warning("reinjection on port %d failed: %s", port, type(exc).__name__)
        return REPLY_REINJECT_DOWN


def count(direction: str, via: str, verdict: Verdict, reply: str) -> None:
    """Count a decision: accepted when the message was queued (the reinjection server
    said 2xx), else refused, by the rule that refused it."""
    if reply.startswith("2"):
        result, rule = "accepted", verdict.rule
    else:
        result = "refused"
        rule = verdict.rule if verdict.reply is not None else "reinjection"
    metrics.FILTERED.labels(direction, via, result, rule).inc()


def _direction(outgoing: bool) -> str:
    return "outgoing" if outgoing else "incoming"


class FilterHandler:
    """aiosmtpd handler applying the outgoing or the incoming rules."""

    def __init__(
        self,
        config: relay_config.Config,
        outgoing: bool,
        *,
        dnsfunc: DnsFunc | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.outgoing = outgoing
        self.direction = _direction(outgoing)
        self.reinject_port = (
            config.reinject_outgoing_port if outgoing else config.reinject_incoming_port
        )
        self.dnsfunc = dnsfunc
        self.limiter = RateLimiter(
            config.max_user_send_per_minute, config.max_user_send_burst_size, clock
        )

    def _decided(self, verdict: Verdict, reply: str) -> str:
        outcome = "accept" if verdict.reply is None else "reject"
        log.info("%s: %s %s (%s)", self.direction, outcome, reply[:3], verdict.reason)
        count(self.direction, "smtp", verdict, reply)
        return reply

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Decided at MAIL already so that a sender over its limit uploads nothing.
        if self.outgoing:
            if address.count("@") != 1:
                verdict = Verdict(REPLY_BAD_SENDER, "envelope sender not one @", "bad_sender")
                return self._decided(verdict, REPLY_BAD_SENDER)
            if not self.limiter.allow(address.lower()):
                reply = rate_limit_reply(address, self.limiter.wait(address.lower()))
                return self._decided(Verdict(reply, "rate limit", "rate_limit"), reply)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    def _check(self, envelope: Envelope) -> Verdict:
        content = envelope.original_content or b""
        if self.outgoing:
            return check_outgoing(self.config, envelope.mail_from, envelope.rcpt_tos, content)
        return check_incoming(self.config, envelope.rcpt_tos, content, self.dnsfunc)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipients = reachable_recipients(self.config, envelope.mail_from, envelope.rcpt_tos)
        if not recipients:
            return self._decided(DROPPED, REPLY_DROPPED)
        envelope.rcpt_tos = recipients
        # Parsing, DKIM's DNS lookups and relaying block; keep them off the event loop
        # so other sessions go on meanwhile.
        verdict = await asyncio.to_thread(self._check, envelope)
        if verdict.reply is not None:
            return self._decided(verdict, verdict.reply)
        reply = await asyncio.to_thread(reinject, REINJECT_HOST, self.reinject_port, envelope)
        return self._decided(verdict, reply)

    async def handle_exception(self, error: Exception) -> str:
        # A bug of ours must not lose mail nor show internals: the client tries again.
        log.error("%s: internal error", self.direction, exc_info=error)
        return REPLY_INTERNAL_ERROR


class FilterSMTP(SMTP):
    """aiosmtpd's SMTP session with a line length limit fit for mail in the wild."""

    line_length_limit = LINE_LENGTH_LIMIT


async def start_server(
    config: relay_config.Config,
    outgoing: bool,
    sock: socket.socket,
    *,
    dnsfunc: DnsFunc | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> asyncio.Server:
    """Serve the filter on an already listening socket (systemd's or our own)."""
    loop = asyncio.get_running_loop()
    handler = FilterHandler(config, outgoing, dnsfunc=dnsfunc, clock=clock)

    def session() -> SMTP:
        return FilterSMTP(
            handler,
            data_size_limit=config.max_message_size + SIZE_SLACK,
            enable_SMTPUTF8=True,
            hostname=config.mail_domain,
            ident="chatrelay filter",
            loop=loop,
        )

    return await loop.create_server(session, sock=sock)


async def serve(config: relay_config.Config, outgoing: bool, sock: socket.socket) -> None:
    server = await start_server(config, outgoing, sock)
    handler_port = config.reinject_outgoing_port if outgoing else config.reinject_incoming_port
    log.info("%s filter ready, reinjecting to port %d", _direction(outgoing), handler_port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 -m chatrelay.filter",
        description="Postfix before-queue filter admitting only end-to-end encrypted mail.",
    )
    parser.add_argument("direction", choices=["outgoing", "incoming"])
    parser.add_argument("--config", type=Path, default=relay_config.DEFAULT_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # aiosmtpd logs every command with addresses at INFO; our decision lines suffice.
    logging.getLogger("mail.log").setLevel(logging.WARNING)

    config = relay_config.load(args.config)
    outgoing = args.direction == "outgoing"
    port = config.filter_outgoing_port if outgoing else config.filter_incoming_port
    sock = systemd.tcp_listener(LISTEN_HOST, port)
    asyncio.run(serve(config, outgoing, sock))


if __name__ == "__main__":
    main()
