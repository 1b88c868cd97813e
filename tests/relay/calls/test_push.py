"""Push notifications: a device token set over IMAP reaches the gateway on delivery."""

from __future__ import annotations

import secrets
import subprocess
import time

import pytest
from mailclient import Idle, imap_login, pgp_mime, submit
from metadata import get_metadata, set_metadata

TOKEN_ENTRY = "/private/devicetoken"


def register(relay_ip: str, account: tuple[str, str], token: str | None = None) -> str:
    """Store a fresh device token as Delta Chat does; return it."""
    token = token or f"test-token-{secrets.token_hex(16)}"
    imap = imap_login(relay_ip, *account)
    try:
        set_metadata(imap, "INBOX", TOKEN_ENTRY, token)
    finally:
        imap.logout()
    return token


def tokens(relay_ip: str, account: tuple[str, str]) -> list[str]:
    imap = imap_login(relay_ip, *account)
    try:
        value = get_metadata(imap, "INBOX", TOKEN_ENTRY)
    finally:
        imap.logout()
    return value.split() if value else []


def send(relay_ip, gpg, sender, recipient) -> None:
    message = pgp_mime(sender[0], recipient[0], gpg.encrypt("ping"))
    refused, _unused = submit(relay_ip, sender, recipient[0], message)
    assert not refused


def test_tokens_are_stored_per_account_and_read_back(relay_ip, account):
    first = register(relay_ip, account)
    second = register(relay_ip, account)
    assert sorted(tokens(relay_ip, account)) == sorted([first, second])
    # Setting a token again refreshes it instead of adding a copy.
    register(relay_ip, account, first)
    assert sorted(tokens(relay_ip, account)) == sorted([first, second])


def test_the_gateway_gets_the_token_within_a_second_of_delivery(
    relay_ip, account, sender, gpg, answering
):
    token = register(relay_ip, account)
    imap = imap_login(relay_ip, *account)
    imap.select("INBOX")
    try:
        with Idle(imap) as idle:
            submitted = time.time()
            send(relay_ip, gpg, sender, account)
            idle.wait(10)
            delivered = time.time()
    finally:
        imap.logout()
    [request] = answering.wait_for(token, timeout=5)
    delay = request["time"] - delivered
    print(
        f"\npush: submit->IDLE {1000 * (delivered - submitted):.1f} ms, "
        f"submit->gateway {1000 * (request['time'] - submitted):.1f} ms, "
        f"IDLE->gateway {1000 * delay:+.1f} ms"
    )
    assert delay < 1.0
    assert request["status"] == 200
    assert request["content_type"] == "application/octet-stream"


def test_mail_to_oneself_wakes_no_device(relay_ip, account, gpg, answering):
    token = register(relay_ip, account)
    send(relay_ip, gpg, account, account)
    with pytest.raises(TimeoutError):
        answering.wait_for(token, timeout=3)


def test_gone_410_removes_the_token(relay_ip, account, sender, gpg, answering):
    token = register(relay_ip, account)
    kept = register(relay_ip, account)
    answering.answer(410)
    send(relay_ip, gpg, sender, account)
    answering.wait_for(token)
    answering.wait_for(kept)
    answering.answer(200)
    deadline = time.monotonic() + 5
    while tokens(relay_ip, account) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tokens(relay_ip, account) == []
    # Without tokens, the next message notifies nobody.
    send(relay_ip, gpg, sender, account)
    time.sleep(2)
    assert len(answering.requests_for(token)) == 1


def test_a_notification_waits_out_a_gateway_that_is_down(relay_ip, account, sender, gpg, answering):
    token = register(relay_ip, account)
    answering.stop()
    send(relay_ip, gpg, sender, account)
    down_since = time.time()
    time.sleep(30)
    answering.start()
    back = time.time()
    # Retries follow at once, then after 8 and 64 s: the fourth attempt, 72 s
    # after the first, finds the gateway back.
    [request] = answering.wait_for(token, timeout=120)
    print(
        f"\npush: gateway down {back - down_since:.0f} s; notification arrived "
        f"{request['time'] - back:.1f} s after it came back"
    )
    assert request["status"] == 200


def refused_then_delivered(gateway, token: str, timeout: float) -> list[int]:
    """Statuses the gateway answered for the token, once it has answered 200."""
    deadline = time.monotonic() + timeout
    while 200 not in (statuses := [r["status"] for r in gateway.requests_for(token)]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no delivery within {timeout} s, only {statuses}")
        time.sleep(0.1)
    return statuses


def queue_after_refusal(relay_ip, account, sender, gpg, gateway, host) -> str:
    """A notification the gateway refused once, waiting on disk for its retry."""
    token = register(relay_ip, account)
    gateway.answer(500)
    send(relay_ip, gpg, sender, account)
    gateway.wait_for(token)
    # Past the immediate first retry; the next one is 8 s away.
    time.sleep(1)
    assert host.run("ls /var/lib/chatmail/push").stdout.split(), "nothing queued"
    return token


def test_a_crash_of_the_metadata_service_loses_no_notification(
    relay_ip, account, sender, gpg, answering, host
):
    token = queue_after_refusal(relay_ip, account, sender, gpg, answering, host)
    host.run_test("systemctl kill --signal=SIGKILL chatmail-metadata.service")
    answering.answer(200)
    statuses = refused_then_delivered(answering, token, timeout=30)
    assert statuses[-1] == 200 and set(statuses[:-1]) == {500}, statuses


def test_pending_notifications_survive_a_restart_of_the_host(
    relay_ip, account, sender, gpg, answering, host, container
):
    token = queue_after_refusal(relay_ip, account, sender, gpg, answering, host)
    subprocess.run(["docker", "restart", "-t", "30", container], check=True)
    answering.answer(200)
    statuses = refused_then_delivered(answering, token, timeout=60)
    assert statuses[-1] == 200 and set(statuses[:-1]) == {500}, statuses
