"""The controller's secret store without Ansible."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import stat
import string
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_collections.chatmail.relay.plugins.plugin_utils import secret_store
from ansible_collections.chatmail.relay.plugins.plugin_utils.secret_store import (
    SecretStoreError,
    alphabet,
    check_length,
    check_name,
    generate,
    loosely_readable,
    read_or_create,
    secret,
    sha512_crypt,
)
from passlib.hash import sha512_crypt as passlib_sha512_crypt

LETTERS_DIGITS = string.ascii_letters + string.digits


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("name", ["turn", "relay-1.example.org", "dkim_2024", "[::1]", "ü"])
def test_usable_names(name):
    assert check_name(name, "name") == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", r"^host must be a non-empty string, got ''$"),
        (None, r"^host must be a non-empty string, got None$"),
        (3, r"^host must be a non-empty string, got 3$"),
        (".", r"^host '\.' may not begin with '\.'$"),
        ("..", r"^host '\.\.' may not begin with '\.'$"),
        ("../etc", r"^host '\.\./etc' may not begin with '\.'$"),
        (".lock", r"^host '\.lock' may not begin with '\.'$"),
        ("a/b", r"^host 'a/b' may not contain '/'"),
        ("a\\b", r"^host 'a\\\\b' may not contain '/'"),
        ("a\nb", r"^host 'a\\nb' may not contain '/', '\\' or control characters$"),
        ("x" * 201, r"^host 'x{201}' is longer than 200 bytes$"),
    ],
)
def test_unusable_names(name, message):
    with pytest.raises(SecretStoreError, match=message):
        check_name(name, "host")


@pytest.mark.parametrize("length", [1, 32, 1024])
def test_lengths(length):
    assert check_length(length) == length


@pytest.mark.parametrize("length", [0, -1, 1025, True, "32", 3.0])
def test_bad_lengths(length):
    with pytest.raises(SecretStoreError, match=r"^length must be an integer from 1 to 1024, got"):
        check_length(length)


@pytest.mark.parametrize(
    ("spec", "chars"),
    [
        ("ascii_letters,digits", LETTERS_DIGITS),
        ("digits", string.digits),
        ("ascii_letters,digits,punctuation", LETTERS_DIGITS + string.punctuation),
        ("hexdigits,digits", string.hexdigits),
        ("abc", "abc"),
        ("aabbc", "abc"),
        ("digits,xyz", "digts,xyz"),  # not all parts are set names: taken literally
    ],
)
def test_alphabet(spec, chars):
    assert alphabet(spec) == chars


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", r"^alphabet must be a non-empty string, got ''$"),
        (["digits"], r"^alphabet must be a non-empty string, got \['digits'\]$"),
        ("aaaa", r"^alphabet 'aaaa' needs at least two different characters$"),
        ("ab c", r"^alphabet 'ab c' contains whitespace or control characters$"),
        ("ab\x00", r"^alphabet 'ab\\x00' contains whitespace or control characters$"),
    ],
)
def test_bad_alphabet(spec, message):
    with pytest.raises(SecretStoreError, match=message):
        alphabet(spec)


def test_generate():
    values = {generate(32, LETTERS_DIGITS) for _unused in range(20)}
    assert len(values) == 20
    assert all(len(v) == 32 and set(v) <= set(LETTERS_DIGITS) for v in values)
    assert set(generate(200, "01")) == {"0", "1"}


def test_secret_is_created_once_with_private_modes(tmp_path):
    store = tmp_path / "inventory" / "secrets"
    value = secret(store, "relay1", "turn", 32, LETTERS_DIGITS)
    assert len(value) == 32
    path = store / "relay1" / "turn"
    assert path.read_text() == value + "\n"
    assert mode(path) == 0o600
    assert mode(store) == 0o700
    assert mode(store / "relay1") == 0o700
    assert not loosely_readable(store, "relay1", "turn")
    assert secret(store, "relay1", "turn", 8, "01") == value
    assert secret(store, "relay2", "turn", 32, LETTERS_DIGITS) != value
    assert sorted(p.name for p in (store / "relay1").iterdir()) == [".lock", "turn"]


def test_a_hand_made_file_is_used_as_it_is(tmp_path):
    (tmp_path / "relay1").mkdir()
    path = tmp_path / "relay1" / "smtp"
    path.write_text("given by the provider\n")
    path.chmod(0o644)
    assert secret(tmp_path, "relay1", "smtp", 32, LETTERS_DIGITS) == "given by the provider"
    assert loosely_readable(tmp_path, "relay1", "smtp")
    assert path.read_text() == "given by the provider\n"


def test_an_empty_file_is_an_error(tmp_path):
    (tmp_path / "relay1").mkdir()
    (tmp_path / "relay1" / "turn").write_text("\n")
    with pytest.raises(SecretStoreError, match=r"relay1/turn is empty; remove it"):
        secret(tmp_path, "relay1", "turn", 32, LETTERS_DIGITS)


def test_an_unreadable_file_is_an_error(tmp_path):
    (tmp_path / "relay1" / "turn").mkdir(parents=True)
    with pytest.raises(SecretStoreError, match=r"^cannot read .*relay1/turn: "):
        secret(tmp_path, "relay1", "turn", 32, LETTERS_DIGITS)
    (tmp_path / "relay1" / "binary").write_bytes(b"\xff\xfe")
    with pytest.raises(SecretStoreError, match=r"^cannot read .*relay1/binary: "):
        secret(tmp_path, "relay1", "binary", 32, LETTERS_DIGITS)


def test_a_store_that_cannot_be_made_is_an_error(tmp_path):
    (tmp_path / "secrets").symlink_to(tmp_path / "unmounted")
    with pytest.raises(SecretStoreError, match=r"^cannot create the directory .*secrets: "):
        secret(tmp_path / "secrets", "relay1", "turn", 32, LETTERS_DIGITS)


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(secret_store.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        secret(tmp_path, "relay1", "turn", 32, LETTERS_DIGITS)
    assert sorted(p.name for p in (tmp_path / "relay1").iterdir()) == [".lock"]


def test_sha512_crypt_is_stable_and_verifies(tmp_path):
    value = secret(tmp_path, "relay1", "metrics", 32, LETTERS_DIGITS)
    hashed = sha512_crypt(tmp_path, "relay1", "metrics", value)
    assert hashed.startswith("{SHA512-CRYPT}$6$")
    crypt = hashed.removeprefix("{SHA512-CRYPT}")
    salt = crypt.split("$")[2]
    assert len(salt) == 16
    assert passlib_sha512_crypt.verify(value, crypt)
    assert not passlib_sha512_crypt.verify(value + "x", crypt)
    assert sha512_crypt(tmp_path, "relay1", "metrics", value) == hashed
    salt_file = tmp_path / "relay1" / ".metrics.sha512_crypt.salt"
    assert salt_file.read_text() == salt + "\n"
    assert mode(salt_file) == 0o600
    assert sha512_crypt(tmp_path, "relay2", "metrics", value) != hashed


def test_sha512_crypt_without_passlib_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "passlib.hash", None)
    with pytest.raises(SecretStoreError, match=r"^hash=sha512_crypt needs .* passlib"):
        sha512_crypt(tmp_path, "relay1", "metrics", "secret")


def test_a_broken_salt_is_an_error(tmp_path):
    (tmp_path / "relay1").mkdir()
    (tmp_path / "relay1" / ".metrics.sha512_crypt.salt").write_text("not*a*salt\n")
    with pytest.raises(SecretStoreError, match=r"the salt in .*\.metrics\.sha512_crypt\.salt is"):
        sha512_crypt(tmp_path, "relay1", "metrics", "secret")


def _create_counting(store: str, barrier: multiprocessing.synchronize.Barrier, log: str) -> None:
    def make() -> str:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return generate(32, LETTERS_DIGITS)

    barrier.wait()
    print(read_or_create(Path(store), "relay1", "turn", make))


def test_parallel_creation_calls_the_generator_once(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(8)
    log = tmp_path / "calls"
    workers = [
        context.Process(target=_create_counting, args=(str(tmp_path), barrier, str(log)))
        for _unused in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(log.read_text().splitlines()) == 1
    assert len((tmp_path / "relay1" / "turn").read_text().strip()) == 32


def test_a_value_written_while_waiting_for_the_lock_wins(tmp_path, monkeypatch):
    locked = secret_store._locked

    @contextlib.contextmanager
    def slow_lock(path: Path) -> Iterator[None]:
        # Another fork creates the secret between this one's first read and its lock.
        (path.parent / "turn").write_text("first writer\n")
        with locked(path):
            yield

    monkeypatch.setattr(secret_store, "_locked", slow_lock)

    def make() -> str:
        raise AssertionError("the generator must not run")

    assert read_or_create(tmp_path, "relay1", "turn", make) == "first writer"
