"""Real servers for the relay services' unit tests: an event loop in a thread, an SMTP
sink standing in for Postfix's reinjection smtpd, DKIM keys published to a fake DNS and
a self-signed certificate for TLS servers."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import dkim
from aiosmtpd.smtp import SMTP, Envelope
from chatrelay import metrics
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def run(loop: asyncio.AbstractEventLoop, coroutine):
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(10)


async def close(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


@dataclass
class Sink:
    """Records what the reinjection server was given; refuses some recipients."""

    port: int = 0
    received: list[tuple[str, list[str], bytes, list[str]]] = field(default_factory=list)
    refuse_recipient: str = "refused@example.net"

    async def handle_RCPT(self, server, session, envelope: Envelope, address, rcpt_options):
        if address == self.refuse_recipient:
            return "550 5.1.1 <refused@example.net>: Recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope: Envelope):
        self.received.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content,
                list(envelope.mail_options),
            )
        )
        return f"250 2.0.0 Ok: queued as SINK{len(self.received)}"


class SinkSMTP(SMTP):
    # Postfix's smtpd takes long lines, unlike aiosmtpd's default.
    line_length_limit = 100_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DkimDns:
    """Publishes DKIM keys for the test domains; counts lookups."""

    records: dict[bytes, bytes] = field(default_factory=dict)
    keys: dict[str, bytes] = field(default_factory=dict)
    lookups: int = 0

    def add(self, domain: str, selector: str = "sel") -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.keys[domain] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        name = f"{selector}._domainkey.{domain}.".encode()
        self.records[name] = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def lookup(self, name: bytes, timeout: float = 5) -> bytes | None:
        self.lookups += 1
        if name.startswith(b"slow."):
            raise dkim.DnsTimeoutError("timed out")
        return self.records.get(name)

    def sign(self, message: bytes, domain: str, selector: str = "sel") -> bytes:
        header = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            self.keys[domain],
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        return header + message


@dataclass
class Tls:
    """A self-signed certificate for localhost: a server context and a client trusting it."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def self_signed_tls(directory: Path) -> Tls:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return Tls(server, client)


class Counted:
    """The services' counters in this process, before and after: what a test moved."""

    def __init__(self) -> None:
        self.before = self.samples()

    @staticmethod
    def samples() -> dict[tuple[str, tuple], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for counter in metrics.COUNTERS
            for family in counter.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        }

    def moved(self) -> dict[str, float]:
        """Each counter that moved, as 'name{label=value,...}': how much."""
        after = self.samples()
        return {
            name + "{" + ",".join(f"{k}={v}" for k, v in labels) + "}": value
            - self.before.get((name, labels), 0.0)
            for (name, labels), value in after.items()
            if value != self.before.get((name, labels), 0.0)
        }
