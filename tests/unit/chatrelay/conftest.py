"""Fixtures shared by the relay services' unit tests (see relay_servers.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from relay_servers import DkimDns, Sink, SinkSMTP, close, run


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def sink(loop) -> Iterator[Sink]:
    sink = Sink()

    async def start():
        return await loop.create_server(
            lambda: SinkSMTP(sink, hostname="sink", enable_SMTPUTF8=True, loop=loop),
            "127.0.0.1",
            0,
        )

    server = run(loop, start())
    sink.port = server.sockets[0].getsockname()[1]
    yield sink
    run(loop, close(server))


@pytest.fixture(scope="module")
def dkim_dns() -> DkimDns:
    dns = DkimDns()
    for domain in ("example.net", "mail.example.net", "other.example"):
        dns.add(domain)
    return dns
