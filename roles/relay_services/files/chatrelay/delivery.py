"""Remote delivery: over HTTPS /mxdeliv first, over SMTP on port 25 after (SPEC section 12).

Postfix hands every message for another domain to this service by LMTP
(default_transport) and keeps it in its queue until the service answers: 250 for a
recipient means a peer took the message, 4xx that Postfix tries again later, 5xx that
Postfix bounces it. The answer is given only once the peer has answered, so a crash of
this service loses nothing; Postfix just delivers again.

Per recipient domain: the MX hosts in preference order (no MX: the domain itself; a null
MX: a permanent failure). Per host: POST https://<host>/mxdeliv unless that host took
mail over SMTP in the last 30 minutes; any HTTPS failure falls back to SMTP on port 25
with STARTTLS. Certificates are verified, except for domains whose first label starts
with "_" and IP literals (test relays), which get TLS without verification. A host that
cannot be reached moves on to the next; an SMTP reply is the outcome. HTTPS connections
and SMTP sessions are kept open a while and reused.

    python3 -m chatrelay.delivery --config /etc/chatmail/relay.ini
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import random
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import aiohttp
import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session

from chatrelay import config as relay_config
from chatrelay import filter as mailfilter
from chatrelay import metrics, mxdeliv, systemd

log = logging.getLogger("chatrelay.delivery")

HTTPS_PORT = 443
SMTP_PORT = 25
# A peer gets this long per attempt, on either channel (SPEC section 12).
ATTEMPT_TIMEOUT = 60.0
# After a host took mail over SMTP, it is not asked over HTTPS for this long.
SMTP_MEMORY = 30 * 60.0
# Idle connections to a peer are closed after this long.
IDLE_TIMEOUT = 30.0
# Threads for SMTP sessions (smtplib blocks): at least Postfix's concurrency.
SMTP_THREADS = 64


class Outcome(NamedTuple):
    """How delivery to one domain ended: one SMTP reply per recipient, in order."""

    replies: list[str]
    channel: str
    host: str


class Unreachable(Exception):
    """A host that gave no SMTP answer at all: the next MX host is tried."""


def is_ip_literal(domain: str) -> bool:
    return domain.startswith("[") and domain.endswith("]")


def verifies(domain: str) -> bool:
    """Whether peers of this recipient domain must show a valid certificate (SPEC §3)."""
    return not (is_ip_literal(domain) or domain.startswith("_"))


def reply_line(code: int, text: str, host: str, channel: str) -> str:
    """One LMTP reply line: the peer's code and text, and who said it over what."""
    words = " ".join(mailfilter.ascii_text(text).split()) or "(no text)"
    return f"{code} {words} ({host} over {channel})"


def code_of(reply: str) -> int:
    return int(reply[:3])


