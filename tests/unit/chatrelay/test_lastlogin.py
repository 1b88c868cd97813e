"""The last-login service: a login moves the password file's mtime to that UTC day."""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatrelay import lastlogin, mailbox
from chatrelay.config import Config
from chatrelay.lastlogin import LastLoginServer
from dict_client import RunningServer, request

DOMAIN = "example.org"
ADDRESS = f"abcdefghi@{DOMAIN}"
# 2024-03-05 17:42:11 UTC, and the midnight that starts that day.
LOGIN = calendar.timegm((2024, 3, 5, 17, 42, 11))
DAY_START = calendar.timegm((2024, 3, 5, 0, 0, 0))
LONG_AGO = calendar.timegm((2020, 1, 1, 12, 0, 0))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    mailboxes = tmp_path / DOMAIN
    mailboxes.mkdir()
    return Config(mail_domain=DOMAIN, mailboxes_dir=mailboxes)


@pytest.fixture
def password_file(config: Config) -> Path:
    user_dir = mailbox.directory(config, ADDRESS)
    user_dir.mkdir()
    path = user_dir / "password"
    path.write_text("{SHA512-CRYPT}$6$salt$hash\n")
    os.utime(path, (LONG_AGO, LONG_AGO))
    return path


@pytest.fixture
def served(config: Config) -> Iterator[RunningServer]:
    running = RunningServer(LastLoginServer(config))
    yield running
    running.stop()


def record_login(served: RunningServer, key: str, value: str, commit: str = "C") -> str:
    """Send what Dovecot's last_login plugin sends; return the commit reply."""
    with served.connect() as client:
        client.hello(user=ADDRESS, dict_name="lastlogin")
        client.send(request("B", "1", ADDRESS), request("S", "1", key, value))
        return client.ask(request(commit, "1"))


def test_start_of_day() -> None:
    assert lastlogin.start_of_day(LOGIN) == DAY_START
    assert lastlogin.start_of_day(DAY_START) == DAY_START
    assert lastlogin.start_of_day(DAY_START - 1) == DAY_START - 86400


@pytest.mark.parametrize(("commit", "reply"), [("C", "O1"), ("D", "AO1")])
def test_login_sets_mtime_and_atime_to_the_start_of_the_utc_day(
    served: RunningServer, password_file: Path, commit: str, reply: str
) -> None:
    assert record_login(served, f"shared/last-login/{ADDRESS}", str(LOGIN), commit) == reply
    stat = password_file.stat()
    assert stat.st_mtime == DAY_START
    assert stat.st_atime == DAY_START
    assert password_file.read_text() == "{SHA512-CRYPT}$6$salt$hash\n"


def test_finer_precision_timestamps_are_scaled_to_seconds(
    served: RunningServer, password_file: Path
) -> None:
    assert record_login(served, f"shared/last-login/{ADDRESS}", str(LOGIN * 1000)) == "O1"
    assert password_file.stat().st_mtime == DAY_START
    os.utime(password_file, (LONG_AGO, LONG_AGO))
    assert record_login(served, f"priv/last-login/{ADDRESS}", str(LOGIN * 10**9 + 5)) == "O1"
    assert password_file.stat().st_mtime == DAY_START


def test_unparsable_value_records_today(served: RunningServer, password_file: Path) -> None:
    assert record_login(served, f"shared/last-login/{ADDRESS}", "yesterday-ish") == "O1"
    assert password_file.stat().st_mtime == lastlogin.start_of_day(int(time.time()))


def test_key_without_address_uses_the_transaction_user(
    served: RunningServer, password_file: Path
) -> None:
    assert record_login(served, "shared/last-login/", str(LOGIN)) == "O1"
    assert password_file.stat().st_mtime == DAY_START


@pytest.mark.parametrize(
    "address",
    [f"nobody123@{DOMAIN}", "../../../etc@example.org", f"abcdefghi@other.{DOMAIN}", "x/y"],
)
def test_unknown_or_invalid_users_are_ignored_but_acknowledged(
    served: RunningServer, config: Config, password_file: Path, address: str
) -> None:
    assert record_login(served, f"shared/last-login/{address}", str(LOGIN)) == "O1"
    assert sorted(os.listdir(config.mailboxes_dir)) == [ADDRESS]
    assert password_file.stat().st_mtime == LONG_AGO


def test_other_keys_are_ignored(served: RunningServer, password_file: Path) -> None:
    assert record_login(served, f"shared/something-else/{ADDRESS}", str(LOGIN)) == "O1"
    assert password_file.stat().st_mtime == LONG_AGO


def test_lookups_find_nothing(served: RunningServer, password_file: Path) -> None:
    record_login(served, f"shared/last-login/{ADDRESS}", str(LOGIN))
    with served.connect() as client:
        client.hello()
        assert client.ask(request("L", f"shared/last-login/{ADDRESS}", ADDRESS)) == "N"


def test_file_system_refusal_fails_the_commit(
    served: RunningServer, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(mailbox.os, "utime", refuse)
    assert record_login(served, f"shared/last-login/{ADDRESS}", str(LOGIN)).startswith("F1")
