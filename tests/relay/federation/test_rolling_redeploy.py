"""A rolling re-deploy of both relays (site.yml with chatmail_serial=1) while they mail
each other loses no message.

The re-deploy raises the message size limit by one byte, a setting Postfix, Dovecot and the relay
services all read, so each relay reloads or restarts every mail daemon in its turn. Both
directions keep sending meanwhile, retrying a submission the relay could not take (as a
client does); every message a relay accepted must arrive, once.
"""

from __future__ import annotations

import email
import json
import os
import re
import smtplib
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from mailclient import pgp_mime, smtp_login, wait_for_messages

ROOT = Path(__file__).resolve().parents[3]
# Below the per-sender rate limit (60 a minute) whatever the pace of the run.
PAUSE = 1.2


def redeploy(inventory: str, message_size: int, log) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            inventory,
            "-e",
            json.dumps({"chatmail_serial": 1, "chatmail_max_message_size": message_size}),
            str(ROOT / "playbooks" / "site.yml"),
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "NO_COLOR": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def try_to_send(relay, sender, recipient: str, message: bytes) -> bool:
    try:
        smtp = smtp_login(relay.ip, *sender)
        try:
            smtp.sendmail(sender[0], [recipient], message)
        finally:
            smtp.close()
    except (OSError, smtplib.SMTPException):
        return False
    return True


def test_a_rolling_redeploy_loses_no_mail(relay1, relay2, gpg, tmp_path):
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    assert inventory, "MOLECULE_INVENTORY_FILE must name the scenario's inventory"
    flows = [
        (relay1, relay1.new_account(), relay2.new_account(), []),
        (relay2, relay2.new_account(), relay1.new_account(), []),
    ]
    payload = gpg.encrypt("during the re-deploy\n")
    # One more than now, whatever an earlier run left.
    limit = int(relay1.host.check_output("postconf -h message_size_limit"))
    retries = 0

    log = tmp_path / "site.log"
    with log.open("w") as out:
        run = redeploy(inventory, limit + 1, out)
    started = time.monotonic()
    while run.poll() is None:
        for relay, sender, recipient, accepted in flows:
            message = pgp_mime(sender[0], recipient[0], payload)
            if try_to_send(relay, sender, recipient[0], message):
                accepted.append(email.message_from_bytes(message)["Message-ID"])
            else:
                retries += 1
        time.sleep(PAUSE)
    output = log.read_text()
    print(
        f"re-deploy took {time.monotonic() - started:.0f} s; sent {[len(f[3]) for f in flows]},"
        f" {retries} submissions retried"
    )

    assert run.returncode == 0, output[-3000:]
    # One relay at a time: each play ran in two batches, relay1's before relay2's.
    recap = dict(re.findall(r"^(chatmail-\S+)\s*:.*?changed=(\d+)", output, re.MULTILINE))
    assert int(recap[relay1.container]) > 0 and int(recap[relay2.container]) > 0, recap
    assert output.count("PLAY [Set up Postfix, Dovecot") == 2
    for *_unused, accepted in flows:
        assert len(accepted) >= 10, "too little mail flowed during the re-deploy"
    for relay, _unused, recipient, accepted in flows:
        peer = relay2 if relay is relay1 else relay1
        messages = wait_for_messages(peer.ip, *recipient, count=len(accepted), timeout=120)
        received = Counter(email.message_from_bytes(m)["Message-ID"] for m in messages)
        assert sorted(received) == sorted(accepted)
        assert set(received.values()) == {1}, "some message arrived twice"
