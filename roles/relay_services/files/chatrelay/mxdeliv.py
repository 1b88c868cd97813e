"""HTTPS delivery between relays, POST /mxdeliv (SPEC section 12): the wire format.

A request carries one message: the envelope sender in ``X-Mail-From`` (left out for the
null sender of bounces), one ``X-Mail-To`` per recipient, and the whole message, already
DKIM-signed by the sending relay, as the body. The answer's body is an SMTP reply line;
its HTTP status says what became of the message:

    200  queued (the reinjection server's 250 reply)
    400  refused for good (a 5xx reply, e.g. "554 5.7.1 No DKIM signature found")
    413  larger than the relay takes ("552 Message exceeds maximum size")
    405  any method but POST
    503  refused for now (a 4xx reply); the sender tries again or falls back to SMTP

The receiving end is this module's HTTP service on 127.0.0.1, behind nginx on port
443: the incoming filter's rules over HTTP. It applies exactly the rules of port 25
(chatrelay.filter.check_incoming) and reinjects an accepted message into Postfix's queue
as the SMTP filter does, so a 200 means the message is queued. A sending relay that
crashed after the 200 but before it took note of it sends the same request again: the
receiver remembers what it queued for an hour and answers such a repeat with the first
200 without queuing the message twice. The sending end is
chatrelay.delivery, which builds its requests with request_headers() and reads the
answers with reply_of().

    python3 -m chatrelay.mxdeliv --config /etc/chatmail/relay.ini
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from aiohttp import web
from aiosmtpd.smtp import Envelope

from chatrelay import config as relay_config
from chatrelay import filter as mailfilter
from chatrelay import systemd

log = logging.getLogger("chatrelay.mxdeliv")

PATH = "/mxdeliv"
HEADER_FROM = "X-Mail-From"
HEADER_TO = "X-Mail-To"

REPLY_TOO_BIG = "552 Message exceeds maximum size"
REPLY_METHOD = "405 Method Not Allowed: deliver with POST"
REPLY_NO_RECIPIENT = "503 5.5.1 No recipient: the request has no X-Mail-To header"
REPLY_TWO_SENDERS = "501 5.5.4 More than one X-Mail-From header"
REPLY_BAD_SENDER = "501 5.1.7 Bad sender address syntax in X-Mail-From"
REPLY_BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax in X-Mail-To"
REPLY_TOO_MANY = "452 4.5.3 Too many recipients"

MAX_ADDRESS_LENGTH = 254

# How long, and for how many messages, a queued request is remembered as queued.
REPEAT_WINDOW = 3600.0
REPEAT_LIMIT = 100_000


class Refusal(Exception):
    """A request this relay does not take, with the SMTP reply that says why."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def http_status(reply: str) -> int:
    """The HTTP status that carries an SMTP reply (see the module's table)."""
    code = reply[:3]
    if code.startswith("2"):
        return 200
    if code == "552":
        return 413
    if code == "405":
        return 405
    if code.startswith("4"):
        return 503
    return 400


def is_address(text: str) -> bool:
    """A plausible addr-spec: one local part and one domain, no spaces or brackets."""
    if not text or len(text) > MAX_ADDRESS_LENGTH:
        return False
    if any(not char.isprintable() or char.isspace() or char in "<>,;" for char in text):
        return False
    local, at, domain = text.rpartition("@")
    return bool(at and local and domain) and "@" not in domain


def envelope_of(
    config: relay_config.Config, senders: list[str], recipients: list[str]
) -> tuple[str, list[str]]:
    """Check the envelope headers; return (sender, recipients) or raise Refusal."""
    if len(senders) > 1:
        raise Refusal(REPLY_TWO_SENDERS)
    sender = senders[0].strip() if senders else ""
    if senders and not is_address(sender):
        raise Refusal(REPLY_BAD_SENDER)
    recipients = [recipient.strip() for recipient in recipients]
    if not recipients:
        raise Refusal(REPLY_NO_RECIPIENT)
    if len(recipients) > config.max_smtp_recipients:
        raise Refusal(REPLY_TOO_MANY)
    ours = mailfilter.domain_key(config.mail_domain)
    for recipient in recipients:
        if not is_address(recipient):
            raise Refusal(REPLY_BAD_RECIPIENT)
        if mailfilter.domain_key(recipient.rpartition("@")[2]) != ours:
            # Never an open relay: the reinjection server would pass it on.
            raise Refusal(f"554 5.7.1 <{mailfilter.ascii_text(recipient)}>: Relay access denied")
    return sender, recipients


def smtp_envelope(sender: str, recipients: list[str], content: bytes) -> Envelope:
    """The envelope the reinjection server is given, with the options the content needs."""
    envelope = Envelope()
    envelope.mail_from = sender
    envelope.rcpt_tos = list(recipients)
    envelope.content = envelope.original_content = content
    if not content.isascii():
        envelope.mail_options.append("BODY=8BITMIME")
    if not all(address.isascii() for address in (sender, *recipients)):
        envelope.mail_options.append("SMTPUTF8")
    return envelope


def request_headers(sender: str, recipients: Iterable[str]) -> list[tuple[str, str]]:
    """The envelope as request headers (the sending side)."""
    headers = [(HEADER_FROM, sender)] if sender else []
    headers += [(HEADER_TO, recipient) for recipient in recipients]
    return headers


def reply_of(status: int, body: str) -> str:
    """The SMTP reply an answer carries; a body that is none becomes a temporary failure."""
    line = body.strip().splitlines()[0] if body.strip() else ""
    if len(line) >= 3 and line[:3].isdigit() and http_status(line) == status:
        return mailfilter.ascii_text(line)
    return f"451 4.3.0 Unexpected answer to {PATH}: HTTP {status}"


