"""The metadata service: device tokens, new-message pushes and server-wide keys over the
dict protocol, its settings, and the service process end to end."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatrelay import config as config_module
from chatrelay import mailbox, metadata, push
from chatrelay.config import Config
from chatrelay.metadata import MetadataServer
from dict_client import DictClient, RunningServer, request
from test_push import ADDRESS, DOMAIN, OTHER, FakeClock, FakeSender, Gateway
from test_push import make_config as push_config

GUID = "43f5f508a7ea0366dff30200c15250e3"
TOKEN_KEY = f"priv/{GUID}/devicetoken"
MESSAGE_NEW_KEY = f"priv/{GUID}/messagenew"
SERVER_PREFIX = "vendor/vendor.dovecot/pvt/server/vendor/deltachat/"
TOKEN = "openpgp:AAAAtoken-one"
TOKEN2 = "openpgp:BBBBtoken-two"
START = 1_700_000_000.0
DAY = 86400
SECRET = "north-wind-secret"
# printf '%s' 1700432000 | openssl dgst -sha1 -hmac north-wind-secret -binary | base64
KNOWN_USERNAME = "1700432000"
KNOWN_PASSWORD = "/jq+7l2jLimuJuMHX16p9XD8gJQ="
FILES = Path(__file__).resolve().parents[3] / "roles" / "relay_services" / "files"


def make_config(tmp_path: Path, **settings: object) -> Config:
    """The push tests' relay, with a TURN secret and the default push concurrency."""
    secret = tmp_path / "turn-secret"
    if not secret.exists():
        secret.write_text(f"  {SECRET}\n")
    return push_config(
        tmp_path, turn_secret_file=secret, push_concurrency=Config.push_concurrency, **settings
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sender(clock: FakeClock) -> FakeSender:
    return FakeSender(clock)


@pytest.fixture
def server(config: Config, sender: FakeSender, clock: FakeClock) -> MetadataServer:
    return MetadataServer(config, sender, clock)


@pytest.fixture
def served(server: MetadataServer) -> Iterator[RunningServer]:
    running = RunningServer(server)
    yield running
    running.stop()


def lookup(served: RunningServer, key: str, user: str = ADDRESS) -> str:
    with served.connect() as client:
        client.hello(user=user, dict_name="metadata")
        return client.ask(request("L", key, user))


def change(served: RunningServer, *changes: tuple[str, str | None], user: str = ADDRESS) -> str:
    """Commit sets (key, value) and unsets (key, None) in one transaction, as Dovecot does."""
    with served.connect() as client:
        client.hello(user=user, dict_name="metadata")
        client.send(request("B", "1", user))
        for key, value in changes:
            if value is None:
                client.send(request("U", "1", key))
            else:
                client.send(request("S", "1", key, value))
        return client.ask(request("C", "1"))


def queued(config: Config) -> list[tuple[str, str]]:
    """(address, token) of every entry in the push queue directory, sorted."""
    entries = []
    for path in config.push_queue_dir.glob("*.json"):
        try:
            entries.append(json.loads(path.read_text()))
        except FileNotFoundError:  # delivered and removed while we listed the directory
            continue
    return sorted((entry["address"], entry["token"]) for entry in entries)


# --- key shapes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "name"),
    [
        (TOKEN_KEY, "devicetoken"),
        (MESSAGE_NEW_KEY, "messagenew"),
        ("priv/devicetoken", None),
        (f"priv/{GUID}/vendor/devicetoken", None),
        (f"shared/{GUID}/devicetoken", None),
        (f"{GUID}/devicetoken", None),
    ],
)
def test_private_key_name(key: str, name: str | None) -> None:
    assert metadata.private_key_name(key) == name


@pytest.mark.parametrize(
    ("key", "name"),
    [
        (f"shared/{GUID}/{SERVER_PREFIX}turn", "turn"),
        (f"shared/{SERVER_PREFIX}turn", "turn"),
        (f"shared/a/b/{SERVER_PREFIX}irohrelay", "irohrelay"),
        (f"priv/{GUID}/{SERVER_PREFIX}turn", None),
        (f"shared/{GUID}/x{SERVER_PREFIX}turn", None),
        (f"shared/{GUID}/{SERVER_PREFIX}turn/extra", None),
        (f"shared/{GUID}/vendor/deltachat/turn", None),
    ],
)
def test_server_key_name(key: str, name: str | None) -> None:
    assert metadata.server_key_name(key) == name


