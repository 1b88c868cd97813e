"""Target of Dovecot's last_login plugin: records the day of each account's last login.

The day lives in the mtime of the account's password file, truncated to the start of
the UTC day on purpose: the relay keeps no exact login times. Expiry reads it back.
"""

from __future__ import annotations

import logging
import sys
import time

from . import mailbox
from .config import Config
from .dictproto import Change, DictServer, run_service, split_namespace

log = logging.getLogger("chatrelay.lastlogin")

DAY = 86400
KEY_PREFIX = "last-login/"
# A unix time in seconds has 10 digits until the year 2286; anything past this bound
# came from a last_login_precision of ms, us or ns.
_MAX_SECONDS = 10**11


def start_of_day(timestamp: int) -> int:
    """The UTC midnight at or before timestamp."""
    return timestamp - timestamp % DAY


def parse_timestamp(value: str, now: float) -> int:
    try:
        timestamp = int(value.strip())
    except ValueError:
        log.warning("last-login value %r is not a unix time; using the current time", value)
        return int(now)
    while timestamp > _MAX_SECONDS:
        timestamp //= 1000
    return timestamp


class LastLoginServer(DictServer):
    """Accepts last-login transactions and moves the password file's mtime to that day."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def commit(self, changes: list[Change], user: str) -> bool:
        ok = True
        for key, value in changes:
            _namespace, rest = split_namespace(key)
            if not rest.startswith(KEY_PREFIX) or value is None:
                log.warning("ignoring change of unexpected key %r", key)
                continue
            address = rest[len(KEY_PREFIX) :] or user
            ok = self.record(address, parse_timestamp(value, time.time())) and ok
        return ok

    def record(self, address: str, timestamp: int) -> bool:
        """Set the account's last-login day; False only if the file system refused."""
        if not mailbox.is_address(self.config, address):
            log.debug("ignoring last login of non-account %r", address)
            return True
        try:
            mailbox.record_login_day(self.config, address, start_of_day(timestamp))
        except OSError as exc:
            log.error("cannot record last login of %s: %s", address, exc)
            return False
        return True


def main(argv: list[str] | None = None) -> int:
    return run_service(
        LastLoginServer,
        "python3 -m chatrelay.lastlogin",
        "Dovecot last_login dict that keeps the day of each account's last login.",
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
