# SPDX-License-Identifier: MIT
"""Secrets kept on the controller: made once per host and name, the same value ever after.

Layout of a store directory::

    <store>/<host>/<name>                     the secret (mode 0600, one line)
    <store>/<host>/.<name>.sha512_crypt.salt  the salt of its SHA512-CRYPT hash
    <store>/<host>/.lock                      serialises creation across processes

Directories are made with mode 0700. Names may not begin with a dot, so the files the
store keeps for itself never collide with a secret. Creation takes an exclusive
``fcntl`` lock and writes through a temporary file renamed into place, so parallel
Ansible forks agree on one value: the first writer wins and everyone reads its value.
Pure Python without Ansible; errors raise :class:`SecretStoreError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import string
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

DEFAULT_LENGTH = 32
MAX_LENGTH = 1024
DEFAULT_ALPHABET = "ascii_letters,digits"
NAMED_SETS = {
    name: getattr(string, name)
    for name in (
        "ascii_letters",
        "ascii_lowercase",
        "ascii_uppercase",
        "digits",
        "hexdigits",
        "octdigits",
        "punctuation",
    )
}
HASHES = ("sha512_crypt",)
# passlib's sha512_crypt takes at most 16 salt characters from this alphabet.
SALT_ALPHABET = "./" + string.digits + string.ascii_uppercase + string.ascii_lowercase
SALT_LENGTH = 16
# crypt(3)'s default rounds, as `doveadm pw -s SHA512-CRYPT` writes them. More rounds only
# slow down guessing weak passwords; generated secrets are far too long to guess, and
# Dovecot pays the rounds on every login.
SHA512_CRYPT_ROUNDS = 5000
LOCK_NAME = ".lock"


class SecretStoreError(ValueError):
    """An option or a stored file is unusable; the message names which."""


def check_name(value: Any, option: str) -> str:
    """Return ``value`` if it is usable as one path component, else raise."""
    if not isinstance(value, str) or not value:
        raise SecretStoreError(f"{option} must be a non-empty string, got {value!r}")
    if value.startswith("."):
        raise SecretStoreError(f"{option} {value!r} may not begin with '.'")
    if "/" in value or "\\" in value or not value.isprintable():
        raise SecretStoreError(
            f"{option} {value!r} may not contain '/', '\\' or control characters"
        )
    if len(value.encode()) > 200:
        raise SecretStoreError(f"{option} {value!r} is longer than 200 bytes")
    return value


def check_length(value: Any) -> int:
    """Return the secret length ``value`` as an int from 1 to MAX_LENGTH, else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LENGTH:
        raise SecretStoreError(f"length must be an integer from 1 to {MAX_LENGTH}, got {value!r}")
    return value


def alphabet(spec: Any) -> str:
    """Return the characters a secret is drawn from.

    ``spec`` is either a comma-separated list of names of Python's ``string`` constants
    (``ascii_letters,digits,punctuation``) or, if any part is not such a name, the literal
    characters to use.
    """
    if not isinstance(spec, str) or not spec:
        raise SecretStoreError(f"alphabet must be a non-empty string, got {spec!r}")
    parts = spec.split(",")
    chars = "".join(NAMED_SETS[p] for p in parts) if all(p in NAMED_SETS for p in parts) else spec
    unique = "".join(dict.fromkeys(chars))
    if any(c.isspace() or not c.isprintable() for c in unique):
        raise SecretStoreError(f"alphabet {spec!r} contains whitespace or control characters")
    if len(unique) < 2:
        raise SecretStoreError(f"alphabet {spec!r} needs at least two different characters")
    return unique


def generate(length: int, chars: str) -> str:
    """Return ``length`` characters drawn uniformly from ``chars`` by the system CSPRNG."""
    return "".join(secrets.choice(chars) for _position in range(length))


def secret(store: Path, host: str, name: str, length: int, chars: str) -> str:
    """Return the stored secret ``name`` of ``host``, creating it on first use."""
    return read_or_create(store, host, name, lambda: generate(length, chars))


def sha512_crypt(store: Path, host: str, name: str, value: str) -> str:
    """Return ``{SHA512-CRYPT}$6$...`` of ``value`` with a salt stored beside the secret.

    The salt is kept, so the same secret gives the same string on every run and the
    task that writes it reports no change.
    """
    try:
        from passlib.hash import sha512_crypt as scheme  # only this option needs passlib
    except ImportError as exc:
        raise SecretStoreError(
            "hash=sha512_crypt needs the Python library passlib on the controller"
        ) from exc

    salt_name = f".{name}.sha512_crypt.salt"
    salt = read_or_create(store, host, salt_name, lambda: generate(SALT_LENGTH, SALT_ALPHABET))
    try:
        digest = scheme.using(salt=salt, rounds=SHA512_CRYPT_ROUNDS).hash(value)
    except ValueError as exc:
        salt_path = store / host / salt_name
        raise SecretStoreError(f"the salt in {salt_path} is unusable: {exc}") from exc
    return "{SHA512-CRYPT}" + digest


def read_or_create(store: Path, host: str, name: str, make: Callable[[], str]) -> str:
    """Return the content of ``<store>/<host>/<name>``, writing ``make()`` there first if
    the file does not exist yet."""
    directory = store / host
    path = directory / name
    value = _read(path)
    if value is not None:
        return value
    _make_dir(store)
    _make_dir(directory)
    with _locked(directory / LOCK_NAME):
        # Another process may have written it while this one waited for the lock.
        value = _read(path)
        if value is None:
            value = make()
            _write_atomic(path, value)
    return value


def loosely_readable(store: Path, host: str, name: str) -> bool:
    """Whether the stored file is open to group or others (e.g. made by hand)."""
    return bool((store / host / name).stat().st_mode & 0o077)


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretStoreError(f"cannot read {path}: {exc}") from exc
    # A hand-made file usually ends with a newline that is not part of the secret.
    value = text.rstrip("\r\n")
    if not value:
        raise SecretStoreError(f"{path} is empty; remove it to generate a new secret")
    return value


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SecretStoreError(f"cannot create the directory {path}: {exc}") from exc


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_atomic(path: Path, value: str) -> None:
    # mkstemp creates the file with mode 0600 whatever the umask.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
