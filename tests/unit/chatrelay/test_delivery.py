"""The delivery service against real peers: an HTTPS /mxdeliv server and an SMTP server.

The HTTPS peer is the relay's own receiving end (chatrelay.mxdeliv) behind TLS, handing
accepted mail to one sink; the SMTP peer is an aiosmtpd server with STARTTLS and a sink
of its own. Both listen on 127.0.0.1 with a certificate for "localhost" that the
delivery service trusts; the MX lookup is a table.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import dns.exception
import dns.name
import dns.resolver
import pgp_samples as s
import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP
from chatrelay import delivery, mxdeliv
from chatrelay.config import Config
from relay_servers import Sink, close, free_port, run, self_signed_tls

PEER = "example.org"
ALICE = "alice@example.org"
REMOTE = "carol@example.net"
ENCRYPTED = s.armor(s.PKESK + s.SEIPD)


class CountingSMTP(SMTP):
    """Records each client's address (STARTTLS makes a second connection_made call)."""

    clients: ClassVar[set] = set()

    def connection_made(self, transport) -> None:
        type(self).clients.add(transport.get_extra_info("peername"))
        super().connection_made(transport)


@dataclass
class Peer:
    """A relay as the delivery service meets it: HTTPS and SMTP on 127.0.0.1."""

    https_port: int
    smtp_port: int
    https_sink: Sink
    smtp_sink: Sink
    requests: list[tuple[str, int]] = field(default_factory=list)
    smtp_server: type[CountingSMTP] = CountingSMTP


@pytest.fixture
def tls(tmp_path):
    return self_signed_tls(tmp_path)


@pytest.fixture
def peer(loop, sink, tmp_path, dkim_dns, tls) -> Iterator:
    """Start a peer: mxdeliv=False serves HTTPS without /mxdeliv, starttls=False plain SMTP."""
    cleanups = []

    def start(domain: str = PEER, *, mxdeliv_route: bool = True, starttls: bool = True) -> Peer:
        smtp_sink = Sink(refuse_recipient=f"refused@{domain}")
        counting = type("Counting", (CountingSMTP,), {"clients": set()})
        config = Config(
            mail_domain=domain,
            mailboxes_dir=tmp_path / domain,
            reinject_incoming_port=sink.port,
        )
        receiver = mxdeliv.Receiver(config, dnsfunc=dkim_dns.lookup)
        found = Peer(0, 0, sink, smtp_sink, smtp_server=counting)

        async def recorded(request: web.Request) -> web.Response:
            found.requests.append(request.transport.get_extra_info("peername"))
            return await receiver.handle(request)

        async def begin():
            app = web.Application()
            if mxdeliv_route:
                app.router.add_route("*", mxdeliv.PATH, recorded)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            https = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server)
            await https.start()
            smtp = await loop.create_server(
                lambda: counting(
                    smtp_sink,
                    hostname="peer",
                    tls_context=tls.server if starttls else None,
                    require_starttls=starttls,
                    loop=loop,
                ),
                "127.0.0.1",
                0,
            )
            return runner, https._server.sockets[0].getsockname()[1], smtp

        runner, found.https_port, smtp = run(loop, begin())
        found.smtp_port = smtp.sockets[0].getsockname()[1]
        cleanups.append((runner, smtp))
        return found

    yield start
    for runner, smtp in cleanups:
        run(loop, runner.cleanup())
        run(loop, close(smtp))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def deliverer(loop, tls) -> Iterator:
    made = []

    def make(peer: Peer, hosts: dict[str, list[str]] | None = None, **options):
        hosts = hosts or {PEER: ["localhost"]}

        async def resolve(domain: str) -> list[str]:
            return hosts[domain]

        options.setdefault("verified_context", tls.client)
        made.append(
            delivery.Deliverer(
                "sender.example",
                https_port=peer.https_port,
                smtp_port=peer.smtp_port,
                resolver=resolve,
                **options,
            )
        )
        return made[-1]

    yield make
    for each in made:
        run(loop, each.close())


def mail(dkim_dns, recipient: str = ALICE) -> bytes:
    return dkim_dns.sign(s.pgp_mime(ENCRYPTED, REMOTE, recipient), "example.net")


def deliver(loop, deliverer, content: bytes, recipients=(ALICE,), domain: str = PEER):
    return run(loop, deliverer.deliver(domain, REMOTE, list(recipients), content))


def test_a_relay_gets_the_message_over_https(loop, peer, deliverer, dkim_dns):
    p = peer()
    content = mail(dkim_dns)
    outcome = deliver(loop, deliverer(p), content)
    assert outcome == delivery.Outcome(
        ["250 2.0.0 Ok: queued as SINK1 (localhost over https)"], "https", "localhost"
    )
    assert p.https_sink.received == [(REMOTE, [ALICE], content, [])]
    assert p.smtp_sink.received == []


