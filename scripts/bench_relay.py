#!/usr/bin/env python3
"""Benchmark a deployed relay from outside, as clients see it; prints figures.

- submit→IDLE: SMTP submission (TLS, login, filter) until the recipient's
  IMAP IDLE reports EXISTS, one message at a time.
- new-account logins per second: first IMAP logins of fresh addresses
  (each creates an account), from several concurrent clients.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "relay"))

from mailclient import Gpg, Idle, imap_login, new_credentials, pgp_mime, smtp_login

BURST = 10  # messages a sender may submit without waiting (the relay's default)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def submit_to_idle(ip: str, domain: str, count: int, gpg: Gpg) -> list[float]:
    recipient = new_credentials(domain)
    imap = imap_login(ip, *recipient)
    imap.select("INBOX")
    # Enough senders that none waits for its rate limit.
    senders = [new_credentials(domain) for _ in range(-(-count // BURST))]
    payload = gpg.encrypt("benchmark\n")
    latencies = []
    try:
        for index, sender in enumerate(senders):
            smtp = smtp_login(ip, *sender)
            message = pgp_mime(sender[0], recipient[0], payload)
            for _ in range(min(BURST, count - index * BURST)):
                with Idle(imap) as idle:
                    sent = time.monotonic()
                    smtp.sendmail(sender[0], [recipient[0]], message)
                    latencies.append(idle.wait(timeout=10) - sent)
            smtp.quit()
    finally:
        imap.logout()
    return latencies


def account_creation_rate(ip: str, domain: str, count: int, clients: int) -> float:
    credentials = [new_credentials(domain) for _ in range(count)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(lambda c: imap_login(ip, *c).logout(), credentials))
    return count / (time.monotonic() - started)


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"{name:<28} n={len(ms):<4} p50={statistics.median(ms):7.1f} ms  "
        f"p95={percentile(ms, 0.95):7.1f} ms  p99={percentile(ms, 0.99):7.1f} ms  "
        f"max={max(ms):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", required=True, help="the relay's address")
    parser.add_argument("--domain", required=True, help="the relay's mail domain")
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        gpg = Gpg(Path(home) / "gnupg")
        report("submit->IDLE latency", submit_to_idle(args.ip, args.domain, args.messages, gpg))
    rate = account_creation_rate(args.ip, args.domain, args.accounts, args.clients)
    print(
        f"{'new-account logins':<28} n={args.accounts:<4} {rate:.1f} per second "
        f"({args.clients} concurrent clients)"
    )


if __name__ == "__main__":
    main()
