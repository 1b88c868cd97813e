"""The /new service: credentials the auth service accepts, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from chatrelay import mailbox, newaccount
from chatrelay.auth import AuthServer
from chatrelay.config import Config, load
from chatrelay.newaccount import NewAccounts, NewAccountServer
from test_auth import FakeSystem, login, verifies

DOMAIN = "example.org"
FILES_DIR = Path(newaccount.__file__).resolve().parents[1]
LOCATION = f"dcaccount:https://{DOMAIN}/new"


class Reply:
    """What a test looks at in an HTTP response, read to its end."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self) -> dict[str, str]:
        assert self.headers["Content-Type"] == "application/json"
        return json.loads(self.body)


class Client:
    """One keep-alive connection to the service under test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def request(
        self, method: str, path: str = "/new", body: bytes | None = None, **headers: str
    ) -> Reply:
        self.connection.request(method, path, body=body, headers=headers)
        reply = Reply(self.connection.getresponse())
        assert reply.headers["Cache-Control"] == "no-store"
        return reply

    def post(self) -> Reply:
        return self.request("POST")

    def raw(self, data: bytes) -> bytes:
        """Send bytes as they are on a fresh connection; everything until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    mailboxes = tmp_path / "mail" / DOMAIN
    mailboxes.mkdir(parents=True)
    return Config(
        mail_domain=DOMAIN,
        mailboxes_dir=mailboxes,
        nocreate_file=tmp_path / "chatmail-nocreate",
    )


@pytest.fixture
def client(serve: Callable[[Config], Client], config: Config) -> Client:
    return serve(config)


def assert_refused(reply: Reply) -> None:
    assert reply.status == 503
    assert reply.headers["Retry-After"] == str(newaccount.RETRY_AFTER)
    assert "try again later" in reply.json()["error"]


# --- POST: the credentials --------------------------------------------------------------


def test_post_offers_credentials_the_auth_rules_accept(
    config: Config, client: Client, system: FakeSystem
) -> None:
    reply = client.post()
    assert reply.status == 200
    credentials = reply.json()
    assert set(credentials) == {"email", "password"}
    address, password = credentials["email"], credentials["password"]
    assert mailbox.is_address(config, address)
    assert re.fullmatch(rf"[a-z0-9]{{9}}@{re.escape(DOMAIN)}", address)
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", password)
    assert AuthServer(config, system.probe()).refuse_new_account(address, password) is None
    # The account is made by its first login, not here.
    assert os.listdir(config.mailboxes_dir) == []


def test_credentials_differ_on_every_request(client: Client) -> None:
    offers = [client.post().json() for _unused in range(50)]
    assert len({offer["email"] for offer in offers}) == 50
    assert len({offer["password"] for offer in offers}) == 50


def test_lengths_follow_the_config(
    config: Config, serve: Callable[[Config], Client], system: FakeSystem
) -> None:
    config = replace(config, username_min_length=3, username_max_length=12, password_min_length=32)
    credentials = serve(config).post().json()
    localpart = credentials["email"].partition("@")[0]
    assert len(localpart) == 12
    assert len(credentials["password"]) == 32
    server = AuthServer(config, system.probe())
    assert server.refuse_new_account(credentials["email"], credentials["password"]) is None


def test_the_credentials_log_in_with_the_auth_service(
    config: Config, client: Client, system: FakeSystem
) -> None:
    credentials = client.post().json()
    address, password = credentials["email"], credentials["password"]
    server = AuthServer(config, system.probe())
    created = login(server, address, password)
    assert created is not None
    assert created["home"] == str(mailbox.directory(config, address))
    assert verifies(password, created["password"])
    again = login(server, address, password)
    assert again == created
    assert verifies(password, again["password"])
    # Dovecot checks the cleartext against this hash, so another password fails there.
    wrong = login(server, address, "wrong" + password)
    assert wrong == created
    assert not verifies("wrong" + password, wrong["password"])


