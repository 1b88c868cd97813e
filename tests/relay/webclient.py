"""HTTPS and raw TLS to a relay by its address, with the names a browser would send."""

from __future__ import annotations

import http.client
import smtplib
import socket
import ssl
import subprocess

from mailclient import tls_context


class NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `address`, with SNI and Host set to `name` (test names do not resolve)."""

    def __init__(self, address: str, name: str, port: int = 443, context=None) -> None:
        super().__init__(name, port, context=context or tls_context(), timeout=30)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def https(
    address: str,
    name: str,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one HTTPS request to https://<name><path> at address."""
    connection = NamedHTTPSConnection(address, name, context=context)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def http_plain(address: str, name: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One plain-HTTP request to port 80."""
    connection = http.client.HTTPConnection(address, 80, timeout=30)
    try:
        connection.request("GET", path, headers={"Host": name})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def s_client(address: str, alpn: str | None, commands: bytes, name: str | None = None) -> str:
    """What `openssl s_client` to port 443 prints back for the given input."""
    argv = ["openssl", "s_client", "-connect", f"{address}:443", "-quiet"]
    if alpn:
        argv += ["-alpn", alpn]
    if name:
        argv += ["-servername", name]
    result = subprocess.run(argv, input=commands, capture_output=True, timeout=30, check=False)
    return result.stdout.decode(errors="replace")


def smtp_by_alpn(address: str, name: str | None = None) -> smtplib.SMTP:
    """SMTP on port 443 by ALPN "smtp" (name as SNI), after the 220 greeting: it waits
    for it as SMTP wants (Postfix 3.9 and later, Debian 13's, refuse commands sent
    before it)."""
    context = tls_context()
    context.set_alpn_protocols(["smtp"])
    smtp = smtplib.SMTP(timeout=30)
    sock = socket.create_connection((address, 443), timeout=30)
    smtp.sock = context.wrap_socket(sock, server_hostname=name)
    smtp.file = None
    code, greeting = smtp.getreply()
    if code != 220:
        raise smtplib.SMTPConnectError(code, greeting)
    return smtp
