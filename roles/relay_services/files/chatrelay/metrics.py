"""The relay's metrics: what each service counts, and the exporter that serves them.

Every service counts its own events in the counters defined here. The services are
separate processes, so prometheus_client keeps each process's values in files below
PROMETHEUS_MULTIPROC_DIR (their units set it; a counter of a restarted service keeps
counting from the files of its earlier process). The exporter,

    python3 -m chatrelay.metrics --config /etc/chatmail/relay.ini

adds those up on each scrape of GET /metrics, together with what it reads at that
moment (accounts, Postfix's and the push queue, storage) and Dovecot's own OpenMetrics
from its stats service, and answers in the Prometheus text format. The list of
metrics, with their meaning, is in the role's README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from chatrelay import config as relay_config
from chatrelay import mailbox, push, systemd

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("chatrelay.metrics")

LISTEN_HOST = "127.0.0.1"
DAY = 86400
# Active accounts: a login on one of the last N UTC days, today included (the relay
# keeps only the day of the last login).
ACTIVE_WITHIN_DAYS = (1, 7)
POSTFIX_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
SOURCE_TIMEOUT = 5.0

# --- what the services count ----------------------------------------------------------

FILTERED = Counter(
    "chatmail_filter_messages",
    "Messages the encryption filter decided on. direction: outgoing (submitted) or incoming"
    " (from other servers); via: smtp or https (/mxdeliv); result: accepted or refused;"
    " rule: what decided (accepted: encrypted, securejoin, autocrypt_setup,"
    " mailer_daemon, cleartext_allowed, repeat; refused: encryption_needed, dkim,"
    " dkim_tempfail, size, rate_limit, from_mismatch, bad_sender, bad_envelope,"
    " reinjection).",
    ["direction", "via", "result", "rule"],
    registry=None,
)
REMOTE_DELIVERIES = Counter(
    "chatmail_remote_deliveries",
    "Recipients at other domains the delivery service finished an attempt for. channel:"
    " https, smtp, dns (the domain's DNS answered for it) or none (no MX host answered);"
    " result: delivered, deferred or bounced; code: the SMTP reply code Postfix was given.",
    ["channel", "result", "code"],
    registry=None,
)
ACCOUNTS_CREATED = Counter(
    "chatmail_accounts_created", "Accounts created on their first login.", registry=None
)
ACCOUNT_REFUSALS = Counter(
    "chatmail_account_refusals",
    "First logins of an unknown address that created no account. rule: invalid (address,"
    " password), closed (chatmail_registration), not_invited (invite mode, an address /new"
    " did not hand out), kill_switch (the nocreate file) or system_limits (load, memory,"
    " disk).",
    ["rule"],
    registry=None,
)
PUSH_NOTIFICATIONS = Counter(
    "chatmail_push_notifications",
    "Push notifications to devices. event: queued, delivered, retried, dropped (given up"
    " after push_give_up_after) or token_gone (the gateway answered 410).",
    ["event"],
    registry=None,
)
TURN_CREDENTIALS = Counter(
    "chatmail_turn_credentials", "TURN credentials handed out over IMAP metadata.", registry=None
)
# In no registry: `python3 -m chatrelay.metrics` runs this module a second time as
# __main__, and its counters would clash with the imported module's.
COUNTERS = (
    FILTERED,
    REMOTE_DELIVERIES,
    ACCOUNTS_CREATED,
    ACCOUNT_REFUSALS,
    PUSH_NOTIFICATIONS,
    TURN_CREDENTIALS,
)


def delivery_result(code: int) -> str:
    """What an SMTP reply code means for the message: delivered, deferred or bounced."""
    return {2: "delivered", 4: "deferred"}.get(code // 100, "bounced")


# --- what the exporter reads at scrape time ------------------------------------------


def gauge(
    name: str, documentation: str, value: float | None = None, labels: Iterable[str] = ()
) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value, labels=list(labels) or None)


class StorageReport:
    """Bytes and messages below the mailboxes directory, counted at most every interval
    seconds (walking every Maildir on each scrape would cost a big relay too much)."""

    def __init__(self, root: Path, interval: float, clock: Callable[[], float] = time.monotonic):
        self.root = root
        self.interval = interval
        self.clock = clock
        self._taken: float | None = None
        self._figures = (0, 0)

    def figures(self) -> tuple[int, int]:
        now = self.clock()
        if self._taken is None or now - self._taken >= self.interval:
            self._figures = self.count()
            self._taken = now
        return self._figures

    def count(self) -> tuple[int, int]:
        size = messages = 0
        for directory, _subdirs, names in os.walk(self.root):
            in_maildir = os.path.basename(directory) in ("cur", "new")
            for name in names:
                try:
                    size += os.lstat(os.path.join(directory, name)).st_size
                except FileNotFoundError:
                    continue  # expunged meanwhile
                messages += in_maildir
        return size, messages


def postfix_queue(run: Callable[..., str] | None = None) -> list[dict]:
    """Postfix's queue as `postqueue -j` reports it, one dict per message."""
    run = run or _run_postqueue
    return [json.loads(line) for line in run().splitlines() if line.strip()]


def _run_postqueue() -> str:
    return subprocess.run(
        ["postqueue", "-j"], check=True, capture_output=True, text=True, timeout=SOURCE_TIMEOUT
    ).stdout


def dovecot_families(url: str) -> list[Metric]:
    """Dovecot's own metrics from its stats service (OpenMetrics)."""
    with urllib.request.urlopen(url, timeout=SOURCE_TIMEOUT) as answer:
        text = answer.read().decode("utf-8")
    return without_group_totals(text_string_to_metric_families(text))


