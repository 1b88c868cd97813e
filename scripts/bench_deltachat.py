"""Time a relay with real Delta Chat clients, as SPEC §11 reports the public instance.

    .venv/bin/python scripts/bench_deltachat.py --ip 172.18.0.2 --domain _chatmail.test

Prints figures only. Accounts use explicit servers (no autoconfig) and accept the test
relay's self-signed certificate. Delta Chat core limits its own sending rate, so ping-pong
rounds are spaced by a cooldown that is not counted. Every wait has a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "relay"))

from deltachat_helpers import (
    CONFIGURE_TIMEOUT,
    MESSAGE_TIMEOUT,
    bring_online,
    configure,
    delta_chat,
    new_online_account,
    secure_join,
    wait_for_event,
    wait_for_kind,
)
from deltachat_rpc_client import Account, AttrDict, Chat, DeltaChat, JsonRpcError
from deltachat_rpc_client.const import EventType

BATCH = 10
# The relay lets an address send a burst of 10, refilled at one a second (SPEC §10
# defaults); an uncounted pause this long lets each batch start with a full burst.
BATCH_COOLDOWN = 11.0


def configure_and_idle(dc: DeltaChat, ip: str, domain: str, runs: int) -> list[float]:
    """Seconds from configuring a fresh account until it IDLEs on its inbox."""
    times = []
    for _unused in range(runs):
        account = dc.add_account()
        start = time.perf_counter()
        configure(account, ip, domain, CONFIGURE_TIMEOUT)
        bring_online(account, CONFIGURE_TIMEOUT)
        times.append(time.perf_counter() - start)
        account.stop_io()
        account.remove()
    return times


def is_incoming(account: Account, accept: Callable[[str], bool]) -> Callable[[AttrDict], bool]:
    def matches(event: AttrDict) -> bool:
        if event.kind != EventType.INCOMING_MSG:
            return False
        return accept(account.get_message_by_id(event.msg_id).get_snapshot().text)

    return matches


class Echo(threading.Thread):
    """A bot-like loop: the account answers every incoming message at once."""

    def __init__(self, account: Account) -> None:
        super().__init__(daemon=True)
        self.account = account
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                event = wait_for_event(
                    self.account, lambda e: e.kind == EventType.INCOMING_MSG, timeout=0.5
                )
            except TimeoutError:
                continue
            message = self.account.get_message_by_id(event.msg_id).get_snapshot()
            message.chat.send_text(f"pong {message.text}")

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


def ping_pong(alice: Account, alice_chat: Chat, bob: Account, rounds: int, cooldown: float):
    """Seconds from Alice sending until Bob's immediate answer reaches her, per round."""
    echo = Echo(bob)
    echo.start()
    times = []
    try:
        for round_ in range(rounds):
            time.sleep(cooldown)
            text = f"ping {round_}"
            start = time.perf_counter()
            alice_chat.send_text(text)
            wait_for_event(alice, is_incoming(alice, f"pong {text}".__eq__), MESSAGE_TIMEOUT)
            times.append(time.perf_counter() - start)
    finally:
        echo.stop()
    return times


def send_and_receive_batch(alice: Account, alice_chat: Chat, bob: Account, run: int):
    """Seconds until the relay accepted the last of BATCH messages from Alice, and until
    Bob received the last of them."""
    texts = [f"batch {run} message {i}" for i in range(BATCH)]
    submitted: list[float] = []

    def watch_submissions() -> None:
        with contextlib.suppress(TimeoutError):
            for _unused in range(BATCH):
                wait_for_kind(alice, EventType.MSG_DELIVERED, MESSAGE_TIMEOUT)
            submitted.append(time.perf_counter())

    # Alice sends nothing else meanwhile, so each delivery event is one of these messages.
    alice.clear_all_events()
    watcher = threading.Thread(target=watch_submissions, daemon=True)
    watcher.start()
    start = time.perf_counter()
    for text in texts:
        alice_chat.send_text(text)
    for _unused in range(BATCH):
        wait_for_event(bob, is_incoming(bob, set(texts).__contains__), MESSAGE_TIMEOUT)
    received = time.perf_counter() - start
    watcher.join(MESSAGE_TIMEOUT)
    return (submitted[0] - start if submitted else None), received


def row(name: str, times: list[float]) -> str:
    return (
        f"{name:<40} {statistics.median(times):>8.3f} {min(times):>7.3f} {max(times):>7.3f}"
        f" {len(times):>3}"
    )


def run(args: argparse.Namespace, results: dict[str, list[float]]) -> None:
    """Fill `results` benchmark by benchmark, so a failure still leaves the earlier ones."""
    with delta_chat() as dc:
        results["dc_autoconfig_and_idle_ready"] = configure_and_idle(
            dc, args.ip, args.domain, args.runs
        )
        alice = new_online_account(dc, args.ip, args.domain)
        bob = new_online_account(dc, args.ip, args.domain)
        alice_chat, _unused = secure_join(alice, bob)
        results[f"dc_ping_pong ({args.cooldown:g} s cooldown)"] = ping_pong(
            alice, alice_chat, bob, args.rounds, args.cooldown
        )
        if args.peer_ip:
            carol = new_online_account(dc, args.peer_ip, args.peer_domain)
            alice_carol, _unused = secure_join(alice, carol)
            results[f"dc_ping_pong across relays ({args.cooldown:g} s cooldown)"] = ping_pong(
                alice, alice_carol, carol, args.rounds, args.cooldown
            )
            carol.stop_io()
        batches = results["dc_send_10_receive_10"] = []
        submissions = results["  of which: last of 10 accepted by SMTP"] = []
        for number in range(args.runs):
            time.sleep(BATCH_COOLDOWN)
            submitted, received = send_and_receive_batch(alice, alice_chat, bob, number)
            batches.append(received)
            if submitted is not None:
                submissions.append(submitted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", required=True, help="the relay's IP address (IMAP/SMTP host)")
    parser.add_argument("--domain", required=True, help="the relay's mail domain")
    parser.add_argument("--peer-ip", help="a second relay: ping-pong across relays too")
    parser.add_argument("--peer-domain", help="the second relay's mail domain")
    parser.add_argument("--rounds", type=int, default=10, help="ping-pong rounds (default 10)")
    parser.add_argument(
        "--runs", type=int, default=3, help="configure and send-10 repetitions (default 3)"
    )
    parser.add_argument(
        "--cooldown", type=float, default=1.5, help="uncounted pause before each round (1.5 s)"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.runs < 1:
        parser.error("--rounds and --runs must be at least 1")
    if bool(args.peer_ip) != bool(args.peer_domain):
        parser.error("--peer-ip and --peer-domain go together")

    results: dict[str, list[float]] = {}
    failure = None
    try:
        run(args, results)
    except (TimeoutError, JsonRpcError) as error:
        failure = error
    print(f"{'benchmark':<40} {'median s':>8} {'min':>7} {'max':>7} {'n':>3}")
    for name, times in results.items():
        if times:
            print(row(name, times))
    print(
        f"relay {args.ip} ({args.domain}); configure: explicit servers, no autoconfig;"
        f" ping-pong: A→B, B answers at once, B→A, {args.cooldown:g} s uncounted cooldown"
        f" before each round; {BATCH_COOLDOWN:g} s before each batch of {BATCH}"
    )
    if failure:
        print(f"stopped early: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
