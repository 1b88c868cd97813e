"""Test helpers: run a dict service on a real unix socket and talk to it like Dovecot."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from chatrelay.dictproto import DictServer, tab_escape

TIMEOUT = 10


def percent_e(text: str) -> str:
    r"""Escape like Dovecot's %E: a backslash before \, " and '."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")


def request(command: str, *fields: str) -> str:
    """A request line (without LF) with tab-escaped fields."""
    return command + "\t".join(tab_escape(field) for field in fields)


class DictClient:
    """A blocking client speaking the line protocol, as Dovecot's proxy dict does."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def send(self, *lines: str | bytes) -> None:
        data = b"".join(
            (line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")) + b"\n"
            for line in lines
        )
        self.sock.sendall(data)

    def read_line(self) -> str:
        raw = self.file.readline()
        assert raw.endswith(b"\n"), f"connection closed or incomplete reply: {raw!r}"
        return raw[:-1].decode("utf-8", "surrogateescape")

    def ask(self, line: str | bytes) -> str:
        self.send(line)
        return self.read_line()

    def read_rows(self) -> list[str]:
        """Rows of an iteration reply, up to the empty line that ends it."""
        rows = []
        while (line := self.read_line()) != "":
            rows.append(line)
        return rows

    def hello(self, user: str = "", dict_name: str = "test") -> None:
        self.send(request("H", "3", "2", "0", user, dict_name))

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> DictClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunningServer:
    """A DictServer serving in a background thread with its own event loop."""

    def __init__(self, server: DictServer) -> None:
        # Unix socket paths are limited to ~108 bytes; pytest's tmp_path can be longer.
        self.directory = Path(tempfile.mkdtemp(prefix="dict-", dir="/tmp"))
        self.path = str(self.directory / "socket")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen(64)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(server.start(sock))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not ready.wait(TIMEOUT):
            raise RuntimeError("dict server did not start")

    def connect(self) -> DictClient:
        return DictClient(self.path)

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            await self.server.wait_closed()
            pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self.loop.shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        assert not os.path.exists(self.directory)
