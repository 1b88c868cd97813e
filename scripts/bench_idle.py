"""Many idle IMAP clients on one relay container: memory, wake-up latency, connect time.

    .venv/bin/python scripts/bench_idle.py chatmail-local --clients 1000 10000

For each count: that many new accounts log in over 993, select INBOX and sit in
IDLE (32 connecting at a time); once Dovecot has hibernated them, one message
to each of the 5 clients that connected last, timed from submission to their
IDLE's EXISTS. Prints the time to connect them all, the relay's memory (the
container's cgroup, and the sum of every process's RSS, which counts shared
pages once per process) and the wake-up latencies. Every wait is bounded; the
clients are closed before the next count.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "relay"))

from bench_relay import container_relay, inside
from idleclients import close_all, connect_idle_clients
from mailclient import Gpg, new_credentials, pgp_mime, smtp_login

TARGETS = 5


def imap_processes(container: str) -> int:
    return int(inside(container, "sh", "-c", "pgrep -c -x imap || true") or 0)


def memory(container: str) -> tuple[float, float]:
    """MiB: the container's cgroup usage and the sum of its processes' RSS."""
    usage = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container],
        check=True, capture_output=True, text=True,
    ).stdout.split("/")[0].strip()  # fmt: skip
    units = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "B": 1 / 1024**2}
    unit = next(u for u in units if usage.endswith(u))
    rss_kib = inside(
        container, "sh", "-c", "awk '/^VmRSS:/ {s += $2} END {print s}' /proc/[0-9]*/status"
    )
    return float(usage[: -len(unit)]) * units[unit], int(rss_kib or 0) / 1024


async def measure(container: str, count: int, gpg: Gpg, hibernate_wait: float) -> None:
    ip, domain, _unused = container_relay(container)
    before_cgroup, before_rss = memory(container)
    started = time.monotonic()
    clients = await connect_idle_clients(ip, domain, count, concurrency=32, timeout=120)
    connect_seconds = time.monotonic() - started
    try:
        deadline = time.monotonic() + hibernate_wait
        while imap_processes(container) > count // 100 and time.monotonic() < deadline:
            await asyncio.sleep(2)
        live = imap_processes(container)
        cgroup_mib, rss_mib = memory(container)

        sender = new_credentials(domain)
        payload = gpg.encrypt("idle benchmark\n")
        smtp = smtp_login(ip, *sender)
        latencies = []
        loop = asyncio.get_running_loop()
        for client in clients[-TARGETS:]:
            message = pgp_mime(sender[0], client.address, payload)
            sent = time.monotonic()
            await loop.run_in_executor(None, smtp.sendmail, sender[0], [client.address], message)
            latencies.append((await client.wait_for_mail(timeout=30) - sent) * 1000)
        smtp.quit()
    finally:
        close_all(clients)
    print(
        f"{count:>6} idle clients  connected in {connect_seconds:6.1f} s "
        f"({count / connect_seconds:5.1f}/s)  imap processes left {live:>5}  "
        f"memory: cgroup {cgroup_mib:6.0f} MiB (before {before_cgroup:4.0f}), "
        f"RSS sum {rss_mib:6.0f} MiB (before {before_rss:4.0f})  "
        f"wake-up of the last {TARGETS}: median {statistics.median(latencies):6.1f} ms  "
        f"max {max(latencies):6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("container", help="the relay container")
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--hibernate-wait",
        type=float,
        default=120,
        help="seconds to wait, at most, for the sessions to hibernate",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        gpg = Gpg(Path(home) / "gnupg")
        for count in args.clients:
            asyncio.run(measure(args.container, count, gpg, args.hibernate_wait))
            # The closed sessions' processes end before the next count starts.
            time.sleep(5)


if __name__ == "__main__":
    main()
