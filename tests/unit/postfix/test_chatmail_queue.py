"""The queue report: Postfix's queue by destination domain and reason."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "postfix" / "files" / "chatmail-queue.py"
_spec = importlib.util.spec_from_file_location("chatmail_queue", SCRIPT)
queue = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(queue)

NOW = 1_800_000_000.0
REFUSED = "connect to nowhere.test[192.0.2.9]:25: Connection refused"


def message(queue_id, queue_name="deferred", age=60, recipients=()):
    return {
        "queue_name": queue_name,
        "queue_id": queue_id,
        "arrival_time": int(NOW - age),
        "message_size": 1000,
        "sender": "a@relay.test",
        "recipients": [
            {"address": address, **({"delay_reason": reason} if reason else {})}
            for address, reason in recipients
        ],
    }


def test_deferred_recipients_are_grouped_by_domain_and_reason_oldest_first():
    summary = queue.summarize(
        [
            message("A1", age=120, recipients=[("x@nowhere.test", REFUSED)]),
            message(
                "A2",
                age=7200,
                recipients=[("y@Nowhere.test", REFUSED), ("z@nowhere.test", REFUSED)],
            ),
            message("A3", age=30, recipients=[("u@slow.test", "lost connection")]),
            message("B1", queue_name="active", recipients=[("v@relay2.test", None)]),
        ],
        NOW,
    )
    assert summary["queues"] == {
        "maildrop": 0,
        "incoming": 0,
        "active": 1,
        "deferred": 3,
        "hold": 0,
        "corrupt": 0,
    }
    # Messages, not recipients: A2 counts once although two of its recipients wait.
    assert summary["deferred"] == [
        {"domain": "nowhere.test", "reason": REFUSED, "messages": 2, "oldest": 7200},
        {"domain": "slow.test", "reason": "lost connection", "messages": 1, "oldest": 30},
    ]


def test_one_message_waits_in_two_groups_when_its_domains_differ():
    summary = queue.summarize(
        [message("C1", recipients=[("a@one.test", "r1"), ("b@two.test", "r2")])], NOW
    )
    assert [(g["domain"], g["messages"]) for g in summary["deferred"]] == [
        ("one.test", 1),
        ("two.test", 1),
    ]


def test_a_recipient_without_a_reason_is_named_so():
    summary = queue.summarize([message("D1", recipients=[("a@one.test", None)])], NOW)
    assert summary["deferred"][0]["reason"] == "(no reason given)"


def test_the_report_has_one_line_per_group_with_count_and_age():
    summary = queue.summarize(
        [message("A1", age=7200, recipients=[("x@nowhere.test", REFUSED)])], NOW
    )
    lines = queue.report(summary)
    assert lines[0].startswith("queue: maildrop 0, incoming 0, active 0, deferred 1")
    assert lines[1].split() == ["domain", "messages", "oldest", "reason"]
    assert lines[2].split(None, 3) == ["nowhere.test", "1", "2h", REFUSED]


def test_an_empty_queue_says_so():
    assert queue.report(queue.summarize([], NOW))[1] == "no deferred mail"


def test_ages_are_short():
    assert [queue.age_text(s) for s in (5, 60, 3599, 3600, 86400 * 3)] == [
        "5s",
        "1m",
        "59m",
        "1h",
        "3d",
    ]


def test_json_output_holds_the_summary_and_the_report(monkeypatch, capsys):
    monkeypatch.setattr(
        queue, "read_queue", lambda: [message("A1", recipients=[("x@n.test", "r")])]
    )
    assert queue.main(["--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["queues"]["deferred"] == 1
    assert output["deferred"][0]["domain"] == "n.test"
    assert output["report"][-1].split(None, 3)[-1] == "r"


def test_a_queue_that_cannot_be_read_fails_naming_why(monkeypatch, capsys):
    def fail():
        raise FileNotFoundError("postqueue")

    monkeypatch.setattr(queue, "read_queue", fail)
    assert queue.main([]) == 1
    assert "cannot read Postfix's queue" in capsys.readouterr().err
