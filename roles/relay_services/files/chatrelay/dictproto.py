"""Server side of Dovecot 2.3's dict-proxy protocol, shared by the dict-backed services.

Dovecot's `proxy:` dict client talks one request per line over a unix socket; fields are
separated by TAB and tab-escaped. Subclasses answer `lookup`, `iterate` and `commit`;
this module does the parsing, the per-connection transactions and the replies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .config import DEFAULT_PATH, Config
from .config import load as load_config
from .systemd import unix_listener

log = logging.getLogger(__name__)

# Dovecot caps client lines at 64 KiB; leave headroom but never buffer without limit.
MAX_LINE_LENGTH = 1024 * 1024

ITERATE_FLAG_NO_VALUE = 0x08

_ESCAPE = str.maketrans(
    {"\x01": "\x011", "\t": "\x01t", "\n": "\x01n", "\r": "\x01r", "\0": "\x010"}
)
_UNESCAPE = {"0": "\0", "1": "\x01", "t": "\t", "n": "\n", "r": "\r"}
_ESCAPED = re.compile("\x01(.)", re.DOTALL)

Change = tuple[str, str | None]

# Requests Dovecot sends without waiting for an answer.
NO_REPLY_COMMANDS = "HBSUATR"


def tab_escape(text: str) -> str:
    """Escape a field the way Dovecot's str_tabescape() does."""
    return text.translate(_ESCAPE)


def tab_unescape(text: str) -> str:
    """Undo tab escaping; an unknown escape keeps the escaped character, as Dovecot does."""
    if "\x01" not in text:
        return text
    return _ESCAPED.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(1)), text)


def split_namespace(key: str) -> tuple[str, str]:
    """Split 'shared/foo' into ('shared', 'foo'); keys without a namespace give ('', key)."""
    for namespace in ("shared", "priv"):
        if key.startswith(namespace + "/"):
            return namespace, key[len(namespace) + 1 :]
    return "", key


@dataclass
class Transaction:
    user: str
    changes: list[Change] = field(default_factory=list)
    error: str | None = None


class DictSession:
    """One client connection: its hello, its open transactions, and the replies it gets.

    Dovecot pipelines requests and matches replies to requests strictly by order, so a
    request it sends without waiting for an answer (hello and everything inside a
    transaction except the commit) must never get a reply, not even when it is broken:
    a stray reply would be taken as the answer to the next lookup. Errors there are
    logged and make the transaction's commit fail instead.
    """

    def __init__(self, server: DictServer) -> None:
        self.server = server
        self.user = ""
        self.dict_name = ""
        self.transactions: dict[str, Transaction] = {}
        self._commands: dict[str, Callable[[list[str]], str]] = {
            "H": self._hello,
            "L": self._lookup,
            "I": self._iterate,
            "B": self._begin,
            "S": self._set,
            "U": self._unset,
            "A": self._atomic_inc,
            "T": self._timestamp,
            "C": self._commit,
            "D": self._commit_async,
            "R": self._rollback,
        }

    def handle_line(self, raw: bytes) -> bytes:
        """Answer one request line (with or without its LF); b'' means no reply is due."""
        # surrogateescape keeps arbitrary bytes intact from request to reply.
        line = raw.decode("utf-8", "surrogateescape").removesuffix("\n").removesuffix("\r")
        if not line:
            log.warning("empty dict request line")
            return b"F\n"
        command = self._commands.get(line[0])
        if command is None:
            log.warning("unknown dict command %r", line[0])
            return b"F\n"
        args = [tab_unescape(part) for part in line[1:].split("\t")]
        try:
            reply = command(args)
        except Exception:
            log.exception("dict command %r failed", line[0])
            reply = "" if line[0] in NO_REPLY_COMMANDS else "F\n"
        return reply.encode("utf-8", "surrogateescape")

    def reject_oversized(self, head: bytes) -> bytes:
        """Answer a request that was too long to read, given its first bytes."""
        command = head[:1].decode("ascii", "replace")
        log.warning("dict %r request longer than %d bytes", command, MAX_LINE_LENGTH)
        if not command or command not in NO_REPLY_COMMANDS:
            return b"F\n"
        trans_id = head[1:].split(b"\t", 1)[0].decode("utf-8", "surrogateescape")
        trans = self.transactions.get(tab_unescape(trans_id))
        if trans is not None and command != "B":
            trans.error = "oversized request"
        return b""

    def _user_arg(self, args: list[str], index: int) -> str:
        # Dovecot 2.3.17+ names the user in every request; older ones only in the hello.
        if len(args) > index and args[index]:
            return args[index]
        return self.user

    def _hello(self, args: list[str]) -> str:
        if len(args) < 4:
            log.warning("short dict hello with %d fields", len(args))
        if args[0] not in ("2", "3"):
            log.warning("unexpected dict protocol major version %r", args[0])
        self.user = args[3] if len(args) > 3 else ""
        self.dict_name = args[4] if len(args) > 4 else ""
        return ""

    def _lookup(self, args: list[str]) -> str:
        key, user = args[0], self._user_arg(args, 1)
        try:
            value = self.server.lookup(key, user)
        except Exception:
            log.exception("dict lookup failed")
            return "F" + tab_escape("lookup failed") + "\n"
        if value is None:
            return "N\n"
        return "O" + tab_escape(value) + "\n"

    def _iterate(self, args: list[str]) -> str:
        if len(args) >= 3:
            flags_text, max_rows_text, path = args[:3]
            user = self._user_arg(args, 3)
        elif len(args) == 2:
            # Dovecot before 2.3 sent no row limit.
            (flags_text, path), max_rows_text, user = args, "0", self.user
        else:
            log.warning("dict iterate request without a path")
            return "F" + tab_escape("malformed iterate request") + "\n"
        try:
            flags, max_rows = int(flags_text), int(max_rows_text)
        except ValueError:
            log.warning("dict iterate request with non-numeric flags or limit")
            return "F" + tab_escape("malformed iterate request") + "\n"
        try:
            rows = list(self.server.iterate(path, user))
        except Exception:
            log.exception("dict iteration failed")
            return "F" + tab_escape("iteration failed") + "\n"
        if max_rows > 0:
            rows = rows[:max_rows]
        lines = []
        for key, value in rows:
            if flags & ITERATE_FLAG_NO_VALUE:
                value = ""
            lines.append(f"O{tab_escape(key)}\t{tab_escape(value)}\n")
        # An empty line ends the iteration.
        return "".join(lines) + "\n"

    def _begin(self, args: list[str]) -> str:
        trans_id = args[0]
        if not trans_id:
            log.warning("dict begin without a transaction id")
            return ""
        if trans_id in self.transactions:
            log.warning("dict transaction %s begun twice; starting it afresh", trans_id)
        self.transactions[trans_id] = Transaction(self._user_arg(args, 1))
        return ""

    def _transaction(self, args: list[str], what: str) -> Transaction | None:
        trans = self.transactions.get(args[0])
        if trans is None:
            log.warning("dict %s in unknown transaction %r", what, args[0])
        return trans

    def _set(self, args: list[str]) -> str:
        return self._record_change(args, "set", with_value=True)

    def _unset(self, args: list[str]) -> str:
        return self._record_change(args, "unset", with_value=False)

    def _record_change(self, args: list[str], what: str, with_value: bool) -> str:
        """Queue a set (key, value) or unset (key, None) in its transaction; no reply."""
        trans = self._transaction(args, what)
        if trans is None:
            return ""
        if len(args) < (3 if with_value else 2):
            log.warning("dict %s without key or value in transaction %s", what, args[0])
            trans.error = f"malformed {what}"
            return ""
        trans.changes.append((args[1], args[2] if with_value else None))
        return ""

    def _atomic_inc(self, args: list[str]) -> str:
        trans = self._transaction(args, "atomic increment")
        if trans is not None:
            # No service of ours keeps counters; refuse at commit instead of guessing.
            trans.error = "atomic increment not supported"
        return ""

    def _timestamp(self, args: list[str]) -> str:
        # Changes are applied at commit time; a client-supplied timestamp adds nothing.
        return ""

    def _commit(self, args: list[str]) -> str:
        trans_id = args[0]
        ok, error = self._apply(trans_id)
        if ok:
            return f"O{tab_escape(trans_id)}\n"
        return f"F{tab_escape(trans_id)}\t{tab_escape(error)}\n"

    def _commit_async(self, args: list[str]) -> str:
        # Only Dovecot 2.2 sends this; it expects the reply tagged with 'A', as
        # Dovecot's own dict server does. 2.3 commits with 'C' even when asynchronous.
        return "A" + self._commit(args)

    def _apply(self, trans_id: str) -> tuple[bool, str]:
        """End the transaction; (True, '') if its changes are stored, else (False, why)."""
        trans = self.transactions.pop(trans_id, None)
        if trans is None:
            log.warning("dict commit of unknown transaction %r", trans_id)
            return False, "unknown transaction"
        if trans.error is not None:
            return False, trans.error
        if not trans.changes:
            return True, ""
        try:
            ok = self.server.commit(trans.changes, trans.user)
        except Exception:
            log.exception("dict commit failed")
            ok = False
        return ok, "" if ok else "commit failed"

    def _rollback(self, args: list[str]) -> str:
        if self.transactions.pop(args[0], None) is None:
            log.warning("dict rollback of unknown transaction %r", args[0])
        return ""


