"""Expiry of mail and accounts: a daily sweep, and pruning of a mailbox nearing its quota.

`run` (daily timer) removes accounts whose last login is older than
delete_inactive_users_after days, mail older than delete_mails_after days and large
mail older than delete_large_after days. `prune <address>` (Dovecot's quota warning)
removes the oldest mail until the mailbox is back at 70 % of max_mailbox_size.
Ages are file mtimes; an account's last login is its password file's mtime.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import mailbox
from .config import DEFAULT_PATH, Config
from .config import load as load_config

log = logging.getLogger("chatrelay.expire")

DAY = 86400
# "200k" in find(1)'s sense, as the upstream relay counts it.
LARGE_MESSAGE_SIZE = 200 * 1024
PRUNE_TARGET = 0.70
PRUNE_MIN_AGE = DAY
# Dovecot's cached quota usage; without it Dovecot recounts the mailbox.
QUOTA_CACHE_FILE = "maildirsize"


@dataclass
class Summary:
    accounts: int = 0
    messages: int = 0
    bytes: int = 0
    errors: int = 0

    def __str__(self) -> str:
        return (
            f"removed {self.accounts} inactive accounts, "
            f"{self.messages} messages ({self.bytes} bytes); {self.errors} errors"
        )


@dataclass(frozen=True)
class Message:
    path: Path
    size: int
    mtime: float


def maildir_folders(account: Path) -> list[Path]:
    """The account's INBOX (the account dir itself) and its Maildir++ subfolders."""
    folders = [account]
    with os.scandir(account) as entries:
        folders.extend(
            Path(entry.path)
            for entry in entries
            if entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
        )
    return folders


def messages(account: Path) -> Iterator[Message]:
    """Every message file in cur/ and new/ of every folder of the account."""
    for folder in maildir_folders(account):
        for part in ("cur", "new"):
            directory = folder / part
            if directory.is_symlink():
                # Only Dovecot writes here; a link would lead deletion elsewhere.
                log.warning("skipping symbolic link %s", directory)
                continue
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    # Dovecot moved it (new/ to cur/, or a flag change) meanwhile.
                    continue
                yield Message(Path(entry.path), stat.st_size, stat.st_mtime)


def _remove(message: Message, summary: Summary, dry_run: bool) -> None:
    if not dry_run:
        try:
            message.path.unlink()
        except FileNotFoundError:
            return
    summary.messages += 1
    summary.bytes += message.size


def _forget_quota_usage(account: Path, dry_run: bool) -> None:
    if not dry_run:
        (account / QUOTA_CACHE_FILE).unlink(missing_ok=True)


def expire_account(
    config: Config, account: Path, now: float, summary: Summary, dry_run: bool
) -> None:
    """Apply the daily rules to one account directory."""
    last_login = mailbox.last_login(account)
    if last_login is None and (account / mailbox.INVITED_MARKER).exists():
        # Handed out by /new in invite mode and not logged in to yet: nothing to keep
        # once the invitation has lapsed.
        if not mailbox.is_invited(config, account.name, now) and not dry_run:
            shutil.rmtree(account)
        return
    if last_login is None:
        log.warning("%s has no password file; expiring its mail only", account.name)
    if last_login is not None and now - last_login > config.delete_inactive_users_after * DAY:
        if not dry_run:
            shutil.rmtree(account)
        summary.accounts += 1
        return
    before = summary.messages
    for message in messages(account):
        age = now - message.mtime
        too_old = age > config.delete_mails_after * DAY
        too_big = message.size > LARGE_MESSAGE_SIZE and age > config.delete_large_after * DAY
        if too_old or too_big:
            _remove(message, summary, dry_run)
    if summary.messages > before:
        _forget_quota_usage(account, dry_run)


def run_expiry(config: Config, now: float, dry_run: bool = False) -> Summary:
    """The daily sweep over all accounts."""
    summary = Summary()
    for account in mailbox.directories(config):
        try:
            expire_account(config, account, now, summary, dry_run)
        except OSError as exc:
            # One broken account must not stop the sweep for all others.
            log.error("cannot expire %s: %s", account.name, exc)
            summary.errors += 1
    return summary


def prune_mailbox(config: Config, address: str, now: float, dry_run: bool = False) -> Summary:
    """Remove the oldest mail until the mailbox is at 70 % of its quota."""
    account = mailbox.directory(config, address)
    if not account.is_dir():
        raise FileNotFoundError(f"no account directory {account}")
    summary = Summary()
    oldest_first = sorted(messages(account), key=lambda message: message.mtime)
    total = sum(message.size for message in oldest_first)
    target = int(config.max_mailbox_size * PRUNE_TARGET)
    for message in oldest_first:
        # Sorted oldest first: once one is too young to delete, all the rest are too.
        if total <= target or now - message.mtime < PRUNE_MIN_AGE:
            break
        _remove(message, summary, dry_run)
        total -= message.size
    if summary.messages:
        _forget_quota_usage(account, dry_run)
    return summary


def main(argv: list[str] | None = None, now: float | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m chatrelay.expire", description="Expire old mail and inactive accounts."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="daily sweep over all accounts")
    run.add_argument("--dry-run", action="store_true", help="report, remove nothing")
    prune = commands.add_parser("prune", help="bring one mailbox back to 70%% of its quota")
    prune.add_argument("address")
    for command in (run, prune):
        command.add_argument("--config", type=Path, default=DEFAULT_PATH, help="relay.ini path")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    config = load_config(args.config)
    now = time.time() if now is None else now
    if args.command == "run":
        summary = run_expiry(config, now, dry_run=args.dry_run)
        print(("would have " if args.dry_run else "") + str(summary))
        return 1 if summary.errors else 0
    try:
        summary = prune_mailbox(config, args.address, now)
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    print(f"{args.address}: removed {summary.messages} messages ({summary.bytes} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
