"""The /new service: random credentials for an account that its first login creates.

nginx terminates TLS for https://<mail_domain>/new, limits its rate and proxies it here
(plain HTTP on 127.0.0.1). POST answers {"email": ..., "password": ...}, with a dclogin:
URL on self-signed relays; GET and HEAD redirect to the dcaccount: link Delta Chat opens.
Nothing is written here: the auth service creates the account at its first login, after
the same checks this service makes before it hands the credentials out.

    python3 -m chatrelay.newaccount --config /etc/chatmail/relay.ini
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import secrets
import socket
import string
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from . import mailbox, registration, systemd
from .auth import AuthServer, SystemProbe
from .config import DEFAULT_PATH, Config, load

log = logging.getLogger("chatrelay.newaccount")

LISTEN_HOST = "127.0.0.1"
NEW_PATH = "/new"
ALLOWED_METHODS = "GET, HEAD, POST"
LOCALPART_ALPHABET = string.ascii_lowercase + string.digits
# Characters that need no quoting in a URL nor escaping in Dovecot's %E.
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_"
MIN_PASSWORD_LENGTH = 20
# With 36**9 local parts a taken one is rare; a run of them means something is wrong.
MAX_ADDRESS_TRIES = 10
MAX_BODY = 64 * 1024
# Seconds a client should wait before asking again after a 503.
RETRY_AFTER = 600
# Seconds a connection may stay silent, so idle clients do not pin a thread each.
IDLE_TIMEOUT = 30
# Delta Chat: ic=3 accepts an invalid (here: self-signed) certificate.
DCLOGIN_CERTIFICATE_CHECKS = "3"

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# An invite token is a secret: the log shows that there was one, not which.
_TOKEN_PARAMETER = re.compile(r"(token=)[^&\s]*")


class NewAccountsRefused(Exception):
    """No account may be created now; the message says why, for the log only."""


def random_localpart(length: int) -> str:
    return "".join(secrets.choice(LOCALPART_ALPHABET) for _position in range(length))


def random_password(length: int) -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _position in range(length))


def dclogin_url(address: str, password: str) -> str:
    """The login link for a relay whose certificate the client must accept as it is."""
    return (
        f"dclogin:{quote(address, safe='@')}?p={quote(password, safe='')}"
        f"&v=1&ic={DCLOGIN_CERTIFICATE_CHECKS}"
    )


class NewAccounts:
    """Hands out credentials the auth service will accept at the first login."""

    def __init__(self, config: Config, probe: SystemProbe | None = None) -> None:
        self.config = config
        # The auth service's own rules decide, so that both always agree.
        self.auth = AuthServer(config, probe)
        self.invites = registration.Invites(config)

    def unused_address(self) -> str:
        length, suffix = self.config.username_max_length, self.config.address_suffix
        for _attempt in range(MAX_ADDRESS_TRIES):
            address = random_localpart(length) + suffix
            if not mailbox.directory(self.config, address).exists():
                return address
        raise NewAccountsRefused(f"no unused address in {MAX_ADDRESS_TRIES} tries")

    def offer(self, token: str | None = None) -> dict[str, str]:
        """Fresh credentials as the JSON fields of the answer; NewAccountsRefused when
        none may be created now, RegistrationRefused when the mode or token forbids it.
        In invite mode this takes one use of the token."""
        registration.admit(self.config, self.invites, token)
        address = self.unused_address()
        password = random_password(max(self.config.password_min_length, MIN_PASSWORD_LENGTH))
        refusal = self.auth.refuse_new_account(address, password)
        if refusal is not None:
            raise NewAccountsRefused(refusal.reason)
        if token and self.config.registration == "invite":
            self.invites.redeem(token)
            mailbox.invite(self.config, address)
        answer = {"email": address, "password": password}
        if self.config.tls_mode == "self_signed":
            answer["dclogin_url"] = dclogin_url(address, password)
        return answer


class NewAccountServer(ThreadingHTTPServer):
    """One thread per request on a socket that is already bound and listening."""

    def __init__(self, accounts: NewAccounts, sock: socket.socket) -> None:
        super().__init__(sock.getsockname()[:2], NewAccountHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.accounts = accounts

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            # A client that hangs up early is no fault of ours.
            log.info("client went away: %s", error)
        else:
            log.exception("cannot answer a request")


class NewAccountHandler(BaseHTTPRequestHandler):
    """Answers /new; every other request gets a JSON error, none gets an exception."""

    server: NewAccountServer
    protocol_version = "HTTP/1.1"
    server_version = "chatrelay-newaccount"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    # Headers and body go out in two writes; Nagle would hold the body back for an ACK.
    disable_nagle_algorithm = True
    # Why the current request was answered as it was; goes into its log line.
    note = ""

    def __getattr__(self, name: str) -> Any:
        # Every method comes here, so that unknown ones get 405 or 404 instead of 501.
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def answer(self) -> None:
        framing_error = self.discard_body()
        if framing_error is not None:
            status, message = framing_error
            self.respond(status, {"error": message}, close=True)
            return
        url = urlsplit(self.path)
        token = parse_qs(url.query).get("token", [None])[0]
        if url.path != NEW_PATH:
            self.respond(HTTPStatus.NOT_FOUND, {"error": "not found"})
        elif self.command == "POST":
            self.post_new(token)
        elif self.command in ("GET", "HEAD"):
            # An invite link opened in a browser leads to Delta Chat with its token.
            query = f"?token={quote(token, safe='')}" if token else ""
            domain = self.server.accounts.config.mail_domain
            location = f"dcaccount:https://{domain}{NEW_PATH}{query}"
            self.respond(HTTPStatus.FOUND, None, {"Location": location})
        else:
            self.respond(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": "method not allowed"},
                {"Allow": ALLOWED_METHODS},
            )

    def post_new(self, token: str | None) -> None:
        try:
            answer = self.server.accounts.offer(token)
        except registration.RegistrationRefused as exc:
            self.note = exc.message
            self.respond(exc.status, {"error": exc.message})
            return
        except NewAccountsRefused as exc:
            self.note = str(exc)
            self.respond(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "no new accounts at the moment, please try again later"},
                {"Retry-After": str(RETRY_AFTER)},
            )
            return
        self.respond(HTTPStatus.OK, answer)

    def discard_body(self) -> tuple[HTTPStatus, str] | None:
        """Read and drop the request body, or say why its size is unacceptable."""
        if "Transfer-Encoding" in self.headers:
            return HTTPStatus.LENGTH_REQUIRED, "a body needs a Content-Length"
        lengths = set(self.headers.get_all("Content-Length", []))
        if not lengths:
            return None
        length = lengths.pop()
        if lengths or not (length.isascii() and length.isdigit()):
            return HTTPStatus.BAD_REQUEST, "invalid Content-Length"
        if int(length) > MAX_BODY:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large"
        self.rfile.read(int(length))
        return None

    def respond(
        self,
        status: HTTPStatus,
        body: dict[str, str] | None,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        data = b"" if body is None else json.dumps(body).encode() + b"\n"
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's answer to requests it cannot parse, as JSON."""
        status = HTTPStatus(code)
        self.log_error("%s", message or status.phrase)
        if self.request_version == self.default_request_version:
            # A line too garbled to name its HTTP version still gets a status line.
            self.request_version = "HTTP/1.0"
        self.respond(status, {"error": status.phrase}, close=True)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # One line per request; neither path nor headers carry credentials.
        status = int(code) if isinstance(code, int) else code
        request = _TOKEN_PARAMETER.sub(r"\1...", _CONTROL_CHARS.sub("?", self.requestline))
        if self.note:
            log.info('"%s" %s (%s)', request, status, self.note)
        else:
            log.info('"%s" %s', request, status)
        self.note = ""

    def log_error(self, format: str, *args: Any) -> None:
        self.note = _CONTROL_CHARS.sub("?", format % args)


def parse_listen(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m chatrelay.newaccount",
        description="The /new service: random credentials for a new account, as JSON.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH, help="relay.ini path")
    parser.add_argument(
        "--listen",
        type=parse_listen,
        metavar="HOST:PORT",
        help=f"address without systemd's socket (default {LISTEN_HOST}:<new_account_port>)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    config = load(args.config)
    host, port = args.listen or (LISTEN_HOST, config.new_account_port)
    server = NewAccountServer(NewAccounts(config), systemd.tcp_listener(host, port))
    log.info("serving %s on %s port %d", NEW_PATH, *server.socket.getsockname()[:2])
    with server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