class DictServer:
    """Base class of a dict service; override lookup, iterate and commit as needed."""

    def lookup(self, key: str, user: str) -> str | None:
        """Value stored under key, or None if there is none."""
        return None

    def iterate(self, path: str, user: str) -> Iterable[tuple[str, str]]:
        """(key, value) rows under path."""
        return ()

    def commit(self, changes: list[Change], user: str) -> bool:
        """Apply a transaction's (key, value) changes, value None meaning unset."""
        return False

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one client until it hangs up, answering its requests in order."""
        session = DictSession(self)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError as exc:
                    head = await reader.read(exc.consumed)
                    if not await _skip_rest_of_line(reader):
                        return
                    reply = session.reject_oversized(head)
                else:
                    # Handlers touch the file system (and hash passwords); a worker
                    # thread keeps other connections moving while one waits.
                    reply = await asyncio.to_thread(session.handle_line, raw)
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def start(self, sock: socket.socket) -> asyncio.AbstractServer:
        """Start accepting clients on an already bound, listening unix socket."""
        return await asyncio.start_unix_server(
            self.handle_connection, sock=sock, limit=MAX_LINE_LENGTH
        )

    async def serve(self, sock: socket.socket) -> None:
        """Serve clients on sock until cancelled."""
        server = await self.start(sock)
        async with server:
            await server.serve_forever()


async def _skip_rest_of_line(reader: asyncio.StreamReader) -> bool:
    """Drop input up to and including the next LF; False if the client hung up first."""
    while True:
        try:
            await reader.readuntil(b"\n")
            return True
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError as exc:
            await reader.read(exc.consumed)


def run_service(
    server_class: Callable[[Config], DictServer],
    prog: str,
    description: str,
    argv: list[str] | None = None,
) -> int:
    """Command line of a dict service: read the settings, serve on the socket."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH, help="relay.ini path")
    parser.add_argument("--socket", required=True, help="unix socket to listen on")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    server = server_class(load_config(args.config))
    asyncio.run(server.serve(unix_listener(args.socket)))
    return 0