# --- device tokens -----------------------------------------------------------------------


def test_tokens_are_set_listed_refreshed_and_unset(
    served: RunningServer, config: Config, clock: FakeClock
) -> None:
    assert lookup(served, TOKEN_KEY) == "N"
    assert change(served, (TOKEN_KEY, TOKEN)) == "O1"
    assert lookup(served, TOKEN_KEY) == f"O{TOKEN}"
    clock.now += 10
    assert change(served, (TOKEN_KEY, TOKEN2)) == "O1"
    assert lookup(served, TOKEN_KEY) == f"O{TOKEN} {TOKEN2}"
    # Any mailbox GUID names the same account-wide list.
    assert lookup(served, f"priv/{'0' * 32}/devicetoken") == f"O{TOKEN} {TOKEN2}"
    clock.now += 10
    assert change(served, (TOKEN_KEY, TOKEN)) == "O1"
    assert lookup(served, TOKEN_KEY) == f"O{TOKEN2} {TOKEN}"
    stored = json.loads((mailbox.directory(config, ADDRESS) / "devicetokens").read_text())
    assert stored == {TOKEN: int(START) + 20, TOKEN2: int(START) + 10}
    assert lookup(served, TOKEN_KEY, user=OTHER) == "N"
    assert change(served, (TOKEN_KEY, None)) == "O1"
    assert lookup(served, TOKEN_KEY) == "N"
    assert not (mailbox.directory(config, ADDRESS) / "devicetokens").exists()


def test_setting_the_empty_string_removes_all_tokens(served: RunningServer) -> None:
    change(served, (TOKEN_KEY, TOKEN), (TOKEN_KEY, TOKEN2))
    assert change(served, (TOKEN_KEY, "")) == "O1"
    assert lookup(served, TOKEN_KEY) == "N"


def test_expired_tokens_are_not_returned(served: RunningServer, clock: FakeClock) -> None:
    change(served, (TOKEN_KEY, TOKEN))
    clock.now += 45 * DAY
    change(served, (TOKEN_KEY, TOKEN2))
    clock.now = START + 90 * DAY
    assert lookup(served, TOKEN_KEY) == f"O{TOKEN2}"
    clock.now += 45 * DAY
    assert lookup(served, TOKEN_KEY) == "N"


@pytest.mark.parametrize(
    "user", [f"nobody@{DOMAIN}.evil", "../../etc@example.org", "no-at-sign", ""]
)
def test_non_accounts_are_not_served(served: RunningServer, config: Config, user: str) -> None:
    assert lookup(served, TOKEN_KEY, user=user) == "N"
    assert change(served, (TOKEN_KEY, TOKEN), user=user).startswith("F1")
    assert change(served, (MESSAGE_NEW_KEY, ""), user=user) == "O1"
    assert queued(config) == []
    assert sorted(os.listdir(config.mailboxes_dir)) == [ADDRESS, OTHER]


def test_tokens_of_an_address_without_account_directory_are_refused(
    served: RunningServer, config: Config
) -> None:
    address = f"zzzzzzzzz@{DOMAIN}"
    assert change(served, (TOKEN_KEY, TOKEN), user=address).startswith("F1")
    assert not mailbox.directory(config, address).exists()


@pytest.mark.parametrize("token", ["two words", "x" * 9000, "nön-ascii"])
def test_malformed_tokens_fail_the_whole_commit(served: RunningServer, token: str) -> None:
    assert change(served, (TOKEN_KEY, TOKEN2), (TOKEN_KEY, token)).startswith("F1")
    assert lookup(served, TOKEN_KEY) == "N"


