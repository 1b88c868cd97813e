"""Expiry: the daily sweep and quota-warning pruning, against a fake clock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chatrelay import expire, mailbox
from chatrelay.config import Config

DOMAIN = "example.org"
NOW = 1_700_000_000.0
DAY = 86400
HOUR = 3600
KIB = 1024
FILES_DIR = Path(expire.__file__).resolve().parents[1]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    mailboxes = tmp_path / "mail" / DOMAIN
    mailboxes.mkdir(parents=True)
    return Config(mail_domain=DOMAIN, mailboxes_dir=mailboxes, max_mailbox_size=1000)


def make_account(config: Config, localpart: str, last_login_days_ago: float = 1) -> Path:
    account = mailbox.directory(config, f"{localpart}@{DOMAIN}")
    for part in ("cur", "new", "tmp"):
        (account / part).mkdir(parents=True)
    password = account / "password"
    password.write_text("{SHA512-CRYPT}$6$x$y\n")
    set_age(password, last_login_days_ago * DAY)
    (account / "maildirsize").write_text("1000S\n0 0\n")
    return account


def set_age(path: Path, seconds: float) -> None:
    os.utime(path, (NOW - seconds, NOW - seconds))


def make_message(folder: Path, name: str, size: int, age: float, part: str = "cur") -> Path:
    path = folder / part / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    set_age(path, age)
    return path


def test_inactive_accounts_are_removed_and_active_ones_kept(config: Config) -> None:
    gone = make_account(config, "inactive1", last_login_days_ago=91)
    make_message(gone, "m1", 10, age=DAY)
    boundary = make_account(config, "boundary1", last_login_days_ago=90)
    active = make_account(config, "active123", last_login_days_ago=89)
    summary = expire.run_expiry(config, NOW)
    assert not gone.exists()
    assert boundary.exists() and active.exists()
    assert (summary.accounts, summary.messages, summary.errors) == (1, 0, 0)
    assert (active / "maildirsize").exists()


def test_old_mail_is_removed_from_every_folder(config: Config) -> None:
    account = make_account(config, "someone12")
    sent = account / ".Sent"
    old = [
        make_message(account, "old-cur", 100, age=21 * DAY),
        make_message(account, "old-new", 200, age=21 * DAY, part="new"),
        make_message(sent, "old-sent", 300, age=30 * DAY),
        make_message(account / ".DeltaChat", "old-dc", 400, age=20 * DAY + 1),
    ]
    kept = [
        make_message(account, "recent", 100, age=19 * DAY),
        make_message(account, "exactly-20-days", 100, age=20 * DAY),
        make_message(sent, "recent-sent", 100, age=DAY, part="new"),
        # Only cur/ and new/ hold messages; Dovecot's own files stay.
        make_message(account, "delivery-in-progress", 100, age=40 * DAY, part="tmp"),
    ]
    index = account / "dovecot.index"
    index.write_bytes(b"i")
    set_age(index, 40 * DAY)
    summary = expire.run_expiry(config, NOW)
    assert [path.exists() for path in old] == [False] * 4
    assert [path.exists() for path in kept] == [True] * 4
    assert index.exists()
    assert (summary.messages, summary.bytes) == (4, 1000)
    assert not (account / "maildirsize").exists()


def test_large_mail_expires_sooner(config: Config) -> None:
    account = make_account(config, "someone12")
    large = 200 * KIB + 1
    gone = make_message(account, "large-old", large, age=8 * DAY)
    kept = [
        make_message(account, "large-recent", large, age=6 * DAY),
        make_message(account, "large-at-7-days", large, age=7 * DAY),
        make_message(account, "exactly-200k", 200 * KIB, age=8 * DAY),
        make_message(account, "small", 1000, age=8 * DAY),
    ]
    summary = expire.run_expiry(config, NOW)
    assert not gone.exists()
    assert all(path.exists() for path in kept)
    assert (summary.messages, summary.bytes) == (1, large)


def test_quota_cache_stays_when_nothing_was_removed(config: Config) -> None:
    account = make_account(config, "someone12")
    make_message(account, "recent", 100, age=DAY)
    assert expire.run_expiry(config, NOW).messages == 0
    assert (account / "maildirsize").exists()


def test_dry_run_removes_nothing_but_reports(config: Config) -> None:
    gone = make_account(config, "inactive1", last_login_days_ago=100)
    account = make_account(config, "someone12")
    message = make_message(account, "old", 123, age=25 * DAY)
    summary = expire.run_expiry(config, NOW, dry_run=True)
    assert (summary.accounts, summary.messages, summary.bytes) == (1, 1, 123)
    assert gone.exists() and message.exists() and (account / "maildirsize").exists()


def test_odd_entries_are_left_alone(config: Config, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = make_message(outside, "precious", 10, age=100 * DAY)
    (config.mailboxes_dir / "not-an-account").mkdir()
    account_without_password = mailbox.directory(config, f"nopasswd1@{DOMAIN}")
    make_message(account_without_password, "old", 10, age=30 * DAY)
    linked = make_account(config, "linked123")
    (linked / ".Evil").mkdir()
    (linked / ".Evil" / "cur").symlink_to(outside / "cur")
    (config.mailboxes_dir / f"symlink1@{DOMAIN}").symlink_to(outside)
    summary = expire.run_expiry(config, NOW)
    assert victim.exists()
    assert not (account_without_password / "cur" / "old").exists()
    assert account_without_password.exists()
    assert (summary.accounts, summary.messages) == (0, 1)


def test_sweep_goes_on_after_an_account_fails(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_account(config, "aaaaaaaaa")
    make_message(first, "old", 10, age=30 * DAY)
    second = make_account(config, "bbbbbbbbb")
    make_message(second, "old", 10, age=30 * DAY)
    real = expire.expire_account

    def failing_first(config: Config, account: Path, *args: object) -> None:
        if account == first:
            raise PermissionError("nope")
        real(config, account, *args)

    monkeypatch.setattr(expire, "expire_account", failing_first)
    summary = expire.run_expiry(config, NOW)
    assert (summary.errors, summary.messages) == (1, 1)
    assert not (second / "cur" / "old").exists()


# --- prune on quota warning -------------------------------------------------------------


def test_prune_removes_oldest_mail_down_to_70_percent(config: Config) -> None:
    account = make_account(config, "someone12")
    # Ten 100-byte messages fill the 1000-byte quota; 70 % means three must go.
    paths = [
        make_message(account / (".Sent" if age % 2 else ""), f"m{age}", 100, age=(age + 2) * DAY)
        for age in range(10)
    ]
    summary = expire.prune_mailbox(config, f"someone12@{DOMAIN}", NOW)
    assert (summary.messages, summary.bytes) == (3, 300)
    assert [path.exists() for path in paths] == [True] * 7 + [False] * 3
    assert not (account / "maildirsize").exists()


def test_prune_never_touches_mail_younger_than_a_day(config: Config) -> None:
    account = make_account(config, "someone12")
    old = [make_message(account, f"old{i}", 100, age=(3 + i) * DAY) for i in range(2)]
    young = [make_message(account, f"young{i}", 100, age=23 * HOUR - i) for i in range(8)]
    summary = expire.prune_mailbox(config, f"someone12@{DOMAIN}", NOW)
    assert summary.messages == 2
    assert not any(path.exists() for path in old)
    assert all(path.exists() for path in young)


def test_prune_below_target_removes_nothing(config: Config) -> None:
    account = make_account(config, "someone12")
    paths = [make_message(account, f"m{i}", 100, age=10 * DAY) for i in range(7)]
    assert expire.prune_mailbox(config, f"someone12@{DOMAIN}", NOW).messages == 0
    assert all(path.exists() for path in paths)
    assert (account / "maildirsize").exists()


@pytest.mark.parametrize("address", ["../../etc@example.org", "someone12@other.org", "x"])
def test_prune_refuses_foreign_addresses(config: Config, address: str) -> None:
    with pytest.raises(ValueError):
        expire.prune_mailbox(config, address, NOW)


def test_prune_of_missing_account(config: Config) -> None:
    with pytest.raises(FileNotFoundError):
        expire.prune_mailbox(config, f"nobody123@{DOMAIN}", NOW)


# --- command line -----------------------------------------------------------------------


@pytest.fixture
def config_file(config: Config, tmp_path: Path) -> Path:
    path = tmp_path / "relay.ini"
    path.write_text(
        f"[relay]\nmail_domain = {DOMAIN}\nmailboxes_dir = {config.mailboxes_dir}\n"
        "max_mailbox_size = 1000\n"
    )
    return path


def test_main_run_prints_a_summary(
    config: Config, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_account(config, "inactive1", last_login_days_ago=200)
    account = make_account(config, "someone12")
    make_message(account, "old", 42, age=25 * DAY)
    assert expire.main(["run", "--config", str(config_file), "--dry-run"], now=NOW) == 0
    assert (
        "would have removed 1 inactive accounts, 1 messages (42 bytes)" in capsys.readouterr().out
    )
    assert (account / "cur" / "old").exists()
    assert expire.main(["run", "--config", str(config_file)], now=NOW) == 0
    assert "removed 1 inactive accounts, 1 messages (42 bytes)" in capsys.readouterr().out
    assert not (account / "cur" / "old").exists()


def test_main_prune(config: Config, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    account = make_account(config, "someone12")
    for i in range(10):
        make_message(account, f"m{i}", 100, age=(2 + i) * DAY)
    address = f"someone12@{DOMAIN}"
    assert expire.main(["prune", address, "--config", str(config_file)], now=NOW) == 0
    assert capsys.readouterr().out.strip() == f"{address}: removed 3 messages (300 bytes)"
    assert expire.main(["prune", "../x@example.org", "--config", str(config_file)], now=NOW) == 1


def test_entry_point_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatrelay.expire", "prune", "--help"],
        env={**os.environ, "PYTHONPATH": str(FILES_DIR)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "address" in result.stdout and "--config" in result.stdout