def test_a_server_without_mxdeliv_gets_it_over_smtp_and_no_https_for_30_minutes(
    loop, peer, deliverer, dkim_dns
):
    p = peer(mxdeliv_route=False)
    clock = Clock()
    d = deliverer(p, memory=delivery.ChannelMemory(clock=clock))
    first = deliver(loop, d, mail(dkim_dns))
    assert (first.channel, first.replies[0][:3]) == ("smtp", "250")
    assert first.replies[0].endswith("(localhost over smtp)")
    assert len(p.smtp_sink.received) == 1
    # The host took mail over SMTP: the next message does not ask HTTPS first.
    tried_https = []
    original = d.post

    async def counting_post(*args):
        tried_https.append(args[0])
        return await original(*args)

    d.post = counting_post
    clock.now += 29 * 60
    assert deliver(loop, d, mail(dkim_dns)).channel == "smtp"
    assert tried_https == []
    clock.now += 30 * 60
    assert deliver(loop, d, mail(dkim_dns)).channel == "smtp"
    assert tried_https == ["localhost"]
    assert len(p.smtp_sink.received) == 3


def test_an_https_refusal_falls_back_to_smtp_whose_reply_is_the_outcome(
    loop, peer, deliverer, dkim_dns
):
    p = peer()
    unsigned = s.pgp_mime(ENCRYPTED, REMOTE, f"refused@{PEER}")
    outcome = deliver(loop, deliverer(p), unsigned, recipients=[f"refused@{PEER}", ALICE])
    assert outcome.channel == "smtp"
    assert outcome.replies[0].startswith("550 5.1.1 <refused@example.net>: Recipient")
    assert outcome.replies[1].startswith("250 ")
    assert p.https_sink.received == []
    assert [rcpts for _unused, rcpts, _unused, _unused in p.smtp_sink.received] == [[ALICE]]


def test_an_unreachable_host_moves_on_to_the_next_mx(loop, peer, deliverer, dkim_dns):
    p = peer()
    d = deliverer(p, hosts={PEER: ["127.0.0.2", "localhost"]})
    outcome = deliver(loop, d, mail(dkim_dns))
    assert (outcome.channel, outcome.host) == ("https", "localhost")


def test_no_host_answering_is_a_temporary_failure(loop, peer, deliverer, dkim_dns):
    p = peer()
    p.https_port = p.smtp_port = free_port()
    outcome = deliver(loop, deliverer(p, hosts={PEER: ["localhost", "127.0.0.2"]}), b"x")
    assert outcome.channel == "none"
    assert outcome.replies[0].startswith("451 4.4.1 No MX host of example.org answered")


def test_an_untrusted_certificate_is_refused_for_a_verified_domain(loop, peer, deliverer, dkim_dns):
    p = peer()
    # The system's CAs do not know the peer's self-signed certificate.
    outcome = deliver(loop, deliverer(p, verified_context=None), mail(dkim_dns))
    assert outcome.replies[0].startswith("451 4.4.1 No MX host of example.org answered")
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.replies[0]
    assert p.https_sink.received == p.smtp_sink.received == []


def test_test_relays_get_tls_without_verification(loop, peer, deliverer, dkim_dns):
    p = peer("_test.example")
    d = deliverer(p, hosts={"_test.example": ["localhost"]}, verified_context=None)
    recipient = "alice@_test.example"
    outcome = deliver(loop, d, mail(dkim_dns, recipient), [recipient], domain="_test.example")
    assert (outcome.channel, outcome.replies[0][:3]) == ("https", "250")


def test_a_server_without_starttls_gets_nothing(loop, peer, deliverer, dkim_dns):
    p = peer(mxdeliv_route=False, starttls=False)
    outcome = deliver(loop, deliverer(p), mail(dkim_dns))
    assert "offers no STARTTLS" in outcome.replies[0]
    assert outcome.replies[0].startswith("451 ")
    assert p.smtp_sink.received == []


def test_connections_to_a_peer_are_reused(loop, peer, deliverer, dkim_dns):
    p = peer()
    d = deliverer(p)
    for _unused in range(3):
        assert deliver(loop, d, mail(dkim_dns)).channel == "https"
    assert len({port for _unused, port in p.requests}) == 1
    smtp_only = peer(mxdeliv_route=False)
    d = deliverer(smtp_only)
    for _unused in range(3):
        assert deliver(loop, d, mail(dkim_dns)).channel == "smtp"
    assert len(smtp_only.smtp_server.clients) == 1


