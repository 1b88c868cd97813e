"""The relay's metrics: what the services count, and what the exporter serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from chatrelay import auth, mailbox, metrics, push
from chatrelay.config import Config
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as prometheus_families
from relay_servers import Counted, free_port
from test_push import ADDRESS, TOKEN, TOKEN2, FakeClock, FakeSender

DOMAIN = "example.org"
DAY = 86400
NOON = 1_700_000_000 // DAY * DAY + DAY // 2
# What Dovecot 2.3's stats service answers for a metric with group_by.
DOVECOT = """\
# HELP dovecot_imap_command Total number of all events of this kind
# TYPE dovecot_imap_command counter
dovecot_imap_command_total{cmd_name="IDLE"} 4
dovecot_imap_command_total{cmd_name="SELECT"} 1
dovecot_imap_command_count 5
# HELP dovecot_imap_command_duration_seconds Total duration of all events of this kind
# TYPE dovecot_imap_command_duration_seconds counter
dovecot_imap_command_duration_seconds_total{cmd_name="IDLE"} 0.5
dovecot_imap_command_duration_seconds_total{cmd_name="SELECT"} 0.1
dovecot_imap_command_duration_seconds_sum 0.6
# EOF
"""


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(
        mail_domain=DOMAIN,
        mailboxes_dir=tmp_path / "mailboxes",
        push_queue_dir=tmp_path / "push",
        nocreate_file=tmp_path / "nocreate",
        dovecot_stats_port=free_port(),
    )


class Idle:
    load_1m = staticmethod(lambda: 0.0)
    available_memory = staticmethod(lambda: 2**40)
    free_disk = staticmethod(lambda path: 2**40)


def test_first_logins_count_created_accounts_and_refusals_by_rule(config):
    server = auth.AuthServer(config, Idle())
    counted = Counted()
    assert server.passdb(f"abcdefghi@{DOMAIN}", "long enough password")
    assert server.passdb(f"abcdefghi@{DOMAIN}", "long enough password")  # a second login
    assert server.passdb(f"short@{DOMAIN}", "long enough password") is None
    config.nocreate_file.touch()
    assert server.passdb(f"jklmnopqr@{DOMAIN}", "long enough password") is None
    assert counted.moved() == {
        "chatmail_accounts_created_total{}": 1,
        "chatmail_account_refusals_total{rule=invalid}": 1,
        "chatmail_account_refusals_total{rule=kill_switch}": 1,
    }


def test_push_notifications_count_each_outcome(config):
    clock = FakeClock()
    config.push_queue_dir.mkdir()
    tokens = push.TokenStore(config, clock)
    mailbox.create(config, ADDRESS, "{SHA512-CRYPT}x")
    tokens.add(ADDRESS, TOKEN)
    tokens.add(ADDRESS, TOKEN2)
    notifier = push.Notifier(config, tokens, FakeSender(clock, 410, 500, 500), clock)
    counted = Counted()
    assert notifier.notify(ADDRESS) == 2
    assert notifier.queue.length() == 2
    notifier.run_due()  # one token gone (410); the other fails twice (500), then waits
    clock.now += config.push_give_up_after
    notifier.run_due()  # too old now: dropped
    assert notifier.queue.length() == 0
    assert counted.moved() == {
        "chatmail_push_notifications_total{event=queued}": 2,
        "chatmail_push_notifications_total{event=token_gone}": 1,
        "chatmail_push_notifications_total{event=retried}": 2,
        "chatmail_push_notifications_total{event=dropped}": 1,
    }


def account(config: Config, name: str, last_login: float, messages: int = 0) -> None:
    mailbox.create(config, f"{name}@{DOMAIN}", "{SHA512-CRYPT}x")
    home = mailbox.directory(config, f"{name}@{DOMAIN}")
    for number in range(messages):
        (home / "cur").mkdir(exist_ok=True)
        (home / "cur" / f"{number}.mail").write_bytes(b"x" * 100)
    os.utime(home / mailbox.PASSWORD_FILE, (last_login, last_login))


def scrape(config: Config, **sources) -> dict[str, dict[tuple, float]]:
    """One scrape as the exporter answers it, parsed back: family -> labels -> value."""
    text = generate_latest(metrics.registry(config, clock=lambda: NOON, **sources)).decode()
    return {
        family.name: {tuple(sorted(x.labels.items())): x.value for x in family.samples}
        for family in prometheus_families(text)
    }


def queue_of(*messages: tuple[str, float]) -> str:
    return "\n".join(json.dumps({"queue_name": q, "arrival_time": t}) for q, t in messages)


def test_a_scrape_reads_accounts_queues_storage_and_dovecot(config):
    account(config, "todaylogs", NOON - DAY // 2)  # midnight today
    account(config, "lastweekx", NOON - 6 * DAY - DAY // 2, messages=2)
    account(config, "longagoxx", NOON - 30 * DAY, messages=1)
    (config.mailboxes_dir / f"nopasswd@{DOMAIN}").mkdir()  # not (or no longer) an account
    config.push_queue_dir.mkdir()
    (config.push_queue_dir / f"{'a' * 32}{push.ENTRY_SUFFIX}").write_text("{}")
    (config.push_queue_dir / f".{'b' * 32}{push.ENTRY_SUFFIX}.tmp").write_text("")
    queue = queue_of(("deferred", NOON - 600), ("deferred", NOON - 60), ("active", NOON - 1))
    seen = scrape(
        config,
        queue=lambda: metrics.postfix_queue(lambda: queue),
        dovecot=lambda url: metrics.without_group_totals(text_string_to_metric_families(DOVECOT)),
    )
    assert seen["chatmail_accounts"] == {(): 3}
    assert seen["chatmail_accounts_active"] == {(("days", "1"),): 1, (("days", "7"),): 2}
    assert seen["chatmail_storage_messages"] == {(): 3}
    assert seen["chatmail_storage_bytes"][()] >= 300
    assert seen["chatmail_push_queue_length"] == {(): 1}
    assert seen["chatmail_postfix_queue_messages"][(("queue", "deferred"),)] == 2
    assert seen["chatmail_postfix_queue_messages"][(("queue", "hold"),)] == 0
    assert seen["chatmail_postfix_queue_oldest_age_seconds"][(("queue", "deferred"),)] == 600
    assert seen["dovecot_imap_command"] == {
        (("cmd_name", "IDLE"),): 4,
        (("cmd_name", "SELECT"),): 1,
    }
    assert "dovecot_imap_command_count" not in seen  # the sum of the groups
    assert set(seen["chatmail_source_errors"].values()) == {0}


def test_a_source_that_fails_is_named_and_the_rest_still_arrives(config):
    def no_dovecot(url: str):
        raise ConnectionRefusedError(f"nothing at {url}")

    seen = scrape(config, queue=lambda: [], dovecot=no_dovecot)
    assert seen["chatmail_source_errors"][(("source", "dovecot"),)] == 1
    assert seen["chatmail_source_errors"][(("source", "postfix_queue"),)] == 0
    assert seen["chatmail_accounts"] == {(): 0}
    assert not any(name.startswith("dovecot_") for name in seen)


def test_storage_is_counted_at_most_once_per_interval(tmp_path):
    now = [0.0]
    report = metrics.StorageReport(tmp_path, interval=300, clock=lambda: now[0])
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "1").write_bytes(b"12345")
    assert report.figures() == (5, 1)
    (tmp_path / "new" / "2").write_bytes(b"12345")
    now[0] = 299.0
    assert report.figures() == (5, 1)
    now[0] = 300.0
    assert report.figures() == (10, 2)


def test_the_exporter_adds_up_the_counters_of_every_service_process(config, tmp_path):
    """Separate processes (and a restarted one) count into PROMETHEUS_MULTIPROC_DIR;
    the exporter, itself another process, serves their sum over HTTP."""
    chatrelay_dir = Path(metrics.__file__).parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": str(chatrelay_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"),
    }
    (tmp_path / "multiproc").mkdir()
    count = "from chatrelay import metrics; metrics.TURN_CREDENTIALS.inc({})"
    for amount in (2, 3):
        subprocess.run([sys.executable, "-c", count.format(amount)], env=env, check=True)
    settings = tmp_path / "relay.ini"
    settings.write_text(
        "[relay]\n"
        f"mail_domain = {DOMAIN}\nmailboxes_dir = {config.mailboxes_dir}\n"
        f"push_queue_dir = {config.push_queue_dir}\nmetrics_port = {free_port()}\n"
        f"dovecot_stats_port = {config.dovecot_stats_port}\n"
    )
    port = int(settings.read_text().split("metrics_port = ")[1].split()[0])
    exporter = subprocess.Popen(
        [sys.executable, "-m", "chatrelay.metrics", "--config", str(settings)], env=env
    )
    try:
        text = fetch(f"http://127.0.0.1:{port}/metrics")
    finally:
        exporter.terminate()
        exporter.wait(10)
    assert "chatmail_turn_credentials_total 5.0" in text.splitlines()
    assert 'chatmail_source_errors{source="dovecot"} 1.0' in text.splitlines()


def fetch(url: str, attempts: int = 100) -> str:
    for _attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answered at {url}")