def test_taken_addresses_are_skipped(
    config: Config, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox.directory(config, f"aaaaaaaaa@{DOMAIN}").mkdir()
    names = iter(["aaaaaaaaa", "aaaaaaaaa", "bbbbbbbbb"])
    monkeypatch.setattr(newaccount, "random_localpart", lambda length: next(names))
    assert client.post().json()["email"] == f"bbbbbbbbb@{DOMAIN}"


def test_no_offer_when_every_address_tried_is_taken(
    config: Config,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailbox.directory(config, f"aaaaaaaaa@{DOMAIN}").mkdir()
    monkeypatch.setattr(newaccount, "random_localpart", lambda length: "aaaaaaaaa")
    with caplog.at_level(logging.INFO, logger="chatrelay.newaccount"):
        assert_refused(client.post())
    assert "no unused address" in caplog.text


# --- dclogin: URL for self-signed relays ------------------------------------------------


@pytest.mark.parametrize("tls_mode", ["acme", "external"])
def test_no_dclogin_url_with_a_trusted_certificate(
    config: Config, serve: Callable[[Config], Client], tls_mode: str
) -> None:
    credentials = serve(replace(config, tls_mode=tls_mode)).post().json()
    assert set(credentials) == {"email", "password"}


def test_self_signed_relays_add_a_dclogin_url(
    config: Config, serve: Callable[[Config], Client]
) -> None:
    credentials = serve(replace(config, tls_mode="self_signed")).post().json()
    assert set(credentials) == {"email", "password", "dclogin_url"}
    url = urlsplit(credentials["dclogin_url"])
    assert url.scheme == "dclogin"
    assert url.path == credentials["email"]
    query = parse_qs(url.query, strict_parsing=True)
    assert query == {"p": [credentials["password"]], "v": ["1"], "ic": ["3"]}


def test_dclogin_url_quotes_any_password() -> None:
    password = "a&b=c?d/e%f +g#h\"i'j"
    url = urlsplit(newaccount.dclogin_url(f"abcdefghi@{DOMAIN}", password))
    assert (url.scheme, url.path, url.fragment) == ("dclogin", f"abcdefghi@{DOMAIN}", "")
    assert parse_qs(url.query, strict_parsing=True)["p"] == [password]


# --- when no new accounts are made ------------------------------------------------------


def test_kill_switch_refuses_new_accounts(
    config: Config, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    config.nocreate_file.touch()
    with caplog.at_level(logging.INFO, logger="chatrelay.newaccount"):
        assert_refused(client.post())
    assert str(config.nocreate_file) in caplog.text
    config.nocreate_file.unlink()
    assert client.post().status == 200


@pytest.mark.parametrize(
    ("reading", "value", "message"),
    [("load", 5.01, "load"), ("memory", 1024, "memory"), ("disk", 1024, "disk")],
)
def test_system_limits_refuse_new_accounts(
    client: Client,
    system: FakeSystem,
    caplog: pytest.LogCaptureFixture,
    reading: str,
    value: float,
    message: str,
) -> None:
    setattr(system, reading, value)
    with caplog.at_level(logging.INFO, logger="chatrelay.newaccount"):
        assert_refused(client.post())
    (line,) = [r.getMessage() for r in caplog.records if r.name == "chatrelay.newaccount"]
    assert line.startswith('"POST /new HTTP/1.1" 503 (') and message in line


# --- other methods and paths ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/new", "/new?from=qr"])
def test_get_redirects_to_the_dcaccount_link(client: Client, path: str) -> None:
    reply = client.request("GET", path)
    assert (reply.status, reply.headers["Location"], reply.body) == (302, LOCATION, b"")


def test_head_redirects_without_a_body(client: Client) -> None:
    reply = client.request("HEAD")
    assert (reply.status, reply.headers["Location"], reply.body) == (302, LOCATION, b"")
    # The same connection still serves: HEAD left nothing unread behind.
    assert client.post().status == 200


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_are_not_allowed(client: Client, method: str) -> None:
    reply = client.request(method)
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET, HEAD, POST"
    assert reply.json() == {"error": "method not allowed"}


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "DELETE"])
@pytest.mark.parametrize("path", ["/", "/new/", "/newer", "/cgi-bin/newemail.py", "*"])
def test_other_paths_are_not_found(client: Client, method: str, path: str) -> None:
    reply = client.request(method, path)
    assert reply.status == 404
    assert reply.body == (b"" if method == "HEAD" else b'{"error": "not found"}\n')


# --- malformed and unusual requests -----------------------------------------------------


@pytest.mark.parametrize(
    "request_line",
    [b"GARBAGE", b"POST /new HTTQ/1.1", b"POST /new HTTP/1.1.1", b"POST /new  extra HTTP/1.1"],
)
def test_a_malformed_request_line_gets_400_and_the_service_goes_on(
    client: Client, request_line: bytes
) -> None:
    answer = client.raw(request_line + b"\r\nHost: x\r\n\r\n")
    head, _unused, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Cache-Control: no-store" in head
    assert json.loads(body) == {"error": "Bad Request"}
    assert client.post().status == 200


def test_an_overlong_request_line_and_http2_are_refused(client: Client) -> None:
    assert client.raw(b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 414 ")
    assert client.raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    assert client.raw(b"\r\n") == b""
    assert client.post().status == 200


def test_a_small_body_is_read_and_ignored(client: Client) -> None:
    reply = client.request("POST", body=b"x" * 1000)
    assert reply.status == 200
    # The connection stays usable: the body was consumed.
    assert client.request("GET").status == 302


def test_a_large_body_is_refused_unread(client: Client) -> None:
    announced = newaccount.MAX_BODY + 1
    answer = client.raw(f"POST /new HTTP/1.1\r\nContent-Length: {announced}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: ten",
        b"Content-Length: -1",
        b"Content-Length: 1\r\nContent-Length: 2",
        "Content-Length: ²".encode(),
    ],
)
def test_a_bad_content_length_gets_400(client: Client, headers: bytes) -> None:
    answer = client.raw(b"POST /new HTTP/1.1\r\n" + headers + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"invalid Content-Length"' in answer


def test_repeated_equal_content_lengths_are_fine(client: Client) -> None:
    answer = client.raw(
        b"POST /new HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}"
    )
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_a_chunked_body_needs_a_length(client: Client) -> None:
    answer = client.raw(b"POST /new HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411 ")


def test_one_log_line_per_request_without_credentials(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="chatrelay.newaccount"):
        credentials = client.post().json()
        client.request("GET")
        client.raw(b"BAD\x1b[31m\r\n\r\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "chatrelay.newaccount"]
    assert lines[:2] == ['"POST /new HTTP/1.1" 200', '"GET /new HTTP/1.1" 302']
    assert lines[2].startswith('"BAD?[31m" 400 (Bad request syntax')
    assert len(lines) == 3
    for secret in (credentials["email"], credentials["password"]):
        assert secret not in caplog.text


def test_connection_errors_are_one_line_and_others_a_traceback(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        server = NewAccountServer(NewAccounts(config), sock)
        with caplog.at_level(logging.INFO, logger="chatrelay.newaccount"):
            try:
                raise ConnectionResetError("reset by peer")
            except ConnectionResetError:
                server.handle_error(None, ("127.0.0.1", 1))
            try:
                raise RuntimeError("a bug")
            except RuntimeError:
                server.handle_error(None, ("127.0.0.1", 1))
    (gone, bug) = caplog.records
    assert (gone.levelno, gone.exc_info) == (logging.INFO, None)
    assert "reset by peer" in gone.getMessage()
    assert bug.levelno == logging.ERROR and bug.exc_info is not None


# --- settings and command line ----------------------------------------------------------


def test_tls_mode_and_port_settings(tmp_path: Path) -> None:
    path = tmp_path / "relay.ini"
    path.write_text(f"[relay]\nmail_domain = {DOMAIN}\nmailboxes_dir = /m\n")
    assert (load(path).tls_mode, load(path).new_account_port) == ("acme", 10090)
    path.write_text(path.read_text() + "tls_mode = self_signed\nnew_account_port = 8080\n")
    assert (load(path).tls_mode, load(path).new_account_port) == ("self_signed", 8080)
    path.write_text(path.read_text().replace("self_signed", "self-signed"))
    with pytest.raises(ValueError, match=r"tls_mode = 'self-signed': expected one of acme"):
        load(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:10090", ("127.0.0.1", 10090)), ("[::1]:8080", ("::1", 8080))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert newaccount.parse_listen(text) == expected


@pytest.mark.parametrize("text", ["10090", ":10090", "127.0.0.1:", "127.0.0.1:http"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(newaccount.argparse.ArgumentTypeError, match="HOST:PORT"):
        newaccount.parse_listen(text)


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def post_when_listening(port: int) -> Reply:
    deadline = time.monotonic() + 10
    while True:
        client = Client(port)
        try:
            return client.post()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
        finally:
            client.connection.close()


@pytest.fixture
def relay_ini(config: Config, tmp_path: Path) -> Path:
    path = tmp_path / "relay.ini"
    path.write_text(
        f"[relay]\nmail_domain = {DOMAIN}\nmailboxes_dir = {config.mailboxes_dir}\n"
        f"nocreate_file = {config.nocreate_file}\ntls_mode = self_signed\n"
        # Whatever this machine's load, the test relay takes new accounts.
        "max_load_1m = 100000\nmin_available_memory = 0\nmin_free_disk_space = 0\n"
    )
    return path


def test_main_serves_on_the_listen_address(
    relay_ini: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One request, then main returns and closes its socket.
    monkeypatch.setattr(NewAccountServer, "serve_forever", NewAccountServer.handle_request)
    port = free_port()
    results: list[int] = []
    thread = threading.Thread(
        target=lambda: results.append(
            newaccount.main(["--config", str(relay_ini), "--listen", f"127.0.0.1:{port}"])
        )
    )
    thread.start()
    reply = post_when_listening(port)
    thread.join(timeout=10)
    assert results == [0]
    assert reply.status == 200 and "dclogin_url" in reply.json()


def test_entry_point_runs_as_a_module(relay_ini: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "chatrelay.newaccount"),
            *("--config", str(relay_ini), "--listen", f"127.0.0.1:{port}"),
        ],
        env={**os.environ, "PYTHONPATH": str(FILES_DIR)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        reply = post_when_listening(port)
    finally:
        process.terminate()
        _unused, stderr = process.communicate(timeout=10)
    assert reply.status == 200 and mailbox.is_address(load(relay_ini), reply.json()["email"]), (
        stderr
    )
    assert f"serving /new on 127.0.0.1 port {port}" in stderr
    assert '"POST /new HTTP/1.1" 200' in stderr
