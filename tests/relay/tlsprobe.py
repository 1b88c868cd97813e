"""Which certificate the relay presents, on every port a client reaches it by TLS."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509

# (port, how TLS starts, ALPN): every way a client reaches the relay over TLS.
ENDPOINTS = [
    (993, "tls", None),
    (465, "tls", None),
    (25, "smtp-starttls", None),
    (587, "smtp-starttls", None),
    (143, "imap-starttls", None),
    (443, "tls", "imap"),
    (443, "tls", "smtp"),
    (443, "tls", None),
]
IDS = [f"{port}-{alpn or how}" for port, how, alpn in ENDPOINTS]


def read_reply(sock: socket.socket, final: bytes) -> None:
    data = b""
    while not any(line.startswith(final) for line in data.split(b"\r\n")):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before {final!r}: {data!r}")
        data += chunk


def served_certificate(
    address: str, port: int, how: str, alpn: str | None, name: str, root: str
) -> x509.Certificate:
    """The certificate the relay presents there, verified for `name` against `root`."""
    context = ssl.create_default_context(cadata=root)
    if alpn:
        context.set_alpn_protocols([alpn])
    with socket.create_connection((address, port), timeout=30) as sock:
        if how == "smtp-starttls":
            read_reply(sock, b"220 ")
            sock.sendall(b"EHLO tester.example\r\n")
            read_reply(sock, b"250 ")
            sock.sendall(b"STARTTLS\r\n")
            read_reply(sock, b"220 ")
        elif how == "imap-starttls":
            read_reply(sock, b"* OK")
            sock.sendall(b"a STARTTLS\r\n")
            read_reply(sock, b"a OK")
        with context.wrap_socket(sock, server_hostname=name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