class Queued:
    """The requests queued lately, by digest of envelope and content, with their replies."""

    def __init__(
        self,
        window: float = REPEAT_WINDOW,
        limit: int = REPEAT_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.limit = limit
        self.clock = clock
        # Oldest first: insertion order, a repeat is not added again.
        self._replies: dict[bytes, tuple[float, str]] = {}

    @staticmethod
    def digest(sender: str, recipients: list[str], content: bytes) -> bytes:
        envelope = "\0".join([sender, *sorted(recipients)]).encode()
        return hashlib.sha256(envelope + b"\0\0" + content).digest()

    def reply(self, digest: bytes) -> str | None:
        """The reply the request got when it was queued, if that was within the window."""
        before = self.clock() - self.window
        while self._replies and next(iter(self._replies.values()))[0] < before:
            del self._replies[next(iter(self._replies))]
        entry = self._replies.get(digest)
        return entry[1] if entry else None

    def add(self, digest: bytes, reply: str) -> None:
        self._replies[digest] = (self.clock(), reply)
        while len(self._replies) > self.limit:
            del self._replies[next(iter(self._replies))]


class Receiver:
    """The HTTP side of the incoming filter: one request, one message."""

    def __init__(
        self,
        config: relay_config.Config,
        *,
        dnsfunc: mailfilter.DnsFunc | None = None,
        queued: Queued | None = None,
    ) -> None:
        self.config = config
        self.dnsfunc = dnsfunc
        self.queued = queued or Queued()

    def _answer(self, reply: str, verdict: mailfilter.Verdict | None) -> web.Response:
        """The HTTP answer carrying reply; verdict (None: no message to decide on, as
        for a GET) is logged and counted like the port-25 filter's decisions."""
        status = http_status(reply)
        outcome = "accept" if status == 200 else "reject"
        reason = verdict.reason if verdict else "not a delivery"
        log.info("incoming: %s %s over https (%s)", outcome, reply[:3], reason)
        if verdict is not None:
            mailfilter.count("incoming", "https", verdict, reply)
        headers = {"Allow": "POST"} if status == 405 else None
        return web.Response(status=status, text=reply + "\r\n", headers=headers)

    async def handle(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return self._answer(REPLY_METHOD, None)
        try:
            sender, recipients = envelope_of(
                self.config,
                request.headers.getall(HEADER_FROM, []),
                request.headers.getall(HEADER_TO, []),
            )
        except Refusal as refusal:
            verdict = mailfilter.Verdict(refusal.reply, "bad envelope headers", "bad_envelope")
            return self._answer(refusal.reply, verdict)
        too_big = mailfilter.Verdict(REPLY_TOO_BIG, "message too big", "size")
        if (request.content_length or 0) > self.config.max_message_size:
            return self._answer(REPLY_TOO_BIG, too_big)
        try:
            content = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._answer(REPLY_TOO_BIG, too_big)
        recipients = mailfilter.reachable_recipients(self.config, sender, recipients)
        if not recipients:
            return self._answer(mailfilter.REPLY_DROPPED, mailfilter.DROPPED)
        verdict = await asyncio.to_thread(
            mailfilter.check_incoming, self.config, recipients, content, self.dnsfunc
        )
        if verdict.reply is not None:
            reply = REPLY_TOO_BIG if verdict.reply == mailfilter.REPLY_TOO_BIG else verdict.reply
            return self._answer(reply, verdict)
        digest = Queued.digest(sender, recipients, content)
        if (earlier := self.queued.reply(digest)) is not None:
            repeat = mailfilter.Verdict(
                None, f"{verdict.reason}; a repeat, queued before", "repeat"
            )
            return self._answer(earlier, repeat)
        envelope = smtp_envelope(sender, recipients, content)
        reply = await asyncio.to_thread(
            mailfilter.reinject,
            mailfilter.REINJECT_HOST,
            self.config.reinject_incoming_port,
            envelope,
        )
        # The reinjection server's reply may span lines; its last one ends it.
        reply = reply.splitlines()[-1]
        if http_status(reply) == 200:
            self.queued.add(digest, reply)
        return self._answer(reply, verdict)


def application(config: relay_config.Config, receiver: Receiver) -> web.Application:
    app = web.Application(client_max_size=config.max_message_size + mailfilter.SIZE_SLACK)
    app.router.add_route("*", PATH, receiver.handle)
    return app


async def start_server(
    config: relay_config.Config,
    sock: socket.socket,
    *,
    dnsfunc: mailfilter.DnsFunc | None = None,
) -> web.AppRunner:
    """Serve /mxdeliv on an already listening socket; the caller cleans the runner up."""
    runner = web.AppRunner(application(config, Receiver(config, dnsfunc=dnsfunc)), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


async def serve(config: relay_config.Config, sock: socket.socket) -> None:
    runner = await start_server(config, sock)
    log.info("mxdeliv ready, reinjecting to port %d", config.reinject_incoming_port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 -m chatrelay.mxdeliv",
        description="Mail from other relays over HTTPS (POST /mxdeliv), behind nginx.",
    )
    parser.add_argument("--config", type=Path, default=relay_config.DEFAULT_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    config = relay_config.load(args.config)
    sock = systemd.tcp_listener(mailfilter.LISTEN_HOST, config.mxdeliv_port)
    asyncio.run(serve(config, sock))


if __name__ == "__main__":
    main()
