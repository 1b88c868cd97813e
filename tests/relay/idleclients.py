"""Many IMAP clients idling at once, as Delta Chat devices do, from one process.

Each client logs in over 993 (its first login creates the account), asks for
the TURN credentials as Delta Chat does, selects INBOX and sits in IDLE; a
reader notes when the relay reports a new message.
Used by the relay tests (a few hundred clients) and scripts/bench_idle.py
(thousands). Bounded: every wait has a timeout, and close() ends them all.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field

from mailclient import new_credentials, tls_context


@dataclass
class IdleClient:
    address: str
    password: str
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    connected_at: float = 0.0
    new_mail: asyncio.Event = field(default_factory=asyncio.Event)
    new_mail_at: float = 0.0
    _listener: asyncio.Task | None = None

    async def connect(self, host: str, timeout: float) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(host, 993, ssl=tls_context()), timeout
        )
        await self._expect(b"* OK", timeout)
        for command, answer in (
            (f'a LOGIN "{self.address}" "{self.password}"', b"a OK"),
            # As Delta Chat on every connect: its calls' TURN credentials, over
            # IMAP METADATA from the relay's metadata service.
            ('m GETMETADATA "" /shared/vendor/deltachat/turn', b"m OK"),
            ("b SELECT INBOX", b"b OK"),
            ("c IDLE", b"+"),
        ):
            self.writer.write(command.encode() + b"\r\n")
            await self._expect(answer, timeout)
        self.connected_at = time.monotonic()
        self._listener = asyncio.create_task(self._listen())

    async def _expect(self, prefix: bytes, timeout: float) -> None:
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError(f"{self.address}: connection closed waiting for {prefix!r}")
            if line.startswith(prefix):
                return
            if line.split(b" ", 2)[1:2] in ([b"NO"], [b"BAD"]):
                raise ConnectionError(f"{self.address}: {line!r}")

    async def _listen(self) -> None:
        while line := await self.reader.readline():
            if line.startswith(b"*") and line.rstrip().endswith(b"EXISTS"):
                self.new_mail_at = time.monotonic()
                self.new_mail.set()

    async def wait_for_mail(self, timeout: float) -> float:
        """The time.monotonic() at which the relay reported new mail (raises on timeout)."""
        await asyncio.wait_for(self.new_mail.wait(), timeout)
        return self.new_mail_at

    def close(self) -> None:
        if self._listener:
            self._listener.cancel()
        if self.writer:
            self.writer.close()


def allow_open_files(count: int) -> None:
    """Raise this process's descriptor limit for `count` connections, up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise OSError(f"need {wanted} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def connect_idle_clients(
    host: str, domain: str, count: int, concurrency: int = 16, timeout: float = 60
) -> list[IdleClient]:
    """`count` new accounts, each logged in and idling, in the order they connected."""
    allow_open_files(count)
    clients = [IdleClient(*new_credentials(domain)) for _unused in range(count)]
    gate = asyncio.Semaphore(concurrency)

    async def connect(client: IdleClient) -> None:
        async with gate:
            await client.connect(host, timeout)

    results = await asyncio.gather(*(connect(client) for client in clients), return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        close_all(clients)
        raise ConnectionError(
            f"{count - len(failures)} of {count} clients got into IDLE; "
            f"the first failure: {failures[0]!r}"
        )
    return sorted(clients, key=lambda client: client.connected_at)


def close_all(clients: list[IdleClient]) -> None:
    for client in clients:
        client.close()
