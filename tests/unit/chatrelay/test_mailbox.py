"""The account store: what is an address, where its account lives, what it holds."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from chatrelay import mailbox
from chatrelay.config import Config

DOMAIN = "example.org"
ADDRESS = f"abcdefghi@{DOMAIN}"
HASH = "{SHA512-CRYPT}$6$salt$hash"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    mailboxes = tmp_path / DOMAIN
    mailboxes.mkdir()
    return Config(mail_domain=DOMAIN, mailboxes_dir=mailboxes)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (ADDRESS, True),
        (f"a.b_c-9@{DOMAIN}", True),
        (f"Abcdefghi@{DOMAIN}", False),
        (f"abc+def@{DOMAIN}", False),
        (f"../etc@{DOMAIN}", False),
        (f"abc/def@{DOMAIN}", False),
        (f"@{DOMAIN}", False),
        ("abcdefghi@other.org", False),
        (f"abcdefghi@{DOMAIN}.", False),
        ("abcdefghi", False),
    ],
)
def test_only_plain_local_parts_of_our_domain_are_addresses(config, address, expected):
    assert mailbox.is_address(config, address) is expected


def test_a_path_only_for_an_address(config):
    assert mailbox.directory(config, ADDRESS) == config.mailboxes_dir / ADDRESS
    with pytest.raises(ValueError, match=r"not an address of example\.org: '\.\./x@example\.org'"):
        mailbox.directory(config, f"../x@{DOMAIN}")


def test_an_account_exists_once_its_password_file_does(config):
    assert mailbox.password_hash(config, ADDRESS) is None
    assert mailbox.create(config, ADDRESS, HASH) == (HASH, True)
    home = mailbox.directory(config, ADDRESS)
    assert sorted(os.listdir(home)) == [mailbox.E2EE_MARKER, mailbox.PASSWORD_FILE]
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / mailbox.PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
    assert mailbox.password_hash(config, ADDRESS) == HASH
    assert mailbox.enforces_e2ee(config, ADDRESS)


def test_concurrent_creation_keeps_the_first_hash(config):
    results = []
    threads = [
        threading.Thread(
            target=lambda n=n: results.append(mailbox.create(config, ADDRESS, f"h{n}"))
        )
        for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = mailbox.password_hash(config, ADDRESS)
    assert sorted(created for _unused, created in results) == [False] * 7 + [True]
    assert {hashed for hashed, _unused in results} == {stored}


def test_an_empty_password_file_is_an_error_not_a_missing_account(config):
    home = mailbox.directory(config, ADDRESS)
    home.mkdir()
    (home / mailbox.PASSWORD_FILE).write_text("\n")
    with pytest.raises(ValueError, match="empty password file"):
        mailbox.password_hash(config, ADDRESS)


def test_listing_counts_accounts_with_a_password_only(config):
    mailbox.create(config, ADDRESS, HASH)
    mailbox.create(config, f"zzzzzzzzz@{DOMAIN}", HASH)
    (config.mailboxes_dir / f"leftover1@{DOMAIN}").mkdir()
    (config.mailboxes_dir / "not-an-account").mkdir()
    (config.mailboxes_dir / f"file@{DOMAIN}").write_text("")
    assert mailbox.addresses(config) == [ADDRESS, f"zzzzzzzzz@{DOMAIN}"]
    assert [p.name for p in mailbox.directories(config)] == [
        ADDRESS,
        f"leftover1@{DOMAIN}",
        f"zzzzzzzzz@{DOMAIN}",
    ]


def test_no_listing_before_the_first_account(tmp_path):
    config = Config(mail_domain=DOMAIN, mailboxes_dir=tmp_path / "absent")
    assert mailbox.addresses(config) == []


def test_the_last_login_day_is_the_password_files_mtime(config):
    mailbox.create(config, ADDRESS, HASH)
    home = mailbox.directory(config, ADDRESS)
    mailbox.record_login_day(config, ADDRESS, 1_700_000_000)
    assert mailbox.last_login(home) == 1_700_000_000
    # No account, nothing recorded and nothing created.
    mailbox.record_login_day(config, f"nobody123@{DOMAIN}", 1_700_000_000)
    assert not mailbox.directory(config, f"nobody123@{DOMAIN}").exists()
    assert mailbox.last_login(config.mailboxes_dir / f"nobody123@{DOMAIN}") is None


def test_non_accounts_never_enforce_encryption(config):
    assert not mailbox.enforces_e2ee(config, ADDRESS)
    assert not mailbox.enforces_e2ee(config, f"../{ADDRESS}")
    home = mailbox.directory(config, ADDRESS)
    home.mkdir()
    (home / mailbox.E2EE_MARKER).touch()
    assert mailbox.enforces_e2ee(config, ADDRESS)


def test_device_tokens_live_in_the_account(config):
    assert mailbox.token_file(config, ADDRESS) == config.mailboxes_dir / ADDRESS / "devicetokens"