class ChannelMemory:
    """The hosts that took mail over SMTP lately, and when."""

    def __init__(
        self, window: float = SMTP_MEMORY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.clock = clock
        self._took_smtp: dict[str, float] = {}

    def took_smtp(self, host: str) -> None:
        self._took_smtp[host.lower()] = self.clock()

    def forget(self, host: str) -> None:
        self._took_smtp.pop(host.lower(), None)

    def prefers_smtp(self, host: str) -> bool:
        now = self.clock()
        for name in [name for name, then in self._took_smtp.items() if now - then >= self.window]:
            del self._took_smtp[name]
        return host.lower() in self._took_smtp


MxResolver = Callable[[str], Awaitable[list[str]]]


class DnsAnswer(Exception):
    """A recipient domain whose MX lookup gives no host to try: the reply says why."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


async def mx_hosts(domain: str, resolver: dns.asyncresolver.Resolver | None = None) -> list[str]:
    """The hosts to try for a domain, best first (RFC 5321 section 5.1, RFC 7505)."""
    if is_ip_literal(domain):
        return [domain[1:-1]]
    resolver = resolver or dns.asyncresolver.get_default_resolver()
    try:
        answer = await resolver.resolve(domain, "MX", lifetime=ATTEMPT_TIMEOUT / 4)
    except dns.resolver.NXDOMAIN:
        raise DnsAnswer(f"550 5.1.2 Domain {domain} does not exist") from None
    except dns.resolver.NoAnswer:
        return [domain]
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise DnsAnswer(
            f"451 4.4.3 DNS lookup of the MX of {domain} failed: {type(exc).__name__}"
        ) from None
    records = sorted(answer, key=lambda record: (record.preference, random.random()))
    hosts = [record.exchange for record in records if record.exchange != dns.name.root]
    if not hosts:
        raise DnsAnswer(f"556 5.1.10 Domain {domain} accepts no mail (null MX)")
    return [host.to_text(omit_final_dot=True) for host in hosts]


def client_contexts(verified: ssl.SSLContext | None = None) -> dict[bool, ssl.SSLContext]:
    """TLS for peers: verified against the system's CAs, or encrypted only."""
    verified = verified or ssl.create_default_context()
    verified.minimum_version = ssl.TLSVersion.TLSv1_2
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    unverified.minimum_version = ssl.TLSVersion.TLSv1_2
    return {True: verified, False: unverified}


class _SMTP(smtplib.SMTP):
    """smtplib's client, resolving only the address family the relay delivers over."""

    family = socket.AF_UNSPEC

    def _get_socket(self, host, port, timeout):
        errors: list[OSError] = []
        for family, kind, proto, _canonname, address in socket.getaddrinfo(
            host, port, self.family, socket.SOCK_STREAM
        ):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                errors.append(exc)
        raise errors[-1] if errors else OSError(f"no address for {host}")


class SmtpClient:
    """SMTP on port 25 with mandatory STARTTLS, keeping sessions to reuse (blocking)."""

    def __init__(
        self,
        helo_name: str,
        contexts: dict[bool, ssl.SSLContext],
        *,
        port: int = SMTP_PORT,
        ipv4_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.helo_name = helo_name
        self.contexts = contexts
        self.port = port
        self.family = socket.AF_INET if ipv4_only else socket.AF_UNSPEC
        self.clock = clock
        self._idle: dict[tuple[str, bool], list[tuple[float, smtplib.SMTP]]] = {}
        self._lock = threading.Lock()

    def _connect(self, host: str, verify: bool) -> smtplib.SMTP:
        smtp = _SMTP(timeout=ATTEMPT_TIMEOUT, local_hostname=self.helo_name)
        smtp.family = self.family
        # STARTTLS checks the certificate against this name (smtplib sets it only
        # when connecting from the constructor).
        smtp._host = host
        try:
            smtp.connect(host, self.port)
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise Unreachable(f"{host} offers no STARTTLS")
            smtp.starttls(context=self.contexts[verify])
            smtp.ehlo()
        except Unreachable:
            _close(smtp)
            raise
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            _close(smtp)
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None
        return smtp

    def _session(self, host: str, verify: bool) -> smtplib.SMTP:
        key = (host.lower(), verify)
        while True:
            with self._lock:
                idle = self._idle.get(key) or []
                smtp = None
                while idle:
                    since, candidate = idle.pop()
                    if self.clock() - since < IDLE_TIMEOUT:
                        smtp = candidate
                        break
                    _close(candidate)
            if smtp is None:
                return self._connect(host, verify)
            try:
                if smtp.rset()[0] == 250:
                    return smtp
            except (OSError, smtplib.SMTPException):
                pass
            _close(smtp)

    def _keep(self, host: str, verify: bool, smtp: smtplib.SMTP) -> None:
        with self._lock:
            self._idle.setdefault((host.lower(), verify), []).append((self.clock(), smtp))

    def close_idle(self, everything: bool = False) -> None:
        """Close the sessions idle for too long, or (at exit) all of them."""
        with self._lock:
            for key, idle in self._idle.items():
                fresh = (
                    []
                    if everything
                    else [
                        (since, smtp) for since, smtp in idle if self.clock() - since < IDLE_TIMEOUT
                    ]
                )
                for since, smtp in idle:
                    if (since, smtp) not in fresh:
                        _close(smtp)
                self._idle[key] = fresh

    def send(
        self, host: str, verify: bool, sender: str, recipients: list[str], content: bytes
    ) -> list[str]:
        """Deliver to host; one reply per recipient. Unreachable: no SMTP answer at all."""
        smtp = self._session(host, verify)
        try:
            options = []
            if not content.isascii() and smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            if not all(a.isascii() for a in (sender, *recipients)):
                if not smtp.has_extn("smtputf8"):
                    reply = "553 5.6.7 The peer cannot take non-ASCII addresses (no SMTPUTF8)"
                    self._keep(host, verify, smtp)
                    return [reply] * len(recipients)
                options.append("SMTPUTF8")
            code, text = smtp.mail(sender, options)
            if code != 250:
                smtp.rset()
                self._keep(host, verify, smtp)
                return [reply_line(code, _text(text), host, "smtp")] * len(recipients)
            replies: list[str | None] = []
            for recipient in recipients:
                code, text = smtp.rcpt(recipient)
                replies.append(
                    None if code in (250, 251) else reply_line(code, _text(text), host, "smtp")
                )
            if all(reply is not None for reply in replies):
                smtp.rset()
                self._keep(host, verify, smtp)
                return [reply for reply in replies if reply is not None]
            try:
                code, text = smtp.data(content)
            except smtplib.SMTPDataError as exc:
                code, text = exc.smtp_code, exc.smtp_error
            data_reply = reply_line(code, _text(text), host, "smtp")
            self._keep(host, verify, smtp)
            return [data_reply if reply is None else reply for reply in replies]
        except (OSError, smtplib.SMTPException) as exc:
            _close(smtp)
            # The session broke after the peer answered: whether it took the message is
            # unknown, so Postfix tries again (the peer may get it twice, never nothing).
            return [f"451 4.4.2 Lost the SMTP session with {host}: {type(exc).__name__}"] * len(
                recipients
            )


def _text(text: bytes | str) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def _close(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        smtp.close()


class Deliverer:
    """Delivery of one message to the recipients of one domain, channel by channel."""

    def __init__(
        self,
        helo_name: str,
        *,
        https: bool = True,
        https_port: int = HTTPS_PORT,
        smtp_port: int = SMTP_PORT,
        ipv4_only: bool = False,
        resolver: MxResolver = mx_hosts,
        verified_context: ssl.SSLContext | None = None,
        memory: ChannelMemory | None = None,
    ) -> None:
        self.https = https
        self.https_port = https_port
        self.resolver = resolver
        self.contexts = client_contexts(verified_context)
        self.memory = memory or ChannelMemory()
        self.smtp = SmtpClient(helo_name, self.contexts, port=smtp_port, ipv4_only=ipv4_only)
        self.family = socket.AF_INET if ipv4_only else 0
        self._threads = ThreadPoolExecutor(SMTP_THREADS, thread_name_prefix="smtp")
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                family=self.family, keepalive_timeout=IDLE_TIMEOUT, limit=0
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.smtp.close_idle(everything=True)

    async def post(
        self, host: str, verify: bool, sender: str, recipients: list[str], content: bytes
    ) -> str:
        """POST the message to host's /mxdeliv; the SMTP reply it carried (raises on failure)."""
        literal = ":" in host
        authority = f"[{host}]" if literal else host
        url = f"https://{authority}:{self.https_port}{mxdeliv.PATH}"
        headers = [*mxdeliv.request_headers(sender, recipients)]
        headers.append(("Content-Type", "message/rfc822"))
        try:
            return await self._post_once(url, headers, content, verify)
        except aiohttp.ServerDisconnectedError:
            # Most likely a kept connection the peer closed meanwhile (nginx closes idle
            # ones when it reloads), before reading the request: once more, afresh.
            return await self._post_once(url, headers, content, verify)

    async def _post_once(
        self, url: str, headers: list[tuple[str, str]], content: bytes, verify: bool
    ) -> str:
        async with self._http().post(
            url, data=content, headers=headers, ssl=self.contexts[verify], allow_redirects=False
        ) as response:
            body = await response.text(errors="replace")
            return mxdeliv.reply_of(response.status, body)

    async def _over_https(
        self,
        domain: str,
        host: str,
        verify: bool,
        sender: str,
        recipients: list[str],
        content: bytes,
    ) -> Outcome | None:
        """Delivery by POST to host's /mxdeliv; None when that failed in any way."""
        try:
            reply = await self.post(host, verify, sender, recipients, content)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            reply = f"({type(exc).__name__}: {exc})"
        if reply.startswith("2"):
            line = reply_line(250, reply[4:], host, "https")
            return Outcome([line] * len(recipients), "https", host)
        log.info("%s: https to %s failed %s", domain, host, reply[:60])
        return None

    async def deliver(
        self, domain: str, sender: str, recipients: list[str], content: bytes
    ) -> Outcome:
        """Try the domain's hosts in order; the first real answer is the outcome."""
        try:
            hosts = await self.resolver(domain)
        except DnsAnswer as answer:
            return Outcome([answer.reply] * len(recipients), "dns", domain)
        verify = verifies(domain)
        problems = []
        for host in hosts:
            smtp_first = self.https and self.memory.prefers_smtp(host)
            if self.https and not smtp_first:
                outcome = await self._over_https(domain, host, verify, sender, recipients, content)
                if outcome is not None:
                    return outcome
            loop = asyncio.get_running_loop()
            try:
                replies = await loop.run_in_executor(
                    self._threads, self.smtp.send, host, verify, sender, recipients, content
                )
            except Unreachable as exc:
                log.info("%s: smtp to %s unreachable: %s", domain, host, exc)
                problems.append(f"{host}: {exc}")
                if smtp_first:
                    # The host took SMTP lately but not now (port 25 blocked since?): HTTPS.
                    self.memory.forget(host)
                    outcome = await self._over_https(
                        domain, host, verify, sender, recipients, content
                    )
                    if outcome is not None:
                        return outcome
                continue
            if any(code_of(reply) == 250 for reply in replies):
                self.memory.took_smtp(host)
            return Outcome(replies, "smtp", host)
        last = problems[-1] if problems else "no host"
        reply = f"451 4.4.1 No MX host of {domain} answered ({mailfilter.ascii_text(last)})"
        return Outcome([reply[:400]] * len(recipients), "none", domain)


class DeliveryHandler:
    """The LMTP side: Postfix's recipients grouped by domain, one reply each."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    async def handle_RCPT(
        self, server: LMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if "@" not in address:
            return "550 5.1.3 Recipient address without a domain"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: LMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        # aiosmtpd keeps the null sender of a bounce as "<>".
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        by_domain: dict[str, list[str]] = {}
        for recipient in envelope.rcpt_tos:
            by_domain.setdefault(recipient.rpartition("@")[2].lower(), []).append(recipient)
        outcomes = await asyncio.gather(
            *(
                self.deliverer.deliver(domain, sender, rcpts, content)
                for domain, rcpts in by_domain.items()
            )
        )
        reply_of: dict[str, str] = {}
        for (domain, rcpts), outcome in zip(by_domain.items(), outcomes, strict=True):
            for recipient, reply in zip(rcpts, outcome.replies, strict=True):
                reply_of[recipient] = reply
            counts = collections.Counter(reply[:3] for reply in outcome.replies)
            for code, number in counts.items():
                result = metrics.delivery_result(code_of(code))
                metrics.REMOTE_DELIVERIES.labels(outcome.channel, result, code).inc(number)
            summary = ", ".join(f"{n}x {code}" for code, n in sorted(counts.items()))
            log.info("%s: %s via %s (%s)", domain, summary, outcome.channel, outcome.host)
        # LMTP: one reply per recipient after DATA, in the order of RCPT.
        return "\r\n".join(reply_of[recipient] for recipient in envelope.rcpt_tos)

    async def handle_exception(self, error: Exception) -> str:
        log.error("internal error", exc_info=error)
        return "451 4.3.0 Internal error in the delivery service, try again later"


async def start_server(
    config: relay_config.Config, sock: socket.socket, deliverer: Deliverer
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    handler = DeliveryHandler(deliverer)

    def session() -> LMTP:
        return LMTP(
            handler,
            data_size_limit=config.max_message_size + mailfilter.SIZE_SLACK,
            enable_SMTPUTF8=True,
            hostname=config.mail_domain,
            ident="chatrelay delivery",
            loop=loop,
        )

    return await loop.create_server(session, sock=sock)


async def serve(config: relay_config.Config, sock: socket.socket) -> None:
    deliverer = Deliverer(config.mail_domain, ipv4_only=config.disable_ipv6)
    server = await start_server(config, sock, deliverer)
    log.info("delivery ready: https /mxdeliv first, smtp on port %d after", SMTP_PORT)
    try:
        async with server:
            while True:
                await asyncio.sleep(IDLE_TIMEOUT)
                await asyncio.get_running_loop().run_in_executor(None, deliverer.smtp.close_idle)
    finally:
        await deliverer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 -m chatrelay.delivery",
        description="Remote delivery for Postfix: HTTPS /mxdeliv first, SMTP after.",
    )
    parser.add_argument("--config", type=Path, default=relay_config.DEFAULT_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    config = relay_config.load(args.config)
    sock = systemd.tcp_listener(mailfilter.LISTEN_HOST, config.delivery_port)
    asyncio.run(serve(config, sock))


if __name__ == "__main__":
    main()
