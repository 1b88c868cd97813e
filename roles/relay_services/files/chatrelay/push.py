"""Push notifications: the accounts' device tokens, a durable queue and its notifier.

A client stores an opaque device token (encrypted for the notification gateway; the
relay cannot read it) per device. Each new message queues one notification per live
token of the recipient; worker threads POST each token to the gateway and retry with
growing delays until it answers. The queue is a directory with one fsynced file per
pending notification, so a notification the relay has accepted survives a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import heapq
import http.client
import itertools
import json
import logging
import os
import re
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from . import mailbox, metrics
from .config import Config

log = logging.getLogger("chatrelay.push")

DAY = 86400
# Enough for every device of a person; a client setting tokens in a loop cannot make
# each incoming message fan out into thousands of requests.
MAX_TOKENS_PER_ADDRESS = 20
# Printable ASCII without spaces: lookups return the tokens space-separated.
_TOKEN = re.compile(r"[!-~]{1,8192}")

# Delay before attempt n+2 after attempt n+1 failed; the last one repeats.
RETRY_DELAYS = (0, 8, 64, 512, 4096)
GATEWAY_TIMEOUT = 10.0
# Workers wake at least this often, so a jump of the wall clock delays nothing for long.
MAX_IDLE_WAIT = 60.0
ENTRY_SUFFIX = ".json"

Clock = Callable[[], float]
# Sends one token to the gateway; returns the HTTP status, raises OSError or
# http.client.HTTPException if no answer came.
Sender = Callable[[str], int]


def is_valid_token(token: str) -> bool:
    return bool(_TOKEN.fullmatch(token))


def token_id(token: str) -> str:
    """A short hash that tells tokens apart in logs; tokens themselves are secrets."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace path with data so that a crash leaves the old or the new file, fsynced."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


class TokenStore:
    """Device tokens per account, in `<account dir>/devicetokens`.

    The file is a JSON object mapping each token to the Unix time it was last set. A
    token expires push_token_expiry_days after that. Writers hold an exclusive flock
    on the account directory, so concurrent changes (dict requests run in threads, a
    410 from the gateway in a worker) never lose one another's tokens; readers need
    no lock because every write is an atomic rename.
    """

    def __init__(self, config: Config, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        self.lifetime = config.push_token_expiry_days * DAY

    def path(self, address: str) -> Path:
        return mailbox.token_file(self.config, address)

    def live(self, address: str) -> list[str]:
        """The address's unexpired tokens, the longest-standing first."""
        tokens = self._live_tokens(self._read(address))
        return sorted(tokens, key=lambda token: (tokens[token], token))

    def add(self, address: str, token: str) -> None:
        """Store token, or refresh its time if it is already stored."""
        if not is_valid_token(token):
            raise ValueError(f"malformed device token for {address} ({token_id(token)})")
        with self._locked(address) as tokens:
            tokens[token] = int(self.clock())
            # Oldest first; the token just set goes last even among equally old ones.
            by_age = sorted(tokens, key=lambda other: (tokens[other], other == token))
            for oldest in by_age[:-MAX_TOKENS_PER_ADDRESS]:
                log.info("dropping oldest device token %s of %s", token_id(oldest), address)
                del tokens[oldest]

    def remove(self, address: str, token: str) -> None:
        with self._locked(address) as tokens:
            tokens.pop(token, None)

    def clear(self, address: str) -> None:
        with self._locked(address) as tokens:
            tokens.clear()

    def _live_tokens(self, tokens: dict[str, int]) -> dict[str, int]:
        oldest_live = self.clock() - self.lifetime
        return {token: set_at for token, set_at in tokens.items() if set_at > oldest_live}

    def _read(self, address: str) -> dict[str, int]:
        path = self.path(address)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            # Unreadable tokens are lost either way; the clients set them again.
            log.error("ignoring corrupt token file %s: %s", path, exc)
            return {}
        if not isinstance(data, dict):
            log.error("ignoring token file %s: not a JSON object", path)
            return {}
        return {
            token: set_at
            for token, set_at in data.items()
            if isinstance(set_at, int) and is_valid_token(token)
        }

    @contextlib.contextmanager
    def _locked(self, address: str) -> Iterator[dict[str, int]]:
        """Yield the address's live tokens to change in place; store them afterwards."""
        path = self.path(address)
        # Opening the directory fails if the account does not exist, as it should:
        # tokens never create an account directory.
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            before = self._read(address)
            tokens = self._live_tokens(before)
            yield tokens
            if tokens == before:
                return
            if tokens:
                write_atomically(path, json.dumps(tokens, sort_keys=True).encode() + b"\n")
            else:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)


