"""The auth service: account rules, creation on first login, and its dict replies."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from chatrelay import auth, mailbox
from chatrelay.auth import AuthServer, SystemProbe
from chatrelay.config import Config
from dict_client import RunningServer, percent_e, request

DOMAIN = "example.org"
ADDRESS = f"abcdefghi@{DOMAIN}"
PASSWORD = "correct horse battery"
FILES_DIR = Path(auth.__file__).resolve().parents[1]


class FakeSystem:
    """System readings a test can change; records which path the disk check looked at."""

    def __init__(self) -> None:
        self.load = 0.5
        self.memory = 8 * 1024**3
        self.disk = 100 * 1024**3
        self.disk_paths: list[Path] = []

    def free_disk(self, path: Path) -> int:
        self.disk_paths.append(path)
        return self.disk

    def probe(self) -> SystemProbe:
        return SystemProbe(
            load_1m=lambda: self.load,
            available_memory=lambda: self.memory,
            free_disk=self.free_disk,
        )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    mailboxes = tmp_path / "mail" / DOMAIN
    mailboxes.mkdir(parents=True)
    return Config(
        mail_domain=DOMAIN,
        mailboxes_dir=mailboxes,
        vmail_uid=5000,
        vmail_gid=5001,
        nocreate_file=tmp_path / "chatmail-nocreate",
    )


@pytest.fixture
def system() -> FakeSystem:
    return FakeSystem()


@pytest.fixture
def server(config: Config, system: FakeSystem) -> AuthServer:
    return AuthServer(config, system.probe())


@pytest.fixture
def served(server: AuthServer) -> Iterator[RunningServer]:
    running = RunningServer(server)
    yield running
    running.stop()


def passdb_key(password: str, address: str) -> str:
    return f'shared/passdb/{percent_e(password)}"{percent_e(address)}'


def login(server: AuthServer, address: str = ADDRESS, password: str = PASSWORD) -> dict | None:
    reply = server.lookup(passdb_key(password, address), address)
    return None if reply is None else json.loads(reply)


def verifies(password: str, stored: str) -> bool:
    scheme, _unused, crypted = stored.partition("}")
    assert scheme == "{SHA512-CRYPT"
    return auth.sha512_crypt.verify(password, crypted)


def account_files(config: Config, address: str = ADDRESS) -> list[str]:
    return sorted(os.listdir(mailbox.directory(config, address)))


# --- key parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ('secret"user@x', ("secret", "user@x")),
        ('se\\"cr\\\\et\\\'s"user@x', ("se\"cr\\et's", "user@x")),
        ('ends-in-backslash\\\\"user@x', ("ends-in-backslash\\", "user@x")),
        ('a"b"c', ("a", 'b"c')),
        ('"user@x', ("", "user@x")),
        ("no quote at all", None),
        ('only escaped \\" quote', None),
    ],
)
def test_split_passdb_key(key: str, expected: tuple[str, str] | None) -> None:
    assert auth.split_passdb_key(key) == expected


# --- first login ------------------------------------------------------------------------


def test_first_login_creates_the_account(config: Config, server: AuthServer) -> None:
    reply = login(server)
    assert reply is not None
    user_dir = mailbox.directory(config, ADDRESS)
    assert reply["home"] == str(user_dir)
    assert (reply["uid"], reply["gid"]) == (5000, 5001)
    assert reply["password"].startswith("{SHA512-CRYPT}$6$")
    # 5000 rounds is crypt's implicit default, so the hash names no rounds.
    assert "rounds=" not in reply["password"]
    assert verifies(PASSWORD, reply["password"])
    assert not verifies(PASSWORD + "x", reply["password"])
    assert account_files(config) == ["enforceE2EEincoming", "password"]
    assert (user_dir / "password").read_text().strip() == reply["password"]
    assert (user_dir / "enforceE2EEincoming").read_bytes() == b""
    assert (user_dir / "password").stat().st_uid == os.getuid()


def test_second_login_returns_the_same_hash(config: Config, server: AuthServer) -> None:
    first = login(server)
    assert first is not None
    assert login(server) == first


def test_wrong_password_gets_the_stored_hash_and_changes_nothing(
    config: Config, server: AuthServer
) -> None:
    created = login(server)
    assert created is not None
    password_file = mailbox.directory(config, ADDRESS) / "password"
    before = password_file.read_bytes(), password_file.stat().st_mtime_ns
    other = login(server, password="a different password")
    assert other == created
    # Dovecot compares the cleartext with this hash, so the wrong password fails there.
    assert not verifies("a different password", other["password"])
    assert (password_file.read_bytes(), password_file.stat().st_mtime_ns) == before


def test_create_account_never_overwrites_an_existing_one(
    config: Config, server: AuthServer
) -> None:
    # The path a login takes when another one created the account a moment earlier.
    created = login(server)
    assert created is not None
    stored = server.create_account(ADDRESS, "loser of the race")
    assert stored == created["password"]
    assert account_files(config) == ["enforceE2EEincoming", "password"]


@pytest.mark.parametrize(
    "password",
    ["12345678", "", "short"],
)
def test_too_short_password_creates_nothing(
    config: Config, server: AuthServer, password: str
) -> None:
    assert login(server, password=password) is None
    assert not mailbox.directory(config, ADDRESS).exists()


def test_minimum_password_length_is_enough(config: Config, server: AuthServer) -> None:
    assert login(server, password="123456789") is not None


@pytest.mark.parametrize(
    "address",
    [
        "Abcdefghi@example.org",
        "ABCDEFGHI@example.org",
        "abcdefgh@example.org",
        "abcdefghij@example.org",
        "abcdefghi@example.com",
        "abcdefghi@EXAMPLE.ORG",
        "abcdefghi@sub.example.org",
        "abcdefghi@example.org.evil",
        "abcdefghi",
        "abcd+efgh@example.org",
        "abc/defgh@example.org",
        "../../etc@example.org",
        "abcdefghi@example.org/../x",
        "abcd efgh@example.org",
        "abcdéfghi@example.org",
        "abc@defgh@example.org",
        "",
    ],
)
def test_invalid_addresses_get_no_account(config: Config, server: AuthServer, address: str) -> None:
    assert login(server, address=address) is None
    assert server.lookup(f"shared/userdb/{percent_e(address)}", address) is None
    assert os.listdir(config.mailboxes_dir) == []


@pytest.mark.parametrize("localpart", ["a1b2c3d4e", "a.b-c_d.e", "---------", "........."])
def test_allowed_local_part_characters(config: Config, server: AuthServer, localpart: str) -> None:
    assert login(server, address=f"{localpart}@{DOMAIN}") is not None
    assert mailbox.directory(config, f"{localpart}@{DOMAIN}").is_dir()


def test_username_lengths_come_from_the_config(config: Config, system: FakeSystem) -> None:
    server = AuthServer(
        replace(config, username_min_length=3, username_max_length=5), system.probe()
    )
    assert login(server, address=f"ab@{DOMAIN}") is None
    assert login(server, address=f"abc@{DOMAIN}") is not None
    assert login(server, address=f"abcde@{DOMAIN}") is not None
    assert login(server, address=f"abcdef@{DOMAIN}") is None


# --- what stops new accounts, but not existing ones -------------------------------------


def test_kill_switch_stops_new_accounts_only(config: Config, server: AuthServer) -> None:
    existing = login(server)
    config.nocreate_file.touch()
    assert login(server, address=f"newcomer1@{DOMAIN}") is None
    assert not mailbox.directory(config, f"newcomer1@{DOMAIN}").exists()
    assert login(server) == existing
    config.nocreate_file.unlink()
    assert login(server, address=f"newcomer1@{DOMAIN}") is not None


@pytest.mark.parametrize(
    ("reading", "value", "message"),
    [
        ("load", 5.01, "load"),
        ("memory", 200 * 1024**2 - 1, "memory"),
        ("disk", 1024**3 - 1, "disk"),
    ],
)
def test_system_limits_stop_new_accounts_only(
    config: Config,
    server: AuthServer,
    system: FakeSystem,
    caplog: pytest.LogCaptureFixture,
    reading: str,
    value: float,
    message: str,
) -> None:
    existing = login(server)
    assert existing is not None
    setattr(system, reading, value)
    with caplog.at_level(logging.WARNING, logger="chatrelay.auth"):
        assert login(server, address=f"newcomer1@{DOMAIN}") is None
    assert not mailbox.directory(config, f"newcomer1@{DOMAIN}").exists()
    assert message in caplog.text
    assert login(server) == existing
    assert json.loads(server.lookup(f"shared/userdb/{ADDRESS}", ADDRESS))["home"]


def test_system_limits_at_their_threshold_still_allow_accounts(
    server: AuthServer, system: FakeSystem, config: Config
) -> None:
    system.load = config.max_load_1m
    system.memory = config.min_available_memory
    system.disk = config.min_free_disk_space
    assert login(server) is not None
    assert system.disk_paths == [config.mailboxes_dir]


def test_unreadable_system_state_refuses_new_accounts(config: Config) -> None:
    def broken() -> float:
        raise OSError("no /proc here")

    server = AuthServer(config, SystemProbe(load_1m=broken))
    assert login(server) is None
    assert not mailbox.directory(config, ADDRESS).exists()


def test_real_system_readings(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  2000 kB\nMemAvailable:   1234 kB\n")
    assert auth.read_available_memory(meminfo) == 1234 * 1024
    meminfo.write_text("MemTotal:  2000 kB\n")
    with pytest.raises(ValueError):
        auth.read_available_memory(meminfo)
    assert auth.read_free_disk(tmp_path) > 0
    assert auth.read_load_1m() >= 0
    assert auth.read_available_memory() > 0


# --- userdb -----------------------------------------------------------------------------


def test_userdb_knows_existing_accounts_only(config: Config, server: AuthServer) -> None:
    assert server.lookup(f"shared/userdb/{ADDRESS}", ADDRESS) is None
    login(server)
    reply = json.loads(server.lookup(f"shared/userdb/{ADDRESS}", ADDRESS))
    assert reply == {"home": str(mailbox.directory(config, ADDRESS)), "uid": 5000, "gid": 5001}
    # A directory without a password file (say, half removed) is no account.
    mailbox.directory(config, f"leftovers@{DOMAIN}").mkdir()
    assert server.lookup(f"shared/userdb/leftovers@{DOMAIN}", "") is None
    assert server.lookup("shared/other/thing", "") is None


def test_userdb_iteration_lists_accounts(config: Config, server: AuthServer) -> None:
    for localpart in ("zzzzzzzzz", "aaaaaaaaa", "mmmmmmmmm"):
        login(server, address=f"{localpart}@{DOMAIN}")
    mailbox.directory(config, f"leftovers@{DOMAIN}").mkdir()
    (config.mailboxes_dir / "stray-file").touch()
    assert list(server.iterate("shared/userdb/", "")) == [
        (f"shared/userdb/{name}@{DOMAIN}", "") for name in ("aaaaaaaaa", "mmmmmmmmm", "zzzzzzzzz")
    ]
    assert list(server.iterate("shared/passdb/", "")) == []


# --- over the socket, as Dovecot asks ---------------------------------------------------


def test_dict_replies_over_the_socket(config: Config, served: RunningServer) -> None:
    with served.connect() as client:
        client.hello(user="")
        reply = client.ask(request("L", passdb_key(PASSWORD, ADDRESS), ADDRESS))
        assert reply[0] == "O"
        fields = json.loads(reply[1:])
        assert list(fields) == ["home", "uid", "gid", "password"]
        assert verifies(PASSWORD, fields["password"])
        assert client.ask(request("L", f"shared/userdb/{ADDRESS}", ADDRESS)) == "O" + json.dumps(
            {"home": str(mailbox.directory(config, ADDRESS)), "uid": 5000, "gid": 5001}
        )
        assert client.ask(request("L", f"shared/userdb/nobody123@{DOMAIN}", "")) == "N"
        assert client.ask(request("L", passdb_key("short", f"nobody123@{DOMAIN}"), "")) == "N"
        client.send(request("I", "0", "0", "shared/userdb/", ""))
        assert client.read_rows() == [f"Oshared/userdb/{ADDRESS}\t"]


def test_password_with_quotes_backslashes_and_tab_survives_both_escapings(
    config: Config, served: RunningServer
) -> None:
    password = 'pa"ss\\wo\'rd\twith "all" \\\\ of them\\'
    with served.connect() as client:
        client.hello()
        reply = client.ask(request("L", passdb_key(password, ADDRESS), ADDRESS))
        stored = json.loads(reply[1:])["password"]
        assert verifies(password, stored)
        assert not verifies(password.replace("\t", " "), stored)
        again = client.ask(request("L", passdb_key(password, ADDRESS), ADDRESS))
    assert json.loads(again[1:])["password"] == stored


def test_passdb_key_without_quote_takes_the_user_from_the_request(
    config: Config, served: RunningServer
) -> None:
    with served.connect() as client:
        client.hello()
        reply = client.ask(request("L", "shared/passdb/" + percent_e(PASSWORD), ADDRESS))
    assert verifies(PASSWORD, json.loads(reply[1:])["password"])


def test_concurrent_first_logins_create_one_account(config: Config, served: RunningServer) -> None:
    count = 10
    barrier = threading.Barrier(count)
    replies: list[str] = []
    errors: list[BaseException] = []

    def first_login() -> None:
        try:
            with served.connect() as client:
                client.hello()
                barrier.wait(timeout=10)
                replies.append(client.ask(request("L", passdb_key(PASSWORD, ADDRESS), ADDRESS)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_login) for _unused in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert errors == []
    assert len(replies) == count
    hashes = {json.loads(reply[1:])["password"] for reply in replies}
    assert len(hashes) == 1
    (stored,) = hashes
    assert verifies(PASSWORD, stored)
    assert (mailbox.directory(config, ADDRESS) / "password").read_text().strip() == stored
    # No temporary files left behind by the logins that lost the race.
    assert account_files(config) == ["enforceE2EEincoming", "password"]
    assert os.listdir(config.mailboxes_dir) == [ADDRESS]


def test_entry_point_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatrelay.auth", "--help"],
        env={**os.environ, "PYTHONPATH": str(FILES_DIR)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--socket" in result.stdout and "--config" in result.stdout
