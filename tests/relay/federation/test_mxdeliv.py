"""HTTPS delivery between the relays, POST /mxdeliv (SPEC section 12).

Port 25 blocked between the relays (a packet filter in their network namespaces, as a
provider's block would be): mail flows both ways over HTTPS. Requests that break the
rules get the documented refusal and queue nothing. A killed delivery service loses and
duplicates nothing. With /mxdeliv switched off at relay2 (the documented setting,
deployed by web.yml), relay1 falls back to SMTP. This module runs after the other mail
tests of the scenario: the fallback leaves relay1 preferring SMTP for relay2 until its
delivery service restarts, which the last test does.
"""

from __future__ import annotations

import contextlib
import email
import http.client
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter

import pytest
from mailclient import cleartext_message, pgp_mime, smtp_login, submit, wait_for_messages
from metricsclient import filtered, moved, remote_deliveries, scrape
from testbed import playbook

MESSAGES = 50
BURST = 10  # what one sender may submit at once (the relay's default rate limit)


def _pid(container: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@contextlib.contextmanager
def port_25_blocked(*pairs):
    """Each (relay, peer): the relay's connections to the peer's port 25 are refused."""
    rules = [
        (
            _pid(relay.container),
            [
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                peer.ip,
                "--dport",
                "25",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        )
        for relay, peer in pairs
    ]
    for pid, rule in rules:
        subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        for pid, rule in rules:
            subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-D", *rule], check=False)


def reaches(relay, peer, port: int) -> bool:
    return relay.host.run(f"timeout 3 bash -c '</dev/tcp/{peer.ip}/{port}'").rc == 0


def wait_for_log(relay, since: float, unit: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := relay.journal(since, unit)):
        assert time.monotonic() < deadline, f"{unit} did not log {text!r}:\n{log}"
        time.sleep(0.5)
    return log


def test_with_port_25_blocked_mail_flows_both_ways_over_https(relay1, relay2, gpg):
    with port_25_blocked((relay1, relay2), (relay2, relay1)):
        assert not reaches(relay1, relay2, 25) and not reaches(relay2, relay1, 25)
        assert reaches(relay1, relay2, 443)
        for sender_relay, recipient_relay in ((relay1, relay2), (relay2, relay1)):
            since = time.time() - 1
            sender, recipient = sender_relay.new_account(), recipient_relay.new_account()
            sent_before, received_before = scrape(sender_relay.host), scrape(recipient_relay.host)
            armored = gpg.encrypt("port 25 is blocked\n")
            message = pgp_mime(sender[0], recipient[0], armored)
            assert submit(sender_relay.ip, sender, recipient[0], message)[0] == {}
            [delivered] = wait_for_messages(recipient_relay.ip, *recipient, count=1, timeout=30)
            assert armored.strip().splitlines()[3].encode() in delivered
            domain = recipient_relay.domain
            wait_for_log(sender_relay, since, "chatmail-delivery", f"{domain}: 1x 250 via https")
            # Each relay's metrics count the message once, on its own side of the hop.
            over_https = remote_deliveries("https", "delivered", 250)
            assert moved(sent_before, scrape(sender_relay.host), [over_https]) == {over_https: 1}
            accepted = filtered("incoming", "accepted", "encrypted", via="https")
            assert moved(received_before, scrape(recipient_relay.host), [accepted]) == {accepted: 1}


# --- requests that break the rules -------------------------------------------------


def post(relay, body: bytes, headers: dict | list, method: str = "POST") -> tuple[int, str]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(relay.ip, 443, context=context, timeout=60)
    try:
        connection.putrequest(method, "/mxdeliv", skip_host=True)
        items = headers.items() if isinstance(headers, dict) else headers
        for name, value in [("Host", relay.domain), *items, ("Content-Length", str(len(body)))]:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read().decode().strip()
    finally:
        connection.close()


def raw_request(relay, head: str, body: bytes, wait: float) -> bytes:
    """Send a request head and part of a body, then read what comes back."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((relay.ip, 443), timeout=wait) as plain,
        context.wrap_socket(plain, server_hostname=relay.domain) as sock,
    ):
        sock.sendall(head.encode() + body)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError, ssl.SSLError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def test_bad_requests_get_the_documented_refusal_and_queue_nothing(relay1, relay2, gpg):
    since = time.time() - 1
    account = relay2.new_account()
    recipient = account[0]
    sender = f"mallory@{relay1.domain}"
    encrypted = pgp_mime(sender, recipient, gpg.encrypt("not through"))
    envelope = [("X-Mail-From", sender), ("X-Mail-To", recipient)]

    assert post(relay2, b"", {}, method="GET")[0] == 405
    assert post(relay2, encrypted, [("X-Mail-From", sender)])[1].startswith(
        "503 5.5.1 No recipient"
    )
    status, reply = post(relay2, encrypted, [("X-Mail-From", "mallory"), ("X-Mail-To", recipient)])
    assert (status, reply[:9]) == (400, "501 5.1.7")
    status, reply = post(relay2, encrypted, [("X-Mail-To", f"bob@{relay1.domain}")])
    assert (status, reply) == (400, f"554 5.7.1 <bob@{relay1.domain}>: Relay access denied")
    assert post(relay2, encrypted, envelope) == (400, "554 5.7.1 No DKIM signature found")
    forged = (
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={relay1.domain}; s=dkim;"
        " h=from:to:subject; bh=AAAA; b=AAAA\r\n"
    ).encode() + encrypted
    assert post(relay2, forged, envelope) == (400, "554 5.7.1 No valid DKIM signature found")
    cleartext = cleartext_message(sender, recipient)
    assert post(relay2, cleartext, envelope)[0:2] == (
        400,
        "523 Encryption Needed: Invalid Unencrypted Mail",
    )
    limit = int(relay2.host.check_output("postconf -h message_size_limit"))
    too_big = encrypted + b"x" * (limit + 1 - len(encrypted))
    assert post(relay2, too_big, envelope) == (413, "552 Message exceeds maximum size")
    # Far over the limit: nginx refuses it by its length alone, with the same reply.
    head = (
        f"POST /mxdeliv HTTP/1.1\r\nHost: {relay2.domain}\r\nX-Mail-From: {sender}\r\n"
        f"X-Mail-To: {recipient}\r\nContent-Length: {limit * 2}\r\n\r\n"
    )
    answer = raw_request(relay2, head, b"", wait=10)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"552 Message exceeds maximum size" in answer
    # A peer that stalls mid-body is cut off (nginx_mxdeliv_body_timeout, 5 s here).
    head = head.replace(f"Content-Length: {limit * 2}", f"Content-Length: {len(encrypted)}")
    started = time.monotonic()
    answer = raw_request(relay2, head, encrypted[:100], wait=30)
    assert time.monotonic() - started < 20
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]

    assert recipient not in relay2.host.run("postqueue -j").stdout
    assert wait_for_messages(relay2.ip, *account, count=1, timeout=2) == []
    log = relay2.journal(since, "chatmail-mxdeliv")
    # The eight refusals the service saw (nginx kept the last two from it); the line
    # before them may be the previous test's last message.
    assert log.count("incoming: reject") == 8, log


# --- faults ---------------------------------------------------------------------------


def test_killing_the_delivery_service_mid_burst_loses_and_doubles_nothing(relay1, relay2, gpg):
    since = time.time() - 1
    recipient = relay2.new_account()
    senders = [relay1.new_account() for _unused in range(MESSAGES // BURST)]
    payload = gpg.encrypt("through a crash\n")
    sent_ids = []
    killed = threading.Event()

    def kill_when_half_sent():
        while len(sent_ids) < MESSAGES // 2:
            time.sleep(0.01)
        relay1.host.run_expect([0], "systemctl kill -s KILL chatmail-delivery.service")
        killed.set()

    killer = threading.Thread(target=kill_when_half_sent)
    killer.start()
    for sender in senders:
        smtp = smtp_login(relay1.ip, *sender)
        for _unused in range(BURST):
            message = pgp_mime(sender[0], recipient[0], payload)
            smtp.sendmail(sender[0], [recipient[0]], message)
            sent_ids.append(email.message_from_bytes(message)["Message-ID"])
        smtp.quit()
    killer.join(30)
    assert killed.is_set()

    messages = wait_for_messages(relay2.ip, *recipient, count=MESSAGES, timeout=120)
    received = Counter(email.message_from_bytes(m)["Message-ID"] for m in messages)
    assert sorted(received) == sorted(sent_ids)
    assert set(received.values()) == {1}, "some message arrived twice"
    log = relay1.journal(since, "chatmail-delivery")
    assert "Main process exited, code=killed, status=9/KILL" in log, log


# --- switched off at the receiver -------------------------------------------------------


def web_playbook(relay, extra_vars: dict) -> subprocess.CompletedProcess:
    return playbook("web", extra_vars, "--limit", relay.container)


@pytest.fixture
def mxdeliv_off_at_relay2(relay1, relay2):
    # relay1 forgets what it learned from earlier tests (which hosts took SMTP).
    relay1.host.run_expect([0], "systemctl restart chatmail-delivery.service")
    since = time.time() - 1
    run = web_playbook(relay2, {"chatmail_mxdeliv_receive": False})
    try:
        assert run.returncode == 0, run.stdout[-3000:]
        yield since
    finally:
        back = web_playbook(relay2, {})
        # relay1 remembers that relay2 took mail over SMTP; a restart forgets it.
        relay1.host.run("systemctl restart chatmail-delivery.service")
        assert back.returncode == 0, back.stdout[-3000:]


def test_with_mxdeliv_off_at_relay2_relay1_falls_back_to_smtp(
    relay1, relay2, gpg, mxdeliv_off_at_relay2
):
    assert post(relay2, b"", {})[0] == 404
    sender, recipient = relay1.new_account(), relay2.new_account()
    domain = relay2.domain
    for number in (1, 2):
        # The journal's --since counts whole seconds: keep the two windows apart.
        time.sleep(2)
        since = time.time() - 1
        message = pgp_mime(sender[0], recipient[0], gpg.encrypt(f"by smtp {number}\n"))
        assert submit(relay1.ip, sender, recipient[0], message)[0] == {}
        log = wait_for_log(relay1, since, "chatmail-delivery", f"{domain}: 1x 250 via smtp")
        if number == 2:
            # Since the first went by SMTP, the next skips HTTPS (30-minute memory).
            assert f"{domain}: https to {domain} failed" not in log, log
    # Once, since /mxdeliv went away: HTTPS found nothing there (whichever message it was).
    log = relay1.journal(mxdeliv_off_at_relay2, "chatmail-delivery")
    assert log.count(f"{domain}: https to {domain} failed 451 4.3.0 Unexpected answer") == 1, log
    assert "HTTP 404" in log
    assert len(wait_for_messages(relay2.ip, *recipient, count=2, timeout=30)) == 2