def test_concurrent_sets_lose_no_token(
    served: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push, "MAX_TOKENS_PER_ADDRESS", 1000)
    barrier = threading.Barrier(8)
    replies: list[str] = []

    def set_many(worker: int) -> None:
        barrier.wait()
        for number in range(10):
            replies.append(change(served, (TOKEN_KEY, f"token-{worker}-{number}")))

    threads = [threading.Thread(target=set_many, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert replies == ["O1"] * 80
    expected = {f"token-{worker}-{number}" for worker in range(8) for number in range(10)}
    assert set(lookup(served, TOKEN_KEY)[1:].split(" ")) == expected


# --- new messages ------------------------------------------------------------------------


def test_messagenew_is_queued_on_disk_before_the_commit_is_answered(
    served: RunningServer,
    server: MetadataServer,
    config: Config,
    clock: FakeClock,
    sender: FakeSender,
) -> None:
    change(served, (TOKEN_KEY, "expires-soon"))
    clock.now += 80 * DAY
    change(served, (TOKEN_KEY, TOKEN), (TOKEN_KEY, TOKEN2))
    change(served, (TOKEN_KEY, "other-device"), user=OTHER)
    clock.now += 20 * DAY
    # The notifier's workers are not running here: what is queued is on disk only.
    assert change(served, (MESSAGE_NEW_KEY, "")) == "O1"
    assert queued(config) == [(ADDRESS, TOKEN), (ADDRESS, TOKEN2)]
    assert sender.calls == []
    assert server.notifier.run_due() == 2
    assert sorted(token for _unused, token in sender.calls) == [TOKEN, TOKEN2]
    assert queued(config) == []


def test_messagenew_without_tokens_queues_nothing(served: RunningServer, config: Config) -> None:
    assert change(served, (MESSAGE_NEW_KEY, "")) == "O1"
    assert queued(config) == []


def test_unset_of_messagenew_counts_too(served: RunningServer, config: Config) -> None:
    change(served, (TOKEN_KEY, TOKEN))
    assert change(served, (MESSAGE_NEW_KEY, None)) == "O1"
    assert queued(config) == [(ADDRESS, TOKEN)]


def test_a_token_set_with_messagenew_is_notified(served: RunningServer, config: Config) -> None:
    assert change(served, (MESSAGE_NEW_KEY, "1"), (TOKEN_KEY, TOKEN)) == "O1"
    assert queued(config) == [(ADDRESS, TOKEN)]


def test_messages_arriving_before_the_first_attempt_share_one_entry(
    served: RunningServer, config: Config
) -> None:
    change(served, (TOKEN_KEY, TOKEN))
    for _unused in range(3):
        assert change(served, (MESSAGE_NEW_KEY, "")) == "O1"
    assert queued(config) == [(ADDRESS, TOKEN)]


def test_gone_tokens_disappear_from_lookups(
    served: RunningServer, server: MetadataServer, sender: FakeSender
) -> None:
    change(served, (TOKEN_KEY, TOKEN), (TOKEN_KEY, TOKEN2))
    sender.outcomes = [410, 200]
    change(served, (MESSAGE_NEW_KEY, ""))
    server.notifier.run_due()
    assert lookup(served, TOKEN_KEY) == f"O{TOKEN2}"


# --- unsupported keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        f"priv/{GUID}/comment",
        f"shared/{GUID}/comment",
        f"shared/{GUID}/{SERVER_PREFIX}turn",
        f"shared/{GUID}/devicetoken",
        "priv/devicetoken",
    ],
)
def test_changes_of_other_keys_fail_and_nothing_is_applied(
    served: RunningServer, config: Config, key: str
) -> None:
    change(served, (TOKEN_KEY, TOKEN))
    reply = change(served, (TOKEN_KEY, None), (MESSAGE_NEW_KEY, ""), (key, "value"))
    assert reply.startswith("F1")
    assert lookup(served, TOKEN_KEY) == f"O{TOKEN}"
    assert queued(config) == []


@pytest.mark.parametrize(
    "key",
    [
        f"priv/{GUID}/comment",
        MESSAGE_NEW_KEY,
        f"shared/{GUID}/{SERVER_PREFIX}unknown",
        f"priv/{GUID}/{SERVER_PREFIX}turn",
        f"shared/{GUID}/vendor/deltachat/turn",
        "shared/passdb/x",
    ],
)
def test_lookups_of_other_keys_find_nothing(served: RunningServer, key: str) -> None:
    assert lookup(served, key) == "N"


