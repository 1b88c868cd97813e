"""A peer that is away for a minute: its mail waits in the sender's queue, then arrives once.

relay2 drops off the network (its link goes down, as when the host is switched off; its
address stays its own, so DNS stays right) while relay1 accepts 50 messages for it.
"""

from __future__ import annotations

import email
import json
import time
from collections import Counter

from mailclient import pgp_mime, smtp_login, wait_for_messages

MESSAGES = 50
BURST = 10  # what one sender may submit at once (the relay's default rate limit)
OUTAGE = 60.0


def queued_for(relay, domain: str) -> int:
    """How many messages relay1's Postfix holds for the domain."""
    out = relay.host.run("postqueue -j").stdout
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    return sum(
        1
        for entry in entries
        if any(r["address"].endswith("@" + domain) for r in entry.get("recipients", []))
    )


def test_mail_sent_while_the_peer_is_down_arrives_once_it_is_back(relay1, relay2, gpg):
    recipient = relay2.new_account()
    senders = [relay1.new_account() for _unused in range(MESSAGES // BURST)]
    payload = gpg.encrypt("while you were away\n")
    gateway = relay2.host.run("ip -4 route show default").stdout.split()[2]
    sent_ids = []

    relay2.host.run_expect([0], "ip link set eth0 down")
    down = time.monotonic()
    try:
        for sender in senders:
            smtp = smtp_login(relay1.ip, *sender)
            for _unused in range(BURST):
                message = pgp_mime(sender[0], recipient[0], payload)
                sent_ids.append(email.message_from_bytes(message)["Message-ID"])
                smtp.sendmail(sender[0], [recipient[0]], message)
            smtp.quit()
        time.sleep(max(0.0, OUTAGE - 5 - (time.monotonic() - down)))
        waiting = queued_for(relay1, relay2.domain)
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
    finally:
        relay2.host.run("ip link set eth0 up")
        relay2.host.run(f"ip route replace default via {gateway}")
    back = time.monotonic()

    assert waiting == MESSAGES, "relay1 did not hold the mail while relay2 was away"
    messages = wait_for_messages(relay2.ip, *recipient, count=MESSAGES, timeout=90)
    print(f"all {len(messages)} arrived {time.monotonic() - back:.1f} s after relay2 came back")
    received = Counter(email.message_from_bytes(m)["Message-ID"] for m in messages)
    assert sorted(received) == sorted(sent_ids)
    assert set(received.values()) == {1}, "some message arrived twice"
