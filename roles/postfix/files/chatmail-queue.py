#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Postfix's queue of this relay, deferred mail grouped by destination domain and reason.

Installed by role postfix as /usr/local/sbin/chatmail-queue; playbooks/status.yml reads
its --json output (the summary, and the report's lines under "report"). It only reads
the queue (``postqueue -j``, one JSON object per message), so any user Postfix lets
list the queue may run it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")


def read_queue() -> list[dict[str, Any]]:
    """The messages in Postfix's queue, as ``postqueue -j`` lists them."""
    output = subprocess.run(["postqueue", "-j"], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def summarize(messages: Iterable[dict[str, Any]], now: float) -> dict[str, Any]:
    """Count the messages per queue and group deferred recipients by domain and reason.

    Each group holds the messages (not recipients) waiting for that domain with that
    reason and the age in seconds of the oldest; groups come oldest first.
    """
    counts = dict.fromkeys(QUEUES, 0)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for message in messages:
        queue = message.get("queue_name", "unknown")
        counts[queue] = counts.get(queue, 0) + 1
        if queue != "deferred":
            continue
        age = max(0, int(now - message.get("arrival_time", now)))
        for recipient in message.get("recipients", []):
            domain = recipient.get("address", "").rpartition("@")[2].lower() or "(none)"
            reason = recipient.get("delay_reason") or "(no reason given)"
            group = groups.setdefault(
                (domain, reason),
                {"domain": domain, "reason": reason, "queue_ids": set(), "oldest": 0},
            )
            group["queue_ids"].add(message.get("queue_id", ""))
            group["oldest"] = max(group["oldest"], age)
    deferred = [
        {
            "domain": group["domain"],
            "reason": group["reason"],
            "messages": len(group["queue_ids"]),
            "oldest": group["oldest"],
        }
        for group in groups.values()
    ]
    deferred.sort(key=lambda group: (-group["oldest"], group["domain"], group["reason"]))
    return {"queues": counts, "deferred": deferred}


def age_text(seconds: int) -> str:
    """A short age: 45s, 12m, 5h, 3d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def report(summary: dict[str, Any]) -> list[str]:
    """The summary as lines for an operator."""
    counts = summary["queues"]
    lines = ["queue: " + ", ".join(f"{name} {count}" for name, count in counts.items())]
    if not summary["deferred"]:
        lines.append("no deferred mail")
        return lines
    lines.append(f"{'domain':<30} {'messages':>8} {'oldest':>6}  reason")
    lines.extend(
        f"{group['domain']:<30} {group['messages']:>8} {age_text(group['oldest']):>6}"
        f"  {group['reason']}"
        for group in summary["deferred"]
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chatmail-queue",
        description="Postfix's queue: messages per queue, deferred mail by domain and reason.",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        messages = read_queue()
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        print(f"chatmail-queue: cannot read Postfix's queue: {detail}".rstrip(), file=sys.stderr)
        return 1
    summary = summarize(messages, time.time())
    if args.json:
        print(json.dumps({**summary, "report": report(summary)}))
    else:
        print("\n".join(report(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