def test_iteration_finds_nothing(served: RunningServer) -> None:
    change(served, (TOKEN_KEY, TOKEN))
    with served.connect() as client:
        client.hello(user=ADDRESS)
        client.send(request("I", "0", "0", f"priv/{GUID}/", ADDRESS))
        assert client.read_rows() == []


# --- server-wide keys --------------------------------------------------------------------


def openssl_turn_password(secret: str, username: str) -> str:
    """The password as `openssl dgst -sha1 -hmac` computes it, independent of Python."""
    digest = subprocess.run(
        ["openssl", "dgst", "-sha1", "-hmac", secret, "-binary"],
        input=username.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return base64.b64encode(digest).decode()


def test_turn_credentials_match_a_known_vector() -> None:
    assert metadata.turn_credentials(SECRET.encode(), int(KNOWN_USERNAME)) == (
        KNOWN_USERNAME,
        KNOWN_PASSWORD,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_known_vector_is_what_openssl_computes() -> None:
    assert openssl_turn_password(SECRET, KNOWN_USERNAME) == KNOWN_PASSWORD


@pytest.mark.parametrize("prefix", [f"shared/{GUID}/", "shared/"])
def test_turn_answers_host_port_and_rest_credentials(
    served: RunningServer, clock: FakeClock, prefix: str
) -> None:
    reply = lookup(served, prefix + SERVER_PREFIX + "turn")
    assert reply == f"O{DOMAIN}:3478:{KNOWN_USERNAME}:{KNOWN_PASSWORD}"
    clock.now += 1234.9
    host, port, username, password = lookup(served, prefix + SERVER_PREFIX + "turn")[1:].split(":")
    assert (host, port) == (DOMAIN, "3478")
    assert username == str(int(START) + 1234 + 5 * DAY)
    expected = hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


def test_turn_follows_the_settings_and_a_changed_secret(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, turn_host="turn.example.net", turn_port=5349)
    config = dataclasses.replace(config, turn_credential_lifetime=3600)
    running = RunningServer(MetadataServer(config, FakeSender(clock), clock))
    try:
        first = lookup(running, f"shared/{GUID}/{SERVER_PREFIX}turn")[1:].split(":")
        config.turn_secret_file.write_text("rotated\n")
        second = lookup(running, f"shared/{GUID}/{SERVER_PREFIX}turn")[1:].split(":")
    finally:
        running.stop()
    assert first[:3] == ["turn.example.net", "5349", str(int(START) + 3600)]
    assert second[:3] == first[:3]
    expected = hmac.new(b"rotated", second[2].encode(), hashlib.sha1).digest()
    assert second[3] == base64.b64encode(expected).decode() != first[3]


@pytest.mark.parametrize(("content", "why"), [(None, "cannot be read"), (" \n", "is empty")])
def test_turn_fails_without_a_secret(
    served: RunningServer,
    config: Config,
    caplog: pytest.LogCaptureFixture,
    content: str | None,
    why: str,
) -> None:
    if content is None:
        config.turn_secret_file.unlink()
    else:
        config.turn_secret_file.write_text(content)
    reply = lookup(served, f"shared/{GUID}/{SERVER_PREFIX}turn")
    assert reply.startswith("F")
    assert f"TURN secret {config.turn_secret_file} {why}" in caplog.text
    # The service is still there for everything else.
    assert lookup(served, f"shared/{GUID}/{SERVER_PREFIX}maxsmtprecipients") == "O1000"


def test_iroh_relay_is_n_until_configured(served: RunningServer, tmp_path: Path) -> None:
    assert lookup(served, f"shared/{GUID}/{SERVER_PREFIX}irohrelay") == "N"
    config = make_config(tmp_path, iroh_relay="https://iroh.example.org/")
    running = RunningServer(MetadataServer(config, FakeSender(FakeClock())))
    try:
        reply = lookup(running, f"shared/{GUID}/{SERVER_PREFIX}irohrelay")
    finally:
        running.stop()
    assert reply == "Ohttps://iroh.example.org/"


def test_max_smtp_recipients(served: RunningServer, tmp_path: Path) -> None:
    assert lookup(served, f"shared/{GUID}/{SERVER_PREFIX}maxsmtprecipients") == "O1000"
    config = make_config(tmp_path, max_smtp_recipients=50)
    running = RunningServer(MetadataServer(config, FakeSender(FakeClock())))
    try:
        assert lookup(running, f"shared/{SERVER_PREFIX}maxsmtprecipients") == "O50"
    finally:
        running.stop()


# --- app-version hints (SPEC section 12) --------------------------------------------------

APPVERSIONS = {
    "clients": [
        {
            "clientId": "deltachat",
            "sources": [
                {
                    "sourceId": "f-droid",
                    "versionInteger": 7,
                    "versionString": "2.0 «beta»",
                    "downloadUrl": "https://example.org/dc.apk",
                }
            ],
        }
    ]
}


def test_appversions_is_the_operators_document_on_one_line(tmp_path: Path) -> None:
    document = tmp_path / "appversions.json"
    document.write_text(json.dumps(APPVERSIONS, indent=4) + "\n")
    running = RunningServer(MetadataServer(make_config(tmp_path, appversions_file=document)))
    try:
        reply = lookup(running, f"shared/{GUID}/{SERVER_PREFIX}appversions")
        # Compact, on one line, non-ASCII as it is.
        assert reply == (
            'O{"clients":[{"clientId":"deltachat","sources":[{"sourceId":"f-droid",'
            '"versionInteger":7,"versionString":"2.0 «beta»",'
            '"downloadUrl":"https://example.org/dc.apk"}]}]}'
        )
        assert json.loads(reply[1:]) == APPVERSIONS
        # Without a document there is none (NIL for the client), also after it is removed.
        document.unlink()
        assert lookup(running, f"shared/{GUID}/{SERVER_PREFIX}appversions") == "N"
        document.write_text("{broken")
        assert lookup(running, f"shared/{GUID}/{SERVER_PREFIX}appversions") == "N"
    finally:
        running.stop()


# --- settings ----------------------------------------------------------------------------


def test_settings_have_the_documented_defaults() -> None:
    config = Config(mail_domain=DOMAIN, mailboxes_dir=Path("/home/vmail"))
    assert config.push_gateway_url == "https://notifications.delta.chat/notify"
    assert config.push_queue_dir == Path("/var/lib/chatmail/push")
    assert config.push_concurrency == 8
    assert config.push_give_up_after == 18000
    assert config.push_token_expiry_days == 90
    assert config.turn_secret_file == Path("/etc/chatmail/turn-secret")
    assert (config.turn_host, config.turn_hostname) == ("", DOMAIN)
    assert config.turn_port == 3478
    assert config.turn_credential_lifetime == 5 * DAY
    assert config.iroh_relay == ""
    assert config.max_smtp_recipients == 1000


def test_settings_are_read_from_the_ini_file(tmp_path: Path) -> None:
    ini = tmp_path / "relay.ini"
    ini.write_text(
        "[relay]\n"
        f"mail_domain = {DOMAIN}\n"
        "mailboxes_dir = /home/vmail/mail\n"
        "push_gateway_url = http://127.0.0.1:9/notify\n"
        "push_queue_dir = /srv/push\n"
        "push_concurrency = 3\n"
        "push_give_up_after = 600\n"
        "push_token_expiry_days = 30\n"
        "turn_secret_file = /srv/turn-secret\n"
        "turn_host = turn.example.net\n"
        "turn_port = 5349\n"
        "turn_credential_lifetime = 3600\n"
        "iroh_relay = https://iroh.example.org\n"
        "max_smtp_recipients = 50\n"
    )
    config = config_module.load(ini)
    assert config.push_gateway_url == "http://127.0.0.1:9/notify"
    assert config.push_queue_dir == Path("/srv/push")
    assert (config.push_concurrency, config.push_give_up_after) == (3, 600)
    assert config.push_token_expiry_days == 30
    assert config.turn_secret_file == Path("/srv/turn-secret")
    assert (config.turn_hostname, config.turn_port) == ("turn.example.net", 5349)
    assert config.turn_credential_lifetime == 3600
    assert config.iroh_relay == "https://iroh.example.org"
    assert config.max_smtp_recipients == 50


def test_a_malformed_number_names_the_setting(tmp_path: Path) -> None:
    ini = tmp_path / "relay.ini"
    ini.write_text(f"[relay]\nmail_domain = {DOMAIN}\nmailboxes_dir = /m\nturn_port = turn\n")
    with pytest.raises(ValueError, match="turn_port = 'turn'"):
        config_module.load(ini)


# --- the service -------------------------------------------------------------------------


def test_serve_runs_the_push_workers_alongside(tmp_path: Path) -> None:
    gateway = Gateway()
    directory = Path(tempfile.mkdtemp(prefix="meta-", dir="/tmp"))
    try:
        config = make_config(tmp_path, push_gateway_url=gateway.url)
        server = MetadataServer(config)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(directory / "socket"))
        sock.listen()

        def dovecot() -> list[str]:
            with DictClient(str(directory / "socket")) as client:
                client.hello(user=ADDRESS)
                client.send(request("B", "1", ADDRESS), request("S", "1", TOKEN_KEY, TOKEN))
                assert client.ask(request("C", "1")) == "O1"
                client.send(request("B", "2", ADDRESS), request("S", "2", MESSAGE_NEW_KEY, ""))
                assert client.ask(request("C", "2")) == "O2"
            return [received.body.decode() for received in gateway.wait_for(1)]

        async def scenario() -> list[str]:
            task = asyncio.create_task(server.serve(sock))
            try:
                return await asyncio.to_thread(dovecot)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

        assert asyncio.run(scenario()) == [TOKEN]
        assert not any(thread.name.startswith("push-") for thread in threading.enumerate())
    finally:
        gateway.stop()
        shutil.rmtree(directory)


def test_the_service_process_end_to_end(tmp_path: Path) -> None:
    """`python3 -m chatrelay.metadata`: resumes its queue, stores a token, pushes it fast."""
    gateway = Gateway()
    directory = Path(tempfile.mkdtemp(prefix="meta-", dir="/tmp"))
    config = make_config(tmp_path)
    left_over = push.QueueEntry("left-over", "from-before", ADDRESS, time.time(), time.time())
    push.PushQueue(config.push_queue_dir).save(left_over)
    ini = tmp_path / "relay.ini"
    ini.write_text(
        "[relay]\n"
        f"mail_domain = {DOMAIN}\n"
        f"mailboxes_dir = {config.mailboxes_dir}\n"
        f"push_queue_dir = {config.push_queue_dir}\n"
        f"push_gateway_url = {gateway.url}\n"
        f"turn_secret_file = {config.turn_secret_file}\n"
    )
    path = str(directory / "socket")
    process = subprocess.Popen(
        [sys.executable, "-m", "chatrelay.metadata", "--socket", path, "--config", str(ini)],
        env={**os.environ, "PYTHONPATH": str(FILES)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert process.poll() is None, "metadata service exited early"
            assert time.monotonic() < deadline, "metadata service did not create its socket"
            time.sleep(0.02)
        assert [r.body for r in gateway.wait_for(1)] == [b"from-before"]
        with DictClient(path) as client:
            client.hello(user=ADDRESS, dict_name="metadata")
            client.send(request("B", "1", ADDRESS), request("S", "1", TOKEN_KEY, TOKEN))
            assert client.ask(request("C", "1")) == "O1"
            assert client.ask(request("L", TOKEN_KEY, ADDRESS)) == f"O{TOKEN}"
            turn = client.ask(request("L", f"shared/{GUID}/{SERVER_PREFIX}turn", ADDRESS))
            assert turn.startswith(f"O{DOMAIN}:3478:")
            started = time.monotonic()
            client.send(request("B", "2", ADDRESS), request("S", "2", MESSAGE_NEW_KEY, ""))
            assert client.ask(request("C", "2")) == "O2"
            second = gateway.wait_for(2)[1]
            assert second.at - started < 1
        assert second.body == TOKEN.encode()
        # The entry goes once the answer is in, a moment after the gateway saw it.
        while queued(config):
            assert time.monotonic() < deadline + 10, "delivered entries stay queued"
            time.sleep(0.02)
    finally:
        process.terminate()
        _unused, stderr = process.communicate(timeout=10)
        gateway.stop()
        shutil.rmtree(directory)
    assert "resuming 1 pending push notifications" in stderr
    assert "delivered (200)" in stderr
    assert TOKEN not in stderr
