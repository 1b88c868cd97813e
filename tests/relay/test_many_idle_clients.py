"""Instant delivery for every connected user, live or hibernated, not only the first 128.

Hundreds of clients idle at once, each its own new account, as Delta Chat
devices do. Past the kernel's inotify limits or Dovecot's client limits a
session silently falls back to polling and gets its mail seconds late.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from idleclients import close_all, connect_idle_clients
from mailclient import new_credentials, pgp_mime, smtp_login

CLIENTS = 300
KERNEL_DEFAULT_INSTANCES = 128  # fs.inotify.max_user_instances
WARNINGS = r"Inotify instance limit|client_limit \(\d+\) reached|fd limit"


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def journal_since(host):
    return host.run("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()


@pytest.fixture(scope="module")
def clients(loop, relay_ip, domain, journal_since):
    clients = loop.run_until_complete(connect_idle_clients(relay_ip, domain, CLIENTS))
    yield clients
    close_all(clients)


@pytest.fixture(scope="module")
def send(loop, relay_ip, domain, gpg):
    """send(client) -> seconds from submission until the client's IDLE reported it."""
    sender = new_credentials(domain)
    payload = gpg.encrypt("many idle clients\n")
    smtp = smtp_login(relay_ip, *sender)

    async def deliver(client) -> float:
        message = pgp_mime(sender[0], client.address, payload)
        client.new_mail.clear()
        sent = time.monotonic()
        await loop.run_in_executor(None, smtp.sendmail, sender[0], [client.address], message)
        return await client.wait_for_mail(timeout=10) - sent

    yield lambda client: loop.run_until_complete(deliver(client))
    smtp.quit()


def imap_processes(host) -> int:
    return int(host.run("pgrep -c -x imap").stdout.strip() or 0)


def no_limit_warnings(host, since: str) -> list[str]:
    log = host.run(f"journalctl -q --no-pager -u dovecot --since '{since}'").stdout
    return [line for line in log.splitlines() if re.search(WARNINGS, line)]


def test_every_live_session_gets_new_mail_at_once(host, clients, send, journal_since):
    # The first may hibernate already if connecting them all took long; the
    # last ones are live: more live sessions than the kernel's default allows.
    assert imap_processes(host) > KERNEL_DEFAULT_INSTANCES
    latencies = [send(client) for client in clients[-5:]]
    print(f"{CLIENTS} live sessions: IDLE wake-up of the last 5 in ms:",
          [round(s * 1000, 1) for s in latencies])  # fmt: skip
    assert max(latencies) < 1, latencies
    assert no_limit_warnings(host, journal_since) == []


def test_idle_sessions_hibernate(host, clients):
    timeout = host.run("doveconf -h imap_hibernate_timeout").stdout.strip()
    seconds = int(re.match(r"(\d+)", timeout).group(1))
    deadline = time.monotonic() + seconds + 30
    while imap_processes(host) > CLIENTS // 20 and time.monotonic() < deadline:
        time.sleep(1)
    assert imap_processes(host) <= CLIENTS // 20, f"imap processes {seconds + 30} s after IDLE"
    assert host.run("pgrep -c -x imap-hibernate").stdout.strip() not in ("", "0")


def test_every_hibernated_session_gets_new_mail_at_once(host, clients, send, journal_since):
    latencies = [send(client) for client in clients[-10:-5]]
    print(f"{CLIENTS} hibernated sessions: IDLE wake-up of 5 in ms:",
          [round(s * 1000, 1) for s in latencies])  # fmt: skip
    assert max(latencies) < 1, latencies
    assert no_limit_warnings(host, journal_since) == []
