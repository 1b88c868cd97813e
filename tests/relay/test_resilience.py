"""A crash of a relay service loses no message."""

from __future__ import annotations

import smtplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mailclient import imap_login, new_credentials, pgp_mime, smtp_login, wait_for_messages

SENDERS = 10
PER_SENDER = 10  # within each sender's burst allowance


def send_with_retry(relay_ip, account, recipient, message, deadline):
    """Send as a mail client does: a temporary failure means try again."""
    while True:
        try:
            smtp = smtp_login(relay_ip, *account)
            try:
                smtp.sendmail(account[0], [recipient], message)
                return
            finally:
                smtp.close()
        except (smtplib.SMTPException, OSError) as error:
            code = getattr(error, "smtp_code", 0)
            if 500 <= code < 600 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def filter_restarts(host) -> int:
    out = host.run("systemctl show -p NRestarts --value chatmail-filter-outgoing.service")
    return int(out.stdout)


def test_killing_the_filter_during_a_burst_loses_nothing(relay_ip, domain, host, gpg):
    recipient = new_credentials(domain)
    imap_login(relay_ip, *recipient).logout()
    senders = [new_credentials(domain) for _unused in range(SENDERS)]
    for sender in senders:
        imap_login(relay_ip, *sender).logout()
    armored = gpg.encrypt("burst")
    jobs = []
    for number in range(SENDERS * PER_SENDER):
        sender = senders[number % SENDERS]
        message = pgp_mime(sender[0], recipient[0], armored).replace(
            b"Message-ID: <", f"Message-ID: <burst-{number:03d}.".encode(), 1
        )
        jobs.append((sender, message))

    restarts_before = filter_restarts(host)
    deadline = time.monotonic() + 120
    killer = threading.Timer(
        0.5, lambda: host.run("systemctl kill --signal=KILL chatmail-filter-outgoing.service")
    )
    killer.start()
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        list(
            pool.map(
                lambda job: send_with_retry(relay_ip, job[0], recipient[0], job[1], deadline),
                jobs,
            )
        )
    killer.join()
    assert filter_restarts(host) > restarts_before, "the filter was not killed during the burst"

    delivered = wait_for_messages(relay_ip, *recipient, count=len(jobs), timeout=60)
    numbers = {
        int(raw.split(b"Message-ID: <burst-", 1)[1][:3])
        for raw in delivered
        if b"Message-ID: <burst-" in raw
    }
    assert numbers == set(range(len(jobs)))