def without_group_totals(families: Iterable[Metric]) -> list[Metric]:
    """Dovecot's families, less the sum over all groups it adds to a group_by counter
    (`<name>_count`, `<name>_sum`: no counter samples, and a sum the labelled samples
    already give)."""
    families = list(families)
    counters = {family.name for family in families if family.type == "counter"}
    return [
        family
        for family in families
        if not (family.type == "unknown" and family.name.rpartition("_")[0] in counters)
    ]


class RelayCollector:
    """The gauges read at scrape time, and Dovecot's metrics passed through.

    A source that cannot be read is left out of that scrape and shows as 1 on
    chatmail_source_errors{source=...}, so the rest still arrives and an alert sees it.
    """

    def __init__(
        self,
        config: relay_config.Config,
        *,
        queue: Callable[[], list[dict]] = postfix_queue,
        dovecot: Callable[[str], list[Metric]] = dovecot_families,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.queue = queue
        self.dovecot = dovecot
        self.clock = clock
        self.storage = StorageReport(config.mailboxes_dir, config.metrics_storage_interval)
        self.push_queue = push.PushQueue(config.push_queue_dir)

    def collect(self) -> Iterator[Metric]:
        errors = gauge(
            "chatmail_source_errors",
            "1 if the exporter could not read this source on this scrape (its metrics are"
            " missing from it), else 0.",
            labels=["source"],
        )
        for source, read in (
            ("accounts", self._accounts),
            ("storage", self._storage),
            ("push_queue", self._push_queue),
            ("postfix_queue", self._postfix_queue),
            ("dovecot", self._dovecot),
        ):
            try:
                families = list(read())
            except Exception as exc:  # a source's failure must not empty the scrape
                log.warning("cannot read %s: %s: %s", source, type(exc).__name__, exc)
                errors.add_metric([source], 1)
                continue
            errors.add_metric([source], 0)
            yield from families
        yield errors

    def _accounts(self) -> Iterable[Metric]:
        today = self.clock() // DAY * DAY
        logins = [mailbox.last_login(home) for home in mailbox.directories(self.config)]
        logins = [day for day in logins if day is not None]
        yield gauge("chatmail_accounts", "Accounts on the relay.", len(logins))
        active = gauge(
            "chatmail_accounts_active",
            "Accounts whose last login was on one of the last N UTC days, today included.",
            labels=["days"],
        )
        for days in ACTIVE_WITHIN_DAYS:
            since = today - (days - 1) * DAY
            active.add_metric([str(days)], sum(day >= since for day in logins))
        yield active

    def _storage(self) -> Iterable[Metric]:
        size, messages = self.storage.figures()
        yield gauge(
            "chatmail_storage_bytes",
            "Bytes of all files below the mailboxes directory (mail, indexes, account files);"
            f" counted at most every {self.config.metrics_storage_interval} s.",
            size,
        )
        yield gauge(
            "chatmail_storage_messages",
            "Messages in all mailboxes (files in Maildir cur/ and new/); counted with"
            " chatmail_storage_bytes.",
            messages,
        )

    def _push_queue(self) -> Iterable[Metric]:
        yield gauge(
            "chatmail_push_queue_length",
            "Push notifications waiting to be sent or retried.",
            self.push_queue.length(),
        )

    def _postfix_queue(self) -> Iterable[Metric]:
        now = self.clock()
        counts = dict.fromkeys(POSTFIX_QUEUES, 0)
        oldest: dict[str, float] = {}
        for message in self.queue():
            name = message.get("queue_name", "")
            counts[name] = counts.get(name, 0) + 1
            arrival = float(message.get("arrival_time", now))
            oldest[name] = min(oldest.get(name, arrival), arrival)
        size = gauge(
            "chatmail_postfix_queue_messages", "Messages in Postfix's queue.", labels=["queue"]
        )
        age = gauge(
            "chatmail_postfix_queue_oldest_age_seconds",
            "Age of the oldest message in this Postfix queue (0 when it is empty).",
            labels=["queue"],
        )
        for name, count in counts.items():
            size.add_metric([name], count)
            age.add_metric([name], max(0.0, now - oldest[name]) if name in oldest else 0.0)
        yield size
        yield age

    def _dovecot(self) -> Iterable[Metric]:
        return self.dovecot(f"http://127.0.0.1:{self.config.dovecot_stats_port}/metrics")


class _ThisProcess:
    """The services' counters as this process holds them: the exporter without
    PROMETHEUS_MULTIPROC_DIR (tests, a service run by hand) serves its own."""

    def collect(self) -> Iterator[Metric]:
        for counter in COUNTERS:
            yield from counter.collect()


def registry(config: relay_config.Config, **sources) -> CollectorRegistry:
    """Everything one scrape shows: the services' counters and the scrape-time gauges."""
    collected = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(collected)
    else:
        collected.register(_ThisProcess())
    collected.register(RelayCollector(config, **sources))
    return collected


def application(collected: CollectorRegistry) -> web.Application:
    # Imported here: every service imports this module for its counters, only the
    # exporter serves HTTP.
    from aiohttp import web

    async def metrics(request: web.Request) -> web.Response:
        # Reading the sources blocks (files, postqueue, Dovecot): off the event loop.
        body = await asyncio.to_thread(generate_latest, collected)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def serve(config: relay_config.Config, sock: socket.socket) -> None:
    from aiohttp import web

    runner = web.AppRunner(application(registry(config)), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    log.info("metrics ready on port %d", config.metrics_port)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 -m chatrelay.metrics",
        description="Serves the relay's metrics in the Prometheus text format at /metrics.",
    )
    parser.add_argument("--config", type=Path, default=relay_config.DEFAULT_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    config = relay_config.load(args.config)
    sock = systemd.tcp_listener(LISTEN_HOST, config.metrics_port)
    asyncio.run(serve(config, sock))


if __name__ == "__main__":
    main()