@dataclass
class QueueEntry:
    """One pending notification; its file is `<id>.json` holding all other fields."""

    id: str
    token: str
    address: str
    # Unix times: when the message came in, and when the next attempt is due.
    enqueued: float
    due: float
    attempts: int = 0

    def to_json(self) -> bytes:
        fields = asdict(self)
        del fields["id"]
        return json.dumps(fields, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, entry_id: str, data: bytes) -> QueueEntry:
        fields = json.loads(data)
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        entry = cls(
            id=entry_id,
            token=fields["token"],
            address=fields["address"],
            enqueued=float(fields["enqueued"]),
            due=float(fields["due"]),
            attempts=int(fields["attempts"]),
        )
        if not isinstance(entry.token, str) or not isinstance(entry.address, str):
            raise ValueError("token and address must be strings")
        return entry


class PushQueue:
    """The queue directory: one file per pending notification, each written durably."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, entry: QueueEntry) -> Path:
        return self.directory / (entry.id + ENTRY_SUFFIX)

    def save(self, entry: QueueEntry) -> None:
        """Store entry; once this returns, it survives a crash."""
        write_atomically(self.path(entry), entry.to_json())

    def delete(self, entry: QueueEntry) -> None:
        # No directory fsync: should a crash undo the unlink, one notification is sent
        # twice, which costs the device a wake-up and nothing else.
        self.path(entry).unlink(missing_ok=True)

    def length(self) -> int:
        """How many entries wait (without reading them)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return 0
        # Names starting with "." are writes in progress (write_atomically).
        return sum(not name.startswith(".") and name.endswith(ENTRY_SUFFIX) for name in names)

    def load(self) -> list[QueueEntry]:
        """Every stored entry; clears what a crash left half-written and drops garbage."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        entries = []
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith("."):
                # A temporary file whose rename never happened: a new entry that was
                # never acknowledged, or an update whose previous version is still here.
                path.unlink(missing_ok=True)
                continue
            if path.suffix != ENTRY_SUFFIX:
                log.warning("ignoring unexpected file %s in the push queue", path)
                continue
            try:
                entries.append(QueueEntry.from_json(path.stem, path.read_bytes()))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("dropping unreadable push queue entry %s: %s", path, exc)
                path.unlink(missing_ok=True)
        return entries


class HttpSender:
    """POSTs a token as the raw request body; one kept-alive connection per thread."""

    def __init__(self, url: str, timeout: float = GATEWAY_TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"push_gateway_url {url!r} is not an http(s) URL")
        self.host = parts.hostname
        self.port = parts.port
        self.target = parts.path or "/"
        if parts.query:
            self.target += "?" + parts.query
        self.timeout = timeout
        self.context = ssl.create_default_context() if parts.scheme == "https" else None
        self._local = threading.local()

    def __call__(self, token: str) -> int:
        kept: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if kept is not None:
            try:
                return self._post(kept, token)
            except (ConnectionResetError, BrokenPipeError):
                # The gateway closed the idle connection meanwhile: that deserves one
                # more try on a fresh connection at once, not a retry delay.
                pass
        return self._post(self._connect(), token)

    def _post(self, connection: http.client.HTTPConnection, token: str) -> int:
        try:
            connection.request(
                "POST",
                self.target,
                body=token.encode(),
                headers={"Content-Type": "application/octet-stream"},
            )
            response = connection.getresponse()
            response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._local.connection = connection
        return response.status

    def _connect(self) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


class Notifier:
    """Queues notifications for the devices of an account and delivers them.

    Entries wait in a heap ordered by due time; enqueue wakes a worker at once, so a
    notification leaves within milliseconds of the delivery that caused it. Outcomes:
    2xx removes the entry, 410 (the gateway says the token is dead) also removes the
    token, anything else retries after RETRY_DELAYS until push_give_up_after seconds
    have passed since the message came in.

    A token that already has a pending entry nobody has tried to send yet gets no
    second one: that entry wakes the device for both messages. Once it has been tried,
    a new message queues a new entry.
    """

    def __init__(
        self,
        config: Config,
        tokens: TokenStore,
        sender: Sender | None = None,
        clock: Clock = time.time,
    ) -> None:
        if config.push_concurrency < 1:
            raise ValueError(f"push_concurrency must be at least 1, not {config.push_concurrency}")
        self.tokens = tokens
        self.queue = PushQueue(config.push_queue_dir)
        self.sender = sender or HttpSender(config.push_gateway_url)
        self.clock = clock
        self.concurrency = config.push_concurrency
        self.give_up_after = config.push_give_up_after
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, QueueEntry]] = []
        self._order = itertools.count()
        # (address, token) -> its pending entry that has not been attempted yet.
        self._untried: dict[tuple[str, str], QueueEntry] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # --- queueing -----------------------------------------------------------------------

    def notify(self, address: str) -> int:
        """Queue a notification for each live token of address; return how many."""
        count = 0
        for token in self.tokens.live(address):
            self.enqueue(address, token)
            count += 1
        return count

    def enqueue(self, address: str, token: str) -> None:
        """Queue one notification durably; when this returns it is on disk."""
        with self._cond:
            if (address, token) in self._untried:
                return
        now = self.clock()
        entry = QueueEntry(secrets.token_hex(16), token, address, enqueued=now, due=now)
        self.queue.save(entry)
        metrics.PUSH_NOTIFICATIONS.labels("queued").inc()
        self._schedule(entry)

    def next_due(self) -> float | None:
        """When the earliest waiting entry is due (entries being sent do not count)."""
        with self._cond:
            return self._heap[0][0] if self._heap else None

    def load(self) -> int:
        """Schedule the entries a previous run left in the queue; return how many."""
        entries = self.queue.load()
        for entry in entries:
            self._schedule(entry)
        if entries:
            log.info("resuming %d pending push notifications", len(entries))
        return len(entries)

    def _schedule(self, entry: QueueEntry) -> None:
        with self._cond:
            heapq.heappush(self._heap, (entry.due, next(self._order), entry))
            if entry.attempts == 0:
                self._untried.setdefault((entry.address, entry.token), entry)
            self._cond.notify()

    def _take_due(self) -> QueueEntry | None:
        with self._cond:
            if not self._heap or self._heap[0][0] > self.clock():
                return None
            entry = heapq.heappop(self._heap)[2]
            key = (entry.address, entry.token)
            if self._untried.get(key) is entry:
                del self._untried[key]
            return entry

    # --- delivering ---------------------------------------------------------------------

    def run_due(self) -> int:
        """Attempt every entry that is due, in this thread; return how many attempts."""
        count = 0
        while (entry := self._take_due()) is not None:
            self.attempt(entry)
            count += 1
        return count

    def attempt(self, entry: QueueEntry) -> None:
        """Send entry once and act on the outcome."""
        tag = f"push {token_id(entry.token)} (attempt {entry.attempts + 1})"
        if self.clock() >= entry.enqueued + self.give_up_after:
            self._give_up(entry, tag, "it is older than push_give_up_after")
            return
        try:
            status = self.sender(entry.token)
        except (OSError, http.client.HTTPException) as exc:
            self._retry(entry, tag, f"{type(exc).__name__}: {exc}")
            return
        if 200 <= status < 300:
            log.info("%s: delivered (%d)", tag, status)
            metrics.PUSH_NOTIFICATIONS.labels("delivered").inc()
            self.queue.delete(entry)
        elif status == 410:
            log.info("%s: gateway says the token is gone (410); removing it", tag)
            metrics.PUSH_NOTIFICATIONS.labels("token_gone").inc()
            self._forget_token(entry)
            self.queue.delete(entry)
        else:
            self._retry(entry, tag, f"HTTP status {status}")

    def _retry(self, entry: QueueEntry, tag: str, reason: str) -> None:
        now = self.clock()
        delay = RETRY_DELAYS[min(entry.attempts, len(RETRY_DELAYS) - 1)]
        entry.attempts += 1
        if now + delay >= entry.enqueued + self.give_up_after:
            self._give_up(entry, tag, reason)
            return
        entry.due = now + delay
        metrics.PUSH_NOTIFICATIONS.labels("retried").inc()
        log.warning("%s failed: %s; next attempt in %d s", tag, reason, delay)
        try:
            self.queue.save(entry)
        except OSError as exc:
            # The old file stays; after a restart it is retried sooner, which is harmless.
            log.error("cannot update push queue entry %s: %s", entry.id, exc)
        self._schedule(entry)

    def _give_up(self, entry: QueueEntry, tag: str, reason: str) -> None:
        log.warning("%s failed: %s; giving up after %d attempts", tag, reason, entry.attempts)
        metrics.PUSH_NOTIFICATIONS.labels("dropped").inc()
        self.queue.delete(entry)

    def _forget_token(self, entry: QueueEntry) -> None:
        try:
            self.tokens.remove(entry.address, entry.token)
        except OSError as exc:
            # The account may be gone; the entry is done with either way.
            log.warning("cannot remove dead token of %s: %s", entry.address, exc)

    # --- worker threads -----------------------------------------------------------------

    def start(self) -> None:
        """Pick up what an earlier run left, then start the worker threads."""
        self.load()
        self._stopping = False
        for number in range(self.concurrency):
            thread = threading.Thread(target=self._work, name=f"push-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = GATEWAY_TIMEOUT * 2) -> None:
        """Stop the workers after their current attempt; pending entries stay on disk."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _work(self) -> None:
        while True:
            with self._cond:
                while (entry := self._take_due()) is None:
                    if self._stopping:
                        return
                    self._cond.wait(self._idle_wait())
            try:
                self.attempt(entry)
            except Exception:
                # A worker must survive anything, or pushes silently stop for good.
                log.exception("push attempt for entry %s failed unexpectedly", entry.id)

    def _idle_wait(self) -> float:
        due = self.next_due()
        if due is None:
            return MAX_IDLE_WAIT
        return min(max(due - self.clock(), 0.0), MAX_IDLE_WAIT)
