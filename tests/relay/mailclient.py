"""Plain IMAP/SMTP client helpers for black-box tests and benchmarks of a relay.

Test relays have self-signed certificates, so TLS is used without verification;
everything else is exactly what a mail client does.
"""

from __future__ import annotations

import imaplib
import secrets
import smtplib
import ssl
import string
import subprocess
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

ALPHABET = string.ascii_lowercase + string.digits


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def new_credentials(domain: str, length: int = 9) -> tuple[str, str]:
    """A fresh random address on the relay and a password for it."""
    local = "".join(secrets.choice(ALPHABET) for _unused in range(length))
    return f"{local}@{domain}", secrets.token_urlsafe(12)


def imap_login(host: str, address: str, password: str, port: int = 993) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL(host, port, ssl_context=tls_context(), timeout=30)
    imap.login(address, password)
    return imap


def smtp_login(host: str, address: str, password: str, port: int = 465) -> smtplib.SMTP:
    if port == 465:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, context=tls_context(), timeout=30)
    else:
        smtp = smtplib.SMTP(host, port, timeout=30)
        smtp.starttls(context=tls_context())
    smtp.login(address, password)
    return smtp


def submit(host: str, account: tuple[str, str], recipient: str, message: bytes, port: int = 465):
    """Submit one message as the account; return the refused recipients and our address."""
    smtp = smtp_login(host, *account, port=port)
    try:
        return smtp.sendmail(account[0], [recipient], message), smtp.sock.getsockname()[0]
    finally:
        smtp.quit()


def cleartext_message(sender: str, recipient: str, subject: str = "hello") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = formatdate()
    msg["Message-ID"] = make_msgid(domain=sender.split("@")[1].lstrip("_"))
    msg.set_content("this is not encrypted\n")
    return bytes(msg)


def pgp_mime(sender: str, recipient: str, armored: str, headers: dict[str, str] | None = None):
    """Wrap an ASCII-armored OpenPGP message into a PGP/MIME (RFC 3156) message."""
    boundary = "chatmail-" + secrets.token_hex(8)
    lines = [
        f"From: <{sender}>",
        f"To: <{recipient}>",
        "Subject: [...]",
        f"Date: {formatdate()}",
        f"Message-ID: {make_msgid(domain='relay.test')}",
        "MIME-Version: 1.0",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
        f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
        f'boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: application/pgp-encrypted",
        "",
        "Version: 1",
        "",
        f"--{boundary}",
        'Content-Type: application/octet-stream; name="encrypted.asc"',
        "",
        armored.strip(),
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode()


class Gpg:
    """A throwaway GnuPG home with one key, to make real encrypted messages."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._run(
            "--quick-generate-key",
            "--passphrase",
            "",
            "relay-test@example.invalid",
            "ed25519",
            "default",
            "never",
        )
        self._run("--quick-add-key", "--passphrase", "", self._fingerprint(), "cv25519", "encr")

    def _run(self, *args: str, data: bytes | None = None) -> bytes:
        return subprocess.run(
            [
                "gpg",
                "--homedir",
                str(self.home),
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                *args,
            ],
            input=data,
            check=True,
            capture_output=True,
        ).stdout

    def _fingerprint(self) -> str:
        out = self._run("--list-keys", "--with-colons").decode()
        return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))

    def encrypt(self, text: str) -> str:
        return self._run(
            "--armor",
            "--trust-model",
            "always",
            "--recipient",
            "relay-test@example.invalid",
            "--encrypt",
            data=text.encode(),
        ).decode()


class Idle:
    """IMAP IDLE on the selected mailbox: `with Idle(imap) as idle: ...; idle.wait()`."""

    def __init__(self, imap: imaplib.IMAP4) -> None:
        self.imap = imap
        self.tag = imap._new_tag()

    def __enter__(self) -> Idle:
        self.imap.send(self.tag + b" IDLE\r\n")
        line = self.imap.readline()
        if not line.startswith(b"+"):
            raise ConnectionError(f"IDLE refused: {line!r}")
        return self

    def wait(self, timeout: float) -> float:
        """Block until the mailbox reports a new message; return time.monotonic() then."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.imap.sock.settimeout(left)
            try:
                line = self.imap.readline()
            except TimeoutError:
                break
            if not line:
                raise ConnectionError("IMAP connection closed during IDLE")
            if line.startswith(b"*") and line.rstrip().endswith(b"EXISTS"):
                return time.monotonic()
        raise TimeoutError(f"no new message within {timeout} s")

    def __exit__(self, *exc: object) -> None:
        self.imap.sock.settimeout(30)
        self.imap.send(b"DONE\r\n")
        while not self.imap.readline().startswith(self.tag):
            pass
        self.imap.sock.settimeout(None)


def fetch_all(imap: imaplib.IMAP4, mailbox: str = "INBOX") -> list[bytes]:
    """Every message in the mailbox, raw, oldest first."""
    imap.select(mailbox)
    _unused, data = imap.search(None, "ALL")
    messages = []
    for number in data[0].split():
        _unused, parts = imap.fetch(number, "(BODY.PEEK[])")
        messages.append(parts[0][1])
    return messages


def wait_for_messages(host: str, address: str, password: str, count: int, timeout: float = 10):
    """Poll the inbox until it holds at least `count` messages; return them."""
    deadline = time.monotonic() + timeout
    while True:
        imap = imap_login(host, address, password)
        try:
            messages = fetch_all(imap)
        finally:
            imap.logout()
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.2)
