"""Build OpenPGP packets, armor and whole test mails for the filter's tests."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from chatrelay.openpgp import crc24

CRLF = "\r\n"


# --- packets -------------------------------------------------------------------------


def new_length(length: int, octets: int | None = None) -> bytes:
    """A new-format body length in 1, 2 or 5 octets (smallest unless octets is given)."""
    if octets is None:
        octets = 1 if length < 192 else 2 if length < 8384 else 5
    if octets == 1:
        assert length < 192
        return bytes([length])
    if octets == 2:
        assert 192 <= length < 8384
        length -= 192
        return bytes([(length >> 8) + 192, length & 0xFF])
    return b"\xff" + length.to_bytes(4, "big")


def packet(tag: int, body: bytes, octets: int | None = None) -> bytes:
    """A new-format packet with a definite length."""
    return bytes([0xC0 | tag]) + new_length(len(body), octets) + body


def old_packet(tag: int, body: bytes, length_type: int = 1) -> bytes:
    """An old-format packet; length_type 3 is the indeterminate length."""
    header = bytes([0x80 | (tag << 2) | length_type])
    if length_type == 3:
        return header + body
    return header + len(body).to_bytes(1 << length_type, "big") + body


def partial_packet(tag: int, body: bytes, chunk_exponent: int = 9) -> bytes:
    """A new-format packet split into partial chunks of 2**chunk_exponent octets."""
    chunk = 1 << chunk_exponent
    out = bytearray([0xC0 | tag])
    pos = 0
    while len(body) - pos > chunk:
        out.append(224 + chunk_exponent)
        out += body[pos : pos + chunk]
        pos += chunk
    out += new_length(len(body) - pos) + body[pos:]
    return bytes(out)


def pkesk_body(version: int = 3) -> bytes:
    return bytes([version]) + os.urandom(8) + b"\x01" + b"\x08\x00" + os.urandom(256)


def skesk_body(version: int = 4) -> bytes:
    return bytes([version, 9, 3, 2]) + os.urandom(8) + b"\xff"


def seipd_body(size: int = 100, version: int = 1) -> bytes:
    return bytes([version]) + os.urandom(size)


PKESK = packet(1, pkesk_body())
SKESK = packet(3, skesk_body())
SEIPD = packet(18, seipd_body())


# --- armor and MIME ------------------------------------------------------------------


def armor(
    data: bytes,
    headers: tuple[str, ...] = (),
    checksum: bool = True,
    line_length: int = 64,
) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    lines = ["-----BEGIN PGP MESSAGE-----", *headers, ""]
    lines += [encoded[i : i + line_length] for i in range(0, len(encoded), line_length)]
    if checksum:
        lines.append("=" + base64.b64encode(crc24(data).to_bytes(3, "big")).decode("ascii"))
    lines.append("-----END PGP MESSAGE-----")
    return CRLF.join(lines) + CRLF


def headers(sender: str, recipient: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        f"From: <{sender}>",
        f"To: <{recipient}>",
        "Subject: [...]",
        "Date: Thu, 01 Jan 2026 00:00:00 +0000",
        "Message-ID: <test@example.org>",
        "MIME-Version: 1.0",
        *extra,
    ]


def pgp_mime(
    armored: str,
    sender: str = "alice@example.org",
    recipient: str = "bob@example.net",
    *,
    control_type: str = "application/pgp-encrypted",
    control_body: str = "Version: 1",
    payload_type: str = "application/octet-stream",
    top_type: str = "multipart/encrypted",
    extra_parts: tuple[str, ...] = (),
    extra_headers: tuple[str, ...] = (),
) -> bytes:
    """A PGP/MIME message (RFC 3156) around an armored payload, as a mail client sends it."""
    boundary = "==pgp-mime-boundary=="
    lines = headers(sender, recipient, extra_headers)
    lines += [
        f'Content-Type: {top_type}; protocol="application/pgp-encrypted";',
        f' boundary="{boundary}"',
        "",
        "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
        f"--{boundary}",
        f"Content-Type: {control_type}",
        "Content-Description: PGP/MIME version identification",
        "",
        control_body,
        "",
        f"--{boundary}",
        f'Content-Type: {payload_type}; name="encrypted.asc"',
        "Content-Description: OpenPGP encrypted message",
        'Content-Disposition: inline; filename="encrypted.asc"',
        "",
        armored.rstrip(CRLF),
        "",
    ]
    for part in extra_parts:
        lines += [f"--{boundary}", part]
    lines += [f"--{boundary}--", ""]
    return CRLF.join(lines).encode("ascii")


def multipart(top_type: str, parts: list[str], top_headers: list[str]) -> bytes:
    boundary = "==sample-boundary=="
    lines = [*top_headers, f'Content-Type: {top_type}; boundary="{boundary}"', ""]
    for part in parts:
        lines += [f"--{boundary}", part]
    lines += [f"--{boundary}--", ""]
    return CRLF.join(lines).encode("utf-8")


def text_part(text: str, content_type: str = "text/plain") -> str:
    return CRLF.join([f"Content-Type: {content_type}; charset=utf-8", "", text, ""])


def cleartext(
    sender: str = "alice@example.org", recipient: str = "bob@example.net", text: str = "Hi!"
) -> bytes:
    lines = [*headers(sender, recipient), "Content-Type: text/plain; charset=utf-8", "", text]
    return (CRLF.join(lines) + CRLF).encode("utf-8")


def securejoin(
    step: str = "vc-request",
    sender: str = "alice@example.org",
    recipient: str = "bob@example.net",
    body: str | None = None,
    parts: list[str] | None = None,
) -> bytes:
    top = headers(sender, recipient, (f"Secure-Join: {step}",))
    if parts is None:
        parts = [text_part(body if body is not None else f"Secure-Join: {step}")]
    return multipart("multipart/mixed", parts, top)


def setup_message(
    sender: str = "alice@example.org",
    recipient: str = "alice@example.org",
    payload: bytes | None = None,
    extra_parts: tuple[str, ...] = (),
    header: str = "v1",
) -> bytes:
    """An Autocrypt Setup Message: key material symmetrically encrypted, in HTML."""
    if payload is None:
        payload = SKESK + SEIPD
    armored = armor(payload, headers=("Passphrase-Format: numeric9x4", "Passphrase-Begin: 12"))
    html = CRLF.join(["<html><body>", "<pre>", armored, "</pre>", "</body></html>"])
    attachment = CRLF.join(
        [
            "Content-Type: application/autocrypt-setup",
            'Content-Disposition: attachment; filename="autocrypt-setup-message.html"',
            "",
            html,
            "",
        ]
    )
    top = headers(sender, recipient, (f"Autocrypt-Setup-Message: {header}",))
    parts = [text_part("This is the Autocrypt Setup Message."), attachment, *extra_parts]
    return multipart("multipart/mixed", parts, top)


def mailer_daemon_report(
    sender: str = "MAILER-DAEMON@example.net",
    recipient: str = "alice@example.org",
    auto_submitted: str | None = "auto-replied",
    top_type: str = "multipart/report",
) -> bytes:
    extra = () if auto_submitted is None else (f"Auto-Submitted: {auto_submitted}",)
    status = CRLF.join(
        [
            "Content-Type: message/delivery-status",
            "",
            "Reporting-MTA: dns; mail.example.net",
            "",
            "Final-Recipient: rfc822; nobody@example.net",
            "Action: failed",
            "Status: 5.1.1",
            "",
        ]
    )
    parts = [text_part("Your message could not be delivered."), status]
    return multipart(top_type, parts, headers(sender, recipient, extra))


# --- real OpenPGP messages made by GnuPG ---------------------------------------------


class GnuPG:
    """A throwaway GnuPG home with keys for some addresses."""

    def __init__(self, addresses: list[str]) -> None:
        gpg = shutil.which("gpg")
        if gpg is None:
            raise FileNotFoundError("gpg")
        self.gpg = gpg
        # Short path: gpg-agent's socket path must fit in a sockaddr_un.
        self.home = Path(tempfile.mkdtemp(prefix="gpg"))
        for address in addresses:
            self.run("--quick-gen-key", f"<{address}>", "future-default", "default", "never")

    def run(self, *args: str, data: bytes = b"") -> bytes:
        command = [self.gpg, "--homedir", str(self.home), "--batch", "--quiet"]
        command += ["--passphrase", "", "--pinentry-mode", "loopback", "--trust-model", "always"]
        result = subprocess.run(
            [*command, *args], input=data, capture_output=True, check=True, timeout=60
        )
        return result.stdout

    def encrypt(self, data: bytes, recipients: list[str], *options: str) -> str:
        args = ["--armor", "--encrypt", *options]
        for recipient in recipients:
            args += ["--recipient", recipient]
        return self.run(*args, data=data).decode("ascii")

    def encrypt_symmetric(self, data: bytes, passphrase: str) -> str:
        args = ["--armor", "--symmetric", "--passphrase", passphrase]
        command = [self.gpg, "--homedir", str(self.home), "--batch", "--quiet"]
        command += ["--pinentry-mode", "loopback", *args]
        result = subprocess.run(command, input=data, capture_output=True, check=True, timeout=60)
        return result.stdout.decode("ascii")

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.home, ignore_errors=True)
