"""Benchmark a deployed relay from outside, as clients see it; prints figures.

- submit→IDLE: SMTP submission (TLS, login, filter) until the recipient's
  IMAP IDLE reports EXISTS, one message at a time.
- new-account logins per second: first IMAP logins of fresh addresses
  (each creates an account), from several concurrent clients.
- across relays (--federation A B): submission on relay A until IDLE on
  relay B, beside A to A, in the same run, once over each way relay A has:
  its delivery service over HTTPS /mxdeliv, the same service over SMTP (B's
  port 443 refused to A for the while), and Postfix's own SMTP client.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "relay"))

from mailclient import Gpg, Idle, imap_login, new_credentials, pgp_mime, smtp_login
from testbed import container_address

BURST = 10  # messages a sender may submit without waiting (the relay's default)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def submit_to_idle(
    ip: str, domain: str, count: int, gpg: Gpg, to: tuple[str, str] | None = None
) -> list[float]:
    """Latencies from submitting on the relay at `ip` until IDLE at the recipient, who is
    on the same relay or on the relay `to` (its address and domain)."""
    recipient_ip, recipient_domain = to or (ip, domain)
    recipient = new_credentials(recipient_domain)
    imap = imap_login(recipient_ip, *recipient)
    imap.select("INBOX")
    # Enough senders that none waits for its rate limit.
    senders = [new_credentials(domain) for _unused in range(-(-count // BURST))]
    payload = gpg.encrypt("benchmark\n")
    latencies = []
    try:
        for index, sender in enumerate(senders):
            smtp = smtp_login(ip, *sender)
            message = pgp_mime(sender[0], recipient[0], payload)
            for _unused in range(min(BURST, count - index * BURST)):
                with Idle(imap) as idle:
                    sent = time.monotonic()
                    smtp.sendmail(sender[0], [recipient[0]], message)
                    latencies.append(idle.wait(timeout=10) - sent)
            smtp.quit()
    finally:
        imap.logout()
    return latencies


def account_creation_rate(ip: str, domain: str, count: int, clients: int) -> float:
    credentials = [new_credentials(domain) for _unused in range(count)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(lambda c: imap_login(ip, *c).logout(), credentials))
    return count / (time.monotonic() - started)


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"{name:<56} n={len(ms):<4} p50={statistics.median(ms):7.1f} ms  "
        f"p95={percentile(ms, 0.95):7.1f} ms  p99={percentile(ms, 0.99):7.1f} ms  "
        f"max={max(ms):7.1f} ms"
    )


def inside(container: str, *command: str) -> str:
    """What a command run in the container printed, stripped."""
    return subprocess.run(
        ["docker", "exec", container, *command], check=True, capture_output=True, text=True
    ).stdout.strip()


def container_relay(name: str) -> tuple[str, str, str]:
    """IP address, mail domain and Dovecot version of a relay container."""
    return (
        container_address(name),
        inside(name, "cat", "/etc/mailname"),
        inside(name, "dpkg-query", "-W", "-f", "${Version}", "dovecot-core"),
    )


def compare(names: list[str], messages: int, gpg: Gpg) -> None:
    """The same submit->IDLE measurement on several relays, one after the other."""
    p50 = {}
    for name in names:
        ip, domain, version = container_relay(name)
        latencies = submit_to_idle(ip, domain, messages, gpg)
        report(f"{name} ({version})", latencies)
        p50[name] = statistics.median(latencies)
    fastest = min(p50, key=p50.get)
    for name in names:
        if name != fastest:
            print(f"p50 {name} / {fastest}: {p50[name] / p50[fastest]:.1f}x")


@contextlib.contextmanager
def https_refused(sender: str, peer_ip: str):
    """The sender's connections to the peer's port 443 are refused (a packet filter in
    its network namespace); its delivery service falls back to SMTP and, having seen
    SMTP work, stays with it until it restarts at the end."""
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", sender],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    rule = [
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        peer_ip,
        "--dport",
        "443",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]
    subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-D", *rule], check=False)
        inside(sender, "systemctl", "restart", "chatmail-delivery.service")


@contextlib.contextmanager
def postfix_smtp(sender: str):
    """Remote mail by Postfix's own SMTP client (chatmail_mxdeliv_send: false) for the while."""
    transport = inside(sender, "postconf", "-h", "default_transport")
    inside(sender, "postconf", "-e", "default_transport=smtp")
    inside(sender, "postfix", "reload")
    try:
        yield
    finally:
        inside(sender, "postconf", "-e", f"default_transport={transport}")
        inside(sender, "postfix", "reload")


def federation(sender: str, peer: str, messages: int, gpg: Gpg) -> None:
    """submit->IDLE within the sending relay and from it to its peer over each channel."""
    ip, domain, _unused = container_relay(sender)
    peer_ip, peer_domain, _unused = container_relay(peer)
    report(f"{domain} -> {domain}", submit_to_idle(ip, domain, messages, gpg))
    ways = [
        ("https (delivery service)", contextlib.nullcontext()),
        ("smtp (delivery service)", https_refused(sender, peer_ip)),
        ("smtp (Postfix smtp client)", postfix_smtp(sender)),
    ]
    for name, way in ways:
        with way:
            cross = submit_to_idle(ip, domain, messages, gpg, to=(peer_ip, peer_domain))
        report(f"{domain} -> {peer_domain} {name}", cross)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", help="the relay's address")
    parser.add_argument("--domain", help="the relay's mail domain")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="CONTAINER",
        help="measure submit->IDLE on these relay containers side by side",
    )
    parser.add_argument(
        "--federation",
        nargs=2,
        metavar=("SENDER", "PEER"),
        help="measure submit->IDLE on relay container SENDER and from it to PEER",
    )
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        gpg = Gpg(Path(home) / "gnupg")
        if args.compare:
            compare(args.compare, args.messages, gpg)
            return
        if args.federation:
            federation(*args.federation, args.messages, gpg)
            return
        if not (args.ip and args.domain):
            parser.error("--ip and --domain are required without --compare")
        report("submit->IDLE latency", submit_to_idle(args.ip, args.domain, args.messages, gpg))
    rate = account_creation_rate(args.ip, args.domain, args.accounts, args.clients)
    print(
        f"{'new-account logins':<28} n={args.accounts:<4} {rate:.1f} per second "
        f"({args.clients} concurrent clients)"
    )


if __name__ == "__main__":
    main()
