"""Push notifications: the token store, the durable queue, the notifier and its HTTP sender."""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from chatrelay import mailbox, push
from chatrelay.config import Config
from chatrelay.push import HttpSender, Notifier, PushQueue, QueueEntry, TokenStore

DOMAIN = "example.org"
ADDRESS = f"abcdefghi@{DOMAIN}"
OTHER = f"jklmnopqr@{DOMAIN}"
START = 1_700_000_000.0
DAY = 86400
TOKEN = "openpgp:AAAAtoken-one"
TOKEN2 = "openpgp:BBBBtoken-two"
TIMEOUT = 5


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSender:
    """Answers with the given outcomes in turn (a status or an exception), then 200."""

    def __init__(self, clock: FakeClock, *outcomes: int | BaseException) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.calls: list[tuple[float, str]] = []

    def __call__(self, token: str) -> int:
        self.calls.append((self.clock(), token))
        outcome = self.outcomes.pop(0) if self.outcomes else 200
        if isinstance(outcome, BaseException):
            # pylint does not narrow by the isinstance above: it sees the ints too.
            raise outcome  # pylint: disable=raising-bad-type
        return outcome


@dataclass
class Received:
    method: str
    path: str
    content_type: str | None
    body: bytes
    client_port: int
    at: float


class Gateway:
    """A real HTTP server on loopback that records requests and answers given statuses.

    The statuses are used in turn and the last one repeats. drop_idle closes each
    connection after its answer without saying so, as a server closing idle
    keep-alive connections does.
    """

    def __init__(self, *statuses: int, protocol: str = "HTTP/1.1", drop_idle: bool = False) -> None:
        self.statuses = list(statuses or (200,))
        self.requests: list[Received] = []
        self.arrived = threading.Condition()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                statuses = gateway.statuses
                status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                # Recorded before the answer, so a client that got its answer finds it.
                with gateway.arrived:
                    gateway.requests.append(
                        Received(
                            self.command,
                            self.path,
                            self.headers.get("Content-Type"),
                            body,
                            self.client_address[1],
                            time.monotonic(),
                        )
                    )
                    gateway.arrived.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if drop_idle:
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/notify"

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[Received]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.requests) >= count, timeout), (
                f"gateway got {len(self.requests)} of {count} requests"
            )
            return list(self.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    running = Gateway()
    yield running
    running.stop()


def make_config(tmp_path: Path, **settings: object) -> Config:
    mailboxes = tmp_path / DOMAIN
    for address in (ADDRESS, OTHER):
        (mailboxes / address).mkdir(parents=True, exist_ok=True)
    queue = tmp_path / "push"
    queue.mkdir(exist_ok=True)
    settings = {"push_queue_dir": queue, "push_concurrency": 2, **settings}
    return Config(mail_domain=DOMAIN, mailboxes_dir=mailboxes, **settings)  # type: ignore[arg-type]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(config: Config, clock: FakeClock) -> TokenStore:
    return TokenStore(config, clock)


def queue_files(config: Config) -> dict[str, dict[str, object]]:
    """The queue directory's entries, by id."""
    return {
        path.stem: json.loads(path.read_text())
        for path in sorted(config.push_queue_dir.iterdir())
        if path.suffix == ".json"
    }


def make_notifier(
    config: Config, tokens: TokenStore, clock: FakeClock, *outcomes: int | BaseException
) -> tuple[Notifier, FakeSender]:
    sender = FakeSender(clock, *outcomes)
    return Notifier(config, tokens, sender, clock), sender


# --- helpers -----------------------------------------------------------------------------


def test_token_id_is_a_short_stable_hash_not_the_token() -> None:
    assert push.token_id(TOKEN) == push.token_id(TOKEN)
    assert push.token_id(TOKEN) != push.token_id(TOKEN2)
    assert len(push.token_id(TOKEN)) == 12
    assert push.token_id(TOKEN) not in TOKEN


@pytest.mark.parametrize(
    ("token", "valid"),
    [
        (TOKEN, True),
        ("fcm:abc-DEF_123:xyz/+=", True),
        ("", False),
        ("two words", False),
        ("tab\there", False),
        ("line\nbreak", False),
        ("nön-ascii", False),
        ("x" * 8192, True),
        ("x" * 8193, False),
    ],
)
def test_is_valid_token(token: str, valid: bool) -> None:
    assert push.is_valid_token(token) is valid


def test_write_atomically_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "file"
    push.write_atomically(path, b"one")
    push.write_atomically(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["file"]


def test_write_atomically_cleans_up_when_the_rename_fails(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        push.write_atomically(tmp_path / "dir", b"data")
    assert os.listdir(tmp_path) == ["dir"]


# --- token store -------------------------------------------------------------------------


def test_tokens_are_added_listed_and_stored_with_their_time(
    tokens: TokenStore, clock: FakeClock, config: Config
) -> None:
    assert tokens.live(ADDRESS) == []
    tokens.add(ADDRESS, TOKEN)
    clock.now += 10
    tokens.add(ADDRESS, TOKEN2)
    assert tokens.live(ADDRESS) == [TOKEN, TOKEN2]
    assert tokens.live(OTHER) == []
    path = mailbox.directory(config, ADDRESS) / "devicetokens"
    assert json.loads(path.read_text()) == {TOKEN: int(START), TOKEN2: int(START) + 10}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_setting_a_token_again_refreshes_it(
    tokens: TokenStore, clock: FakeClock, config: Config
) -> None:
    tokens.add(ADDRESS, TOKEN)
    tokens.add(ADDRESS, TOKEN2)
    clock.now += 60
    tokens.add(ADDRESS, TOKEN)
    assert tokens.live(ADDRESS) == [TOKEN2, TOKEN]
    stored = json.loads(tokens.path(ADDRESS).read_text())
    assert stored == {TOKEN: int(START) + 60, TOKEN2: int(START)}


def test_tokens_expire_90_days_after_they_were_last_set(
    tokens: TokenStore, clock: FakeClock
) -> None:
    tokens.add(ADDRESS, TOKEN)
    clock.now += 30 * DAY
    tokens.add(ADDRESS, TOKEN2)
    clock.now = START + 90 * DAY - 1
    assert tokens.live(ADDRESS) == [TOKEN, TOKEN2]
    clock.now = START + 90 * DAY
    assert tokens.live(ADDRESS) == [TOKEN2]
    clock.now = START + 120 * DAY
    assert tokens.live(ADDRESS) == []


def test_expired_tokens_are_pruned_from_the_file_on_the_next_change(
    tokens: TokenStore, clock: FakeClock
) -> None:
    tokens.add(ADDRESS, TOKEN)
    clock.now += 91 * DAY
    tokens.add(ADDRESS, TOKEN2)
    assert json.loads(tokens.path(ADDRESS).read_text()) == {TOKEN2: int(clock.now)}


def test_expiry_follows_the_setting(tmp_path: Path, clock: FakeClock) -> None:
    tokens = TokenStore(make_config(tmp_path, push_token_expiry_days=2), clock)
    tokens.add(ADDRESS, TOKEN)
    clock.now += 2 * DAY - 1
    assert tokens.live(ADDRESS) == [TOKEN]
    clock.now += 1
    assert tokens.live(ADDRESS) == []


def test_remove_and_clear(tokens: TokenStore) -> None:
    tokens.add(ADDRESS, TOKEN)
    tokens.add(ADDRESS, TOKEN2)
    tokens.remove(ADDRESS, TOKEN)
    tokens.remove(ADDRESS, "never-stored")
    assert tokens.live(ADDRESS) == [TOKEN2]
    tokens.clear(ADDRESS)
    assert tokens.live(ADDRESS) == []
    assert not tokens.path(ADDRESS).exists()
    tokens.clear(ADDRESS)
    assert not tokens.path(ADDRESS).exists()


def test_malformed_tokens_are_refused(tokens: TokenStore) -> None:
    with pytest.raises(ValueError, match="malformed device token"):
        tokens.add(ADDRESS, "has space")
    assert not tokens.path(ADDRESS).exists()


def test_tokens_never_create_an_account_directory(tokens: TokenStore, config: Config) -> None:
    address = f"zzzzzzzzz@{DOMAIN}"
    with pytest.raises(FileNotFoundError):
        tokens.add(address, TOKEN)
    assert tokens.live(address) == []
    assert not mailbox.directory(config, address).exists()


def test_the_oldest_tokens_go_beyond_the_limit(
    tokens: TokenStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push, "MAX_TOKENS_PER_ADDRESS", 3)
    for number in range(5):
        clock.now += 1
        tokens.add(ADDRESS, f"token-{number}")
    assert tokens.live(ADDRESS) == ["token-2", "token-3", "token-4"]
    # Refreshed within the same second as all others, the token set last still stays.
    clock.now += 1
    for number in (5, 6, 7):
        tokens.add(ADDRESS, f"token-{number}")
    tokens.add(ADDRESS, "token-5")
    assert "token-5" in tokens.live(ADDRESS)
    assert len(tokens.live(ADDRESS)) == 3


@pytest.mark.parametrize(
    "content", [b"{not json", b'["a list"]', b"\xff\xfe", b'{"ok-token": "not a time"}']
)
def test_corrupt_token_files_count_as_empty(tokens: TokenStore, content: bytes) -> None:
    tokens.path(ADDRESS).write_bytes(content)
    assert tokens.live(ADDRESS) == []
    tokens.add(ADDRESS, TOKEN)
    assert tokens.live(ADDRESS) == [TOKEN]


def test_invalid_tokens_in_the_file_are_skipped(tokens: TokenStore) -> None:
    stored = {TOKEN: int(START), "bad token": int(START), TOKEN2: 1.5e9}
    tokens.path(ADDRESS).write_text(json.dumps(stored))
    assert tokens.live(ADDRESS) == [TOKEN]


def test_concurrent_adds_lose_no_token(tokens: TokenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "MAX_TOKENS_PER_ADDRESS", 1000)
    barrier = threading.Barrier(8)

    def add_many(worker: int) -> None:
        barrier.wait()
        for number in range(20):
            tokens.add(ADDRESS, f"token-{worker}-{number}")

    threads = [threading.Thread(target=add_many, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 4)
    expected = {f"token-{worker}-{number}" for worker in range(8) for number in range(20)}
    assert set(tokens.live(ADDRESS)) == expected
    assert os.listdir(tokens.path(ADDRESS).parent) == ["devicetokens"]


# --- queue entries on disk ---------------------------------------------------------------


def test_queue_entry_round_trips_through_json() -> None:
    entry = QueueEntry("abc", TOKEN, ADDRESS, enqueued=START, due=START + 8, attempts=2)
    assert json.loads(entry.to_json()) == {
        "token": TOKEN,
        "address": ADDRESS,
        "enqueued": START,
        "due": START + 8,
        "attempts": 2,
    }
    assert QueueEntry.from_json("abc", entry.to_json()) == entry


@pytest.mark.parametrize(
    "content",
    [
        b"[]",
        b"{}",
        b"garbage",
        b'{"token": 1, "address": "a", "enqueued": 0, "due": 0, "attempts": 0}',
        b'{"token": "t", "address": "a", "enqueued": {}, "due": 0, "attempts": 0}',
    ],
)
def test_push_queue_drops_unreadable_entries_and_leftovers(
    config: Config, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    queue = PushQueue(config.push_queue_dir)
    good = QueueEntry("good", TOKEN, ADDRESS, enqueued=START, due=START)
    queue.save(good)
    (config.push_queue_dir / "bad.json").write_bytes(content)
    (config.push_queue_dir / ".half-written.json.1234.tmp").write_bytes(b"{")
    (config.push_queue_dir / "README").write_text("operator notes")
    assert queue.load() == [good]
    assert sorted(os.listdir(config.push_queue_dir)) == ["README", "good.json"]
    assert "dropping unreadable push queue entry" in caplog.text
    assert "ignoring unexpected file" in caplog.text


def test_push_queue_creates_its_directory(tmp_path: Path) -> None:
    queue = PushQueue(tmp_path / "state" / "push")
    assert queue.load() == []
    assert stat.S_IMODE((tmp_path / "state" / "push").stat().st_mode) == 0o700


# --- notifier: queueing and outcomes ------------------------------------------------------


def test_enqueue_is_on_disk_when_it_returns(
    config: Config, tokens: TokenStore, clock: FakeClock
) -> None:
    notifier, sender = make_notifier(config, tokens, clock)
    notifier.enqueue(ADDRESS, TOKEN)
    assert list(queue_files(config).values()) == [
        {"token": TOKEN, "address": ADDRESS, "enqueued": START, "due": START, "attempts": 0}
    ]
    assert sender.calls == []
    assert notifier.next_due() == START


def test_notify_queues_one_entry_per_live_token(
    config: Config, tokens: TokenStore, clock: FakeClock
) -> None:
    tokens.add(ADDRESS, "expiring")
    clock.now += 89 * DAY
    tokens.add(ADDRESS, TOKEN)
    tokens.add(ADDRESS, TOKEN2)
    tokens.add(OTHER, "someone-else")
    clock.now += 2 * DAY
    notifier, sender = make_notifier(config, tokens, clock)
    assert notifier.notify(ADDRESS) == 2
    assert notifier.notify(f"nobody1234@{DOMAIN}") == 0
    assert sorted(entry["token"] for entry in queue_files(config).values()) == [TOKEN, TOKEN2]
    assert notifier.run_due() == 2
    assert sorted(token for _unused, token in sender.calls) == [TOKEN, TOKEN2]
    assert queue_files(config) == {}


@pytest.mark.parametrize("status", [200, 202, 204])
def test_success_deletes_the_entry(
    config: Config, tokens: TokenStore, clock: FakeClock, status: int
) -> None:
    tokens.add(ADDRESS, TOKEN)
    notifier, sender = make_notifier(config, tokens, clock, status)
    notifier.enqueue(ADDRESS, TOKEN)
    assert notifier.run_due() == 1
    assert sender.calls == [(START, TOKEN)]
    assert queue_files(config) == {}
    assert notifier.next_due() is None
    assert tokens.live(ADDRESS) == [TOKEN]


def test_gone_deletes_the_entry_and_the_token(
    config: Config, tokens: TokenStore, clock: FakeClock
) -> None:
    tokens.add(ADDRESS, TOKEN)
    tokens.add(ADDRESS, TOKEN2)
    notifier, _unused = make_notifier(config, tokens, clock, 410)
    notifier.enqueue(ADDRESS, TOKEN)
    notifier.run_due()
    assert queue_files(config) == {}
    assert tokens.live(ADDRESS) == [TOKEN2]


def test_gone_for_a_deleted_account_still_deletes_the_entry(
    config: Config, tokens: TokenStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    notifier, _unused = make_notifier(config, tokens, clock, 410)
    notifier.enqueue(f"deleted12@{DOMAIN}", TOKEN)
    notifier.run_due()
    assert queue_files(config) == {}
    assert "cannot remove dead token" in caplog.text


@pytest.mark.parametrize(
    "failure",
    [
        500,
        404,
        301,
        429,
        ConnectionRefusedError("refused"),
        TimeoutError("timed out"),
        http.client.RemoteDisconnected("closed"),
    ],
)
def test_failures_are_retried(
    config: Config, tokens: TokenStore, clock: FakeClock, failure: int | BaseException
) -> None:
    notifier, sender = make_notifier(config, tokens, clock, failure, failure)
    notifier.enqueue(ADDRESS, TOKEN)
    # The first retry is due at once, the second 8 s later.
    assert notifier.run_due() == 2
    [entry] = queue_files(config).values()
    assert entry["attempts"] == 2
    assert entry["due"] == START + 8
    clock.now += 8
    assert notifier.run_due() == 1
    assert queue_files(config) == {}
    assert [when for when, _unused in sender.calls] == [START, START, START + 8]


def test_retry_schedule_and_giving_up_after_five_hours(
    config: Config, tokens: TokenStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatrelay.push")
    notifier, sender = make_notifier(config, tokens, clock, *[503] * 100)
    notifier.enqueue(ADDRESS, TOKEN)
    attempts_on_disk = []
    while (due := notifier.next_due()) is not None:
        clock.now = max(clock.now, due)
        notifier.run_due()
        attempts_on_disk.extend(entry["attempts"] for entry in queue_files(config).values())
    offsets = [when - START for when, _unused in sender.calls]
    assert offsets == [0, 0, 8, 72, 584, 4680, 8776, 12872, 16968]
    delays = [later - earlier for earlier, later in itertools.pairwise(offsets)]
    assert delays == [0, 8, 64, 512, 4096, 4096, 4096, 4096]
    # No attempt after five hours: the next would have been at 21064 s.
    assert attempts_on_disk == [2, 3, 4, 5, 6, 7, 8]
    assert queue_files(config) == {}
    assert "giving up after 9 attempts" in caplog.text
    assert TOKEN not in caplog.text


def test_give_up_after_follows_the_setting(
    tmp_path: Path, tokens: TokenStore, clock: FakeClock
) -> None:
    config = make_config(tmp_path, push_give_up_after=100)
    notifier, sender = make_notifier(config, TokenStore(config, clock), clock, *[500] * 10)
    notifier.enqueue(ADDRESS, TOKEN)
    while (due := notifier.next_due()) is not None:
        clock.now = max(clock.now, due)
        notifier.run_due()
    assert [when - START for when, _unused in sender.calls] == [0, 0, 8, 72]


def test_entries_older_than_the_limit_are_dropped_unsent(
    config: Config, tokens: TokenStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # As after a long downtime: the entry was due long ago, and its message is stale.
    PushQueue(config.push_queue_dir).save(
        QueueEntry("old", TOKEN, ADDRESS, enqueued=START - 18000, due=START - 17000, attempts=3)
    )
    notifier, sender = make_notifier(config, tokens, clock)
    assert notifier.load() == 1
    assert notifier.run_due() == 1
    assert sender.calls == []
    assert queue_files(config) == {}
    assert "older than push_give_up_after" in caplog.text


def test_an_untried_entry_absorbs_further_messages(
    config: Config, tokens: TokenStore, clock: FakeClock
) -> None:
    notifier, _unused = make_notifier(config, tokens, clock, *[500] * 10)
    notifier.enqueue(ADDRESS, TOKEN)
    notifier.enqueue(ADDRESS, TOKEN)
    # The same token of another account is another entry.
    notifier.enqueue(OTHER, TOKEN)
    assert len(queue_files(config)) == 2
    assert notifier.run_due() == 4
    assert [entry["attempts"] for entry in queue_files(config).values()] == [2, 2]
    # Once tried, an entry no longer stands for later messages.
    notifier.enqueue(ADDRESS, TOKEN)
    notifier.enqueue(ADDRESS, TOKEN)
    assert sorted(entry["attempts"] for entry in queue_files(config).values()) == [0, 2, 2]


def test_a_failed_save_of_a_retry_keeps_it_in_memory(
    config: Config,
    tokens: TokenStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier, sender = make_notifier(config, tokens, clock, 500)
    notifier.enqueue(ADDRESS, TOKEN)

    def disk_full(entry: QueueEntry) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(notifier.queue, "save", disk_full)
    assert notifier.run_due() == 2
    assert "cannot update push queue entry" in caplog.text
    assert len(sender.calls) == 2


def test_concurrency_must_be_positive(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, push_concurrency=0)
    with pytest.raises(ValueError, match="push_concurrency must be at least 1"):
        Notifier(config, TokenStore(config, clock), FakeSender(clock), clock)


# --- restart -----------------------------------------------------------------------------


def test_entries_of_one_instance_are_delivered_by_the_next(
    config: Config, tokens: TokenStore, clock: FakeClock
) -> None:
    before, _unused = make_notifier(config, tokens, clock, 500, 200, 500)
    before.enqueue(ADDRESS, TOKEN)
    before.enqueue(ADDRESS, TOKEN2)
    clock.now += 1
    assert before.run_due() == 3
    # One entry failed twice and waits for its 8 s delay, one was never tried.
    [waiting] = queue_files(config).values()
    assert (waiting["token"], waiting["attempts"], waiting["due"]) == (TOKEN, 2, START + 9)
    before.enqueue(ADDRESS, TOKEN2)
    del before

    after, sender = make_notifier(config, tokens, clock)
    assert after.load() == 2
    assert after.run_due() == 1
    assert sender.calls == [(START + 1, TOKEN2)]
    clock.now += 8
    assert after.run_due() == 1
    assert sender.calls[1:] == [(START + 9, TOKEN)]
    assert queue_files(config) == {}


def test_untried_entries_loaded_after_a_restart_still_absorb_messages(
    config: Config, tokens: TokenStore, clock: FakeClock
) -> None:
    first, _unused = make_notifier(config, tokens, clock)
    first.enqueue(ADDRESS, TOKEN)
    second, sender = make_notifier(config, tokens, clock)
    second.load()
    second.enqueue(ADDRESS, TOKEN)
    assert len(queue_files(config)) == 1
    second.run_due()
    assert sender.calls == [(START, TOKEN)]


# --- worker threads ----------------------------------------------------------------------


@pytest.fixture
def live_config(tmp_path: Path, gateway: Gateway) -> Config:
    return make_config(tmp_path, push_gateway_url=gateway.url)


def test_workers_send_within_milliseconds_of_enqueue(live_config: Config, gateway: Gateway) -> None:
    notifier = Notifier(live_config, TokenStore(live_config))
    notifier.start()
    try:
        started = time.monotonic()
        notifier.enqueue(ADDRESS, TOKEN)
        [received] = gateway.wait_for(1)
        elapsed = time.monotonic() - started
    finally:
        notifier.stop()
    assert received.body == TOKEN.encode()
    assert elapsed < 0.5
    assert queue_files(live_config) == {}


def test_start_delivers_what_the_previous_run_left(live_config: Config, gateway: Gateway) -> None:
    now = time.time()
    queue = PushQueue(live_config.push_queue_dir)
    for number in range(5):
        queue.save(QueueEntry(f"left-{number}", f"token-{number}", ADDRESS, now, now))
    notifier = Notifier(live_config, TokenStore(live_config))
    notifier.start()
    try:
        received = gateway.wait_for(5)
    finally:
        notifier.stop()
    assert sorted(request.body for request in received) == [
        f"token-{number}".encode() for number in range(5)
    ]
    assert queue_files(live_config) == {}


def test_workers_wait_for_a_retry_to_fall_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push, "RETRY_DELAYS", (0.3,))
    gateway = Gateway(500, 200)
    try:
        config = make_config(tmp_path, push_gateway_url=gateway.url)
        notifier = Notifier(config, TokenStore(config))
        notifier.start()
        try:
            notifier.enqueue(ADDRESS, TOKEN)
            first, second = gateway.wait_for(2)
        finally:
            notifier.stop()
    finally:
        gateway.stop()
    assert first.body == second.body == TOKEN.encode()
    assert second.at - first.at >= 0.3
    assert queue_files(config) == {}


def test_a_worker_survives_an_unexpected_error(
    config: Config, tokens: TokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    delivered = threading.Event()

    def sender(token: str) -> int:
        if token == "explodes":
            raise RuntimeError("bug in the sender")
        delivered.set()
        return 200

    notifier = Notifier(dataclasses.replace(config, push_concurrency=1), tokens, sender)
    notifier.start()
    try:
        notifier.enqueue(ADDRESS, "explodes")
        notifier.enqueue(ADDRESS, TOKEN)
        assert delivered.wait(TIMEOUT)
    finally:
        notifier.stop()
    assert "failed unexpectedly" in caplog.text


def test_stop_wakes_idle_workers_at_once(config: Config, tokens: TokenStore) -> None:
    notifier = Notifier(config, tokens, FakeSender(FakeClock()))
    notifier.start()
    assert notifier._idle_wait() == push.MAX_IDLE_WAIT
    started = time.monotonic()
    notifier.stop()
    assert time.monotonic() - started < 1
    assert not any(thread.name.startswith("push-") for thread in threading.enumerate())


def test_idle_wait_is_the_time_to_the_next_entry_but_bounded(
    config: Config, tokens: TokenStore, clock: FakeClock
) -> None:
    notifier, _unused = make_notifier(config, tokens, clock, 500)
    notifier.enqueue(ADDRESS, TOKEN)
    assert notifier._idle_wait() == 0
    clock.now -= 5
    assert notifier._idle_wait() == 5
    clock.now -= 3600
    assert notifier._idle_wait() == push.MAX_IDLE_WAIT


# --- the HTTP sender against a real server -----------------------------------------------


def test_sender_posts_exactly_the_token(gateway: Gateway) -> None:
    sender = HttpSender(gateway.url + "?app=dc")
    assert sender(TOKEN) == 200
    [received] = gateway.requests
    assert received.method == "POST"
    assert received.path == "/notify?app=dc"
    assert received.content_type == "application/octet-stream"
    assert received.body == TOKEN.encode()


def test_sender_returns_the_status() -> None:
    gateway = Gateway(410, 500, 202)
    try:
        sender = HttpSender(gateway.url)
        assert [sender(TOKEN) for _unused in range(3)] == [410, 500, 202]
    finally:
        gateway.stop()


def test_sender_keeps_the_connection_alive(gateway: Gateway) -> None:
    sender = HttpSender(gateway.url)
    sender(TOKEN)
    sender(TOKEN2)
    first, second = gateway.requests
    assert first.client_port == second.client_port


def test_sender_reconnects_when_the_server_does_not_keep_alive() -> None:
    gateway = Gateway(protocol="HTTP/1.0")
    try:
        sender = HttpSender(gateway.url)
        assert sender(TOKEN) == sender(TOKEN2) == 200
        first, second = gateway.requests
    finally:
        gateway.stop()
    assert first.client_port != second.client_port


def test_sender_retries_at_once_when_an_idle_connection_was_closed() -> None:
    gateway = Gateway(drop_idle=True)
    try:
        sender = HttpSender(gateway.url)
        assert sender(TOKEN) == 200
        time.sleep(0.1)
        assert sender(TOKEN2) == 200
        first, second = gateway.requests
    finally:
        gateway.stop()
    assert second.body == TOKEN2.encode()
    assert first.client_port != second.client_port


def test_sender_raises_when_nobody_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        HttpSender(f"http://127.0.0.1:{port}/notify")(TOKEN)


def test_sender_times_out_on_a_silent_server() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        sender = HttpSender(f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            sender(TOKEN)
        assert time.monotonic() - started < 2


def test_a_refused_connection_is_retried_by_the_notifier(tmp_path: Path, clock: FakeClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = make_config(tmp_path, push_gateway_url=f"http://127.0.0.1:{port}/notify")
    notifier = Notifier(config, TokenStore(config, clock), clock=clock)
    notifier.enqueue(ADDRESS, TOKEN)
    notifier.run_due()
    [entry] = queue_files(config).values()
    assert entry["attempts"] == 2


def test_notifier_with_a_real_gateway_retries_500_and_removes_gone_tokens(
    tmp_path: Path, clock: FakeClock
) -> None:
    gateway = Gateway(500, 200, 410)
    try:
        config = make_config(tmp_path, push_gateway_url=gateway.url)
        tokens = TokenStore(config, clock)
        tokens.add(ADDRESS, TOKEN)
        tokens.add(ADDRESS, TOKEN2)
        notifier = Notifier(config, tokens, clock=clock)
        notifier.enqueue(ADDRESS, TOKEN)
        assert notifier.run_due() == 2
        notifier.enqueue(ADDRESS, TOKEN2)
        assert notifier.run_due() == 1
    finally:
        gateway.stop()
    assert [request.body for request in gateway.requests] == [
        TOKEN.encode(),
        TOKEN.encode(),
        TOKEN2.encode(),
    ]
    assert tokens.live(ADDRESS) == [TOKEN]
    assert queue_files(config) == {}


@pytest.mark.parametrize("url", ["ftp://example.org/", "notify", "https:///path", ""])
def test_sender_refuses_urls_it_cannot_post_to(url: str) -> None:
    with pytest.raises(ValueError, match="push_gateway_url"):
        HttpSender(url)


def test_sender_uses_tls_for_https() -> None:
    sender = HttpSender("https://notifications.delta.chat/notify")
    connection = sender._connect()
    assert isinstance(connection, http.client.HTTPSConnection)
    assert (connection.host, connection.port) == ("notifications.delta.chat", 443)
    assert sender.target == "/notify"
