"""IMAP METADATA (RFC 5464) commands, spoken as Delta Chat speaks them."""

from __future__ import annotations

import imaplib
import re

imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_metadata(imap: imaplib.IMAP4, mailbox: str, entry: str, value: str | None) -> None:
    """SETMETADATA <mailbox> (<entry> <value>); None removes the entry (NIL)."""
    typ, data = imap._simple_command(
        "SETMETADATA", quoted(mailbox), f"({entry} {'NIL' if value is None else quoted(value)})"
    )
    if typ != "OK":
        raise imaplib.IMAP4.error(f"SETMETADATA {mailbox} {entry} failed: {data}")


def get_metadata(imap: imaplib.IMAP4, mailbox: str, entry: str) -> str | None:
    """GETMETADATA <mailbox> <entry>: the value, or None when there is none (NIL)."""
    typ, data = imap._simple_command("GETMETADATA", quoted(mailbox), entry)
    if typ != "OK":
        raise imaplib.IMAP4.error(f"GETMETADATA {mailbox} {entry} failed: {data}")
    _unused, untagged = imap._untagged_response(typ, data, "METADATA")
    for item in untagged:
        if isinstance(item, tuple):
            # A literal: ('"INBOX" (/private/devicetoken {5}', b'value'), then ')'.
            return item[1].decode()
        if item is None:
            continue
        match = re.search(rb'\(\S+ (?:"((?:[^"\\]|\\.)*)"|NIL)\)$', item)
        if match:
            value = match.group(1)
            return None if value is None else re.sub(rb"\\(.)", rb"\1", value).decode()
    return None
