"""Fixtures shared by the relay services' unit tests (see relay_servers.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from chatrelay.config import Config
from chatrelay.newaccount import NewAccounts, NewAccountServer
from relay_servers import DkimDns, Sink, SinkSMTP, close, run
from test_auth import FakeSystem
from test_newaccount import Client


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


@pytest.fixture
def system() -> FakeSystem:
    return FakeSystem()


@pytest.fixture
def serve(system: FakeSystem) -> Iterator[Callable[[Config], Client]]:
    """Start the service for a config in a thread; a client for it."""
    servers: list[NewAccountServer] = []
    clients: list[Client] = []

    def start(config: Config) -> Client:
        sock = socket.create_server(("127.0.0.1", 0))
        server = NewAccountServer(NewAccounts(config, system.probe()), sock)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        clients.append(Client(sock.getsockname()[1]))
        return clients[-1]

    yield start
    for client in clients:
        client.connection.close()
    for server in servers:
        server.shutdown()
        server.server_close()
