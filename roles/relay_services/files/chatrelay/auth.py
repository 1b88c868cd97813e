"""Dovecot passdb and userdb over the dict protocol, creating an account on its first login.

Dovecot's dict passdb looks up `shared/passdb/<password>"<user>` and its userdb
`shared/userdb/<user>` (both %E-escaped). Answers are JSON; Dovecot checks the cleartext
password against the returned hash itself, so a wrong password simply fails there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import mailbox, metrics
from .config import Config
from .dictproto import DictServer, run_service, split_namespace

with warnings.catch_warnings():
    # passlib 1.7.4 imports the crypt module, which Python 3.11 flags as deprecated.
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib.hash import sha512_crypt

log = logging.getLogger("chatrelay.auth")

SCHEME = "{SHA512-CRYPT}"
# crypt(3)'s implicit default: the hash carries no rounds= field and Dovecot verifies
# it fast on every login (passlib's own default would cost ~100x more per login).
HASH_ROUNDS = 5000

_PERCENT_E_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def unescape_percent_e(text: str) -> str:
    r"""Undo Dovecot's %E variable escaping (a backslash before ", ' and \)."""
    return _PERCENT_E_ESCAPE.sub(r"\1", text)


def split_passdb_key(text: str) -> tuple[str, str] | None:
    """Split '<password>"<user>' at the first unescaped quote into unescaped parts."""
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
        elif char == '"':
            return unescape_percent_e(text[:index]), unescape_percent_e(text[index + 1 :])
        else:
            index += 1
    return None


def read_load_1m() -> float:
    return os.getloadavg()[0]


def read_available_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemAvailable in bytes."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no MemAvailable line in {meminfo}")


def read_free_disk(path: Path) -> int:
    """Bytes an unprivileged user may still write on path's file system."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


@dataclass(frozen=True)
class SystemProbe:
    """Where the system limits are read from; tests pass fakes."""

    load_1m: Callable[[], float] = read_load_1m
    available_memory: Callable[[], int] = read_available_memory
    free_disk: Callable[[Path], int] = read_free_disk


def system_limit_reached(config: Config, probe: SystemProbe) -> str | None:
    """Why the system is too busy or full for a new account, or None."""
    try:
        load = probe.load_1m()
        if load > config.max_load_1m:
            return f"1-minute load {load:.2f} is above {config.max_load_1m}"
        memory = probe.available_memory()
        if memory < config.min_available_memory:
            return f"available memory {memory} bytes is below {config.min_available_memory}"
        disk = probe.free_disk(config.mailboxes_dir)
        if disk < config.min_free_disk_space:
            return f"free disk space {disk} bytes is below {config.min_free_disk_space}"
    except (OSError, ValueError) as exc:
        # Unknown state counts as overloaded: a full disk must not take new accounts.
        return f"system limits cannot be read: {exc}"
    return None


class Refusal(NamedTuple):
    """Why an account may not be created: rule (as chatmail_account_refusals_total
    counts it) and the reason for the log."""

    rule: str
    reason: str


class AuthServer(DictServer):
    """Answers Dovecot's passdb and userdb lookups and creates accounts on first login."""

    def __init__(self, config: Config, probe: SystemProbe | None = None) -> None:
        self.config = config
        self.probe = probe or SystemProbe()

    def lookup(self, key: str, user: str) -> str | None:
        _namespace, rest = split_namespace(key)
        kind, _slash, arg = rest.partition("/")
        if kind == "passdb":
            parts = split_passdb_key(arg)
            # Without a quote the key holds only the password; the request names the user.
            password, address = parts if parts else (unescape_percent_e(arg), user)
            return self.passdb(address, password)
        if kind == "userdb":
            return self.userdb(unescape_percent_e(arg) or user)
        # Never log the key itself: passdb keys carry cleartext passwords.
        log.warning("lookup of unexpected key kind %r", kind)
        return None

    def iterate(self, path: str, user: str) -> Iterator[tuple[str, str]]:
        _namespace, rest = split_namespace(path)
        if rest.rstrip("/") != "userdb":
            return
        prefix = path if path.endswith("/") else path + "/"
        for address in mailbox.addresses(self.config):
            yield prefix + address, ""

    def userdb(self, address: str) -> str | None:
        if not mailbox.is_address(self.config, address):
            return None
        if mailbox.password_hash(self.config, address) is None:
            return None
        return json.dumps(self.userdb_fields(address))

    def passdb(self, address: str, password: str) -> str | None:
        if not mailbox.is_address(self.config, address):
            log.debug("refused login of malformed address %r", address)
            return None
        stored = mailbox.password_hash(self.config, address)
        if stored is None:
            refusal = self.refuse_new_account(address, password) or self.refuse_uninvited(address)
            if refusal is not None:
                log.info("not creating account %s: %s", address, refusal.reason)
                metrics.ACCOUNT_REFUSALS.labels(refusal.rule).inc()
                return None
            stored = self.create_account(address, password)
        return json.dumps({**self.userdb_fields(address), "password": stored})

    def userdb_fields(self, address: str) -> dict[str, str | int]:
        return {
            "home": str(mailbox.directory(self.config, address)),
            "uid": self.config.vmail_uid,
            "gid": self.config.vmail_gid,
        }

    def refuse_new_account(self, address: str, password: str) -> Refusal | None:
        """Why address may not be created with password now, or None."""
        config = self.config
        localpart = address.rpartition("@")[0]
        if not config.username_min_length <= len(localpart) <= config.username_max_length:
            return Refusal(
                "invalid",
                f"local part must have {config.username_min_length} to "
                f"{config.username_max_length} characters",
            )
        if len(password) < config.password_min_length:
            return Refusal(
                "invalid", f"password shorter than {config.password_min_length} characters"
            )
        if "\0" in password:
            return Refusal("invalid", "password contains NUL")
        try:
            password.encode("utf-8")
        except UnicodeEncodeError:
            return Refusal("invalid", "password is not valid UTF-8")
        if config.registration == "closed":
            return Refusal("closed", "registration is closed")
        if config.nocreate_file.exists():
            return Refusal(
                "kill_switch", f"account creation switched off by {config.nocreate_file}"
            )
        limit = system_limit_reached(config, self.probe)
        if limit is not None:
            log.warning("new accounts refused: %s", limit)
            return Refusal("system_limits", limit)
        return None

    def refuse_uninvited(self, address: str) -> Refusal | None:
        """In invite mode, why a first login may not create address, or None."""
        if self.config.registration != "invite":
            return None
        if mailbox.is_invited(self.config, address, time.time()):
            return None
        return Refusal("not_invited", "invite mode, and /new did not hand out this address")

    def create_account(self, address: str, password: str) -> str:
        """Create the account unless a concurrent login did; return the stored hash."""
        hashed = SCHEME + sha512_crypt.using(rounds=HASH_ROUNDS).hash(password)
        stored, created = mailbox.create(self.config, address, hashed)
        if created:
            log.info("created account %s", address)
            metrics.ACCOUNTS_CREATED.inc()
        return stored


def main(argv: list[str] | None = None) -> int:
    return run_service(
        AuthServer,
        "python3 -m chatrelay.auth",
        "Dovecot dict passdb/userdb that creates accounts on first login.",
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