def lmtp(port: int, sender: str, recipients: list[str], content: bytes) -> list[str]:
    """An LMTP transaction as Postfix's lmtp client makes it: one reply per recipient."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        stream = sock.makefile("rwb")

        def reply() -> str:
            while True:
                line = stream.readline().decode()
                if line[3:4] != "-":
                    return line.strip()

        def command(line: str) -> str:
            stream.write(line.encode() + b"\r\n")
            stream.flush()
            return reply()

        assert reply().startswith("220")
        assert command("LHLO postfix").startswith("250")
        assert command(f"MAIL FROM:<{sender}>").startswith("250")
        for recipient in recipients:
            assert command(f"RCPT TO:<{recipient}>").startswith("250")
        assert command("DATA").startswith("354")
        body = content.replace(b"\r\n.", b"\r\n..")
        stream.write(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        stream.flush()
        replies = [reply() for _unused in recipients]
        command("QUIT")
        return replies


def test_postfix_gets_one_reply_per_recipient_over_lmtp(loop, peer, deliverer, dkim_dns):
    p = peer()
    other = "dave@other.example"
    d = deliverer(p, hosts={PEER: ["localhost"], "other.example": ["localhost"]})
    # other.example is not the HTTPS peer's domain (it refuses: no open relay) and its
    # SMTP peer refuses the address: the two recipients end differently.
    p.smtp_sink.refuse_recipient = other
    sock = socket.create_server(("127.0.0.1", 0))
    config = Config(mail_domain="sender.example", mailboxes_dir=Path("/nonexistent"))
    server = run(loop, delivery.start_server(config, sock, d))
    try:
        replies = lmtp(sock.getsockname()[1], REMOTE, [ALICE, other], mail(dkim_dns))
    finally:
        run(loop, close(server))
    assert replies[0].startswith("250 2.0.0 Ok: queued as") and replies[0].endswith("over https)")
    assert replies[1].startswith("550 5.1.1") and replies[1].endswith("(localhost over smtp)")


class FakeAnswer(list):
    pass


@dataclass
class Record:
    preference: int
    exchange: dns.name.Name


class FakeResolver:
    def __init__(self, outcome) -> None:
        self.outcome = outcome

    async def resolve(self, name, kind, lifetime):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return FakeAnswer(self.outcome)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (
            [
                Record(20, dns.name.from_text("b.example.")),
                Record(10, dns.name.from_text("a.example.")),
            ],
            ["a.example", "b.example"],
        ),
        (dns.resolver.NoAnswer(), ["example.org"]),
        ([Record(0, dns.name.root)], "556 5.1.10 Domain example.org accepts no mail (null MX)"),
        (dns.resolver.NXDOMAIN(), "550 5.1.2 Domain example.org does not exist"),
        (dns.exception.Timeout(), "451 4.4.3 DNS lookup of the MX of example.org failed: Timeout"),
    ],
)
def test_mx_hosts_in_preference_order(outcome, expected):
    try:
        hosts = asyncio.run(delivery.mx_hosts(PEER, FakeResolver(outcome)))
    except delivery.DnsAnswer as answer:
        hosts = answer.reply
    assert hosts == expected


def test_an_ip_literal_is_its_own_host():
    assert asyncio.run(delivery.mx_hosts("[192.0.2.1]", FakeResolver(AssertionError()))) == [
        "192.0.2.1"
    ]
    assert not delivery.verifies("[192.0.2.1]")
    assert not delivery.verifies("_test.example")
    assert delivery.verifies("example.org")


def test_a_host_that_lost_port_25_since_it_took_smtp_gets_https_again(
    loop, peer, deliverer, dkim_dns
):
    p = peer()
    memory = delivery.ChannelMemory()
    memory.took_smtp("localhost")
    p.smtp_port = free_port()  # nothing listens: port 25 blocked
    d = deliverer(p, memory=memory)
    outcome = deliver(loop, d, mail(dkim_dns))
    assert (outcome.channel, outcome.replies[0][:3]) == ("https", "250")
    assert not memory.prefers_smtp("localhost")


def test_a_bounce_goes_over_https_without_a_sender(loop, peer, deliverer, dkim_dns):
    p = peer()
    report = dkim_dns.sign(
        s.mailer_daemon_report("MAILER-DAEMON@example.net", ALICE), "example.net"
    )
    sock = socket.create_server(("127.0.0.1", 0))
    config = Config(mail_domain="sender.example", mailboxes_dir=Path("/nonexistent"))
    server = run(loop, delivery.start_server(config, sock, deliverer(p)))
    try:
        replies = lmtp(sock.getsockname()[1], "", [ALICE], report)
    finally:
        run(loop, close(server))
    assert replies[0].endswith("(localhost over https)"), replies
    assert p.https_sink.received[0][:2] == ("<>", [ALICE])
    assert p.smtp_sink.received == []
