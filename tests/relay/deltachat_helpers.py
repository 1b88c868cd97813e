"""Real Delta Chat clients (deltachat-rpc-server) against one relay, for tests and benchmarks.

Accounts are configured with explicit servers, so autoconfig is skipped, and accept the
self-signed certificate of a test relay. Every wait is bounded: a relay that loses a
message makes a helper raise TimeoutError instead of hanging.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import shutil
import string
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deltachat_rpc_client import Account, AttrDict, Chat, DeltaChat, Message, Rpc
from deltachat_rpc_client.const import EventType

ALPHABET = string.ascii_lowercase + string.digits
CONFIGURE_TIMEOUT = 60.0
JOIN_TIMEOUT = 60.0
MESSAGE_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 30.0


def rpc_server_path() -> str:
    """The deltachat-rpc-server of this Python environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "deltachat-rpc-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("deltachat-rpc-server")
    if not found:
        raise FileNotFoundError("deltachat-rpc-server is neither beside Python nor on PATH")
    return found


@contextlib.contextmanager
def delta_chat() -> Iterator[DeltaChat]:
    """An rpc server with a throwaway accounts directory, stopped (or killed) on exit."""
    with tempfile.TemporaryDirectory(prefix="dc-accounts-") as tmp:
        rpc = Rpc(accounts_dir=str(Path(tmp) / "accounts"), rpc_server_path=rpc_server_path())
        rpc.start()
        try:
            yield DeltaChat(rpc)
        finally:
            closer = threading.Thread(target=rpc.close, daemon=True)
            closer.start()
            closer.join(SHUTDOWN_TIMEOUT)
            if closer.is_alive():
                # A killed server answers every pending call with an error, ending the close.
                rpc.process.kill()
                closer.join(SHUTDOWN_TIMEOUT)
            rpc.process.wait(SHUTDOWN_TIMEOUT)


def new_credentials(domain: str) -> tuple[str, str]:
    """A random address the relay accepts (9 characters of [a-z0-9]) and a password."""
    local = "".join(secrets.choice(ALPHABET) for _unused in range(9))
    return f"{local}@{domain}", secrets.token_urlsafe(12)


def login_params(
    relay_ip: str, address: str, password: str, imap_port: int = 993, smtp_port: int = 465
) -> dict[str, Any]:
    """Explicit IMAP 993 / SMTP 465 (or the given ports) over TLS at the relay's IP, any
    certificate accepted.

    The mail domain of a test relay does not resolve, so servers are named by IP; the
    relay's certificate is self-signed, so it cannot be checked.
    """
    return {
        "addr": address,
        "password": password,
        "imapServer": relay_ip,
        "imapPort": imap_port,
        "imapSecurity": "ssl",
        "smtpServer": relay_ip,
        "smtpPort": smtp_port,
        "smtpSecurity": "ssl",
        "certificateChecks": "acceptInvalidCertificates",
    }


def within(timeout: float, call: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking RPC call, raising TimeoutError if it has not returned in time.

    The call itself goes on in the background until the rpc server answers it or is
    stopped (a stopped server fails every pending call).
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call(*args)
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"{getattr(call, 'name', call)} did not return within {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def wait_for_event(
    account: Account, matches: Callable[[AttrDict], bool], timeout: float
) -> AttrDict:
    """Consume the account's events until one matches; raise TimeoutError after `timeout` s.

    The timeout message quotes the last errors and warnings the core reported, which
    usually say what the relay answered.
    """
    events = account.manager.rpc.get_queue(account.id)
    trouble: deque[str] = deque(maxlen=5)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = AttrDict(events.get(timeout=left))
        except queue.Empty:
            break
        if matches(event):
            return event
        if event.kind in (EventType.ERROR, EventType.WARNING):
            trouble.append(f"{event.kind}: {event.msg}")
    recent = "; ".join(trouble) or "no errors or warnings"
    raise TimeoutError(f"account {account.id}: no awaited event within {timeout} s ({recent})")


def wait_for_kind(account: Account, kind: EventType, timeout: float) -> AttrDict:
    return wait_for_event(account, lambda event: event.kind == kind, timeout)


def configure(
    account: Account, relay_ip: str, domain: str, timeout: float, port: int | None = None
) -> str:
    """Configure an unconfigured account with a fresh address; return the address.

    With `port`, IMAP and SMTP both use that one port (443: ALPN decides).
    """
    address, password = new_credentials(domain)
    ports = {"imap_port": port, "smtp_port": port} if port else {}
    params = login_params(relay_ip, address, password, **ports)
    within(timeout, account.manager.rpc.add_or_update_transport, account.id, params)
    return address


def bring_online(account: Account, timeout: float) -> None:
    """Start I/O and wait until the account IDLEs on its inbox, ready to receive."""
    account.start_io()
    wait_for_kind(account, EventType.IMAP_INBOX_IDLE, timeout)


def new_online_account(
    dc: DeltaChat,
    relay_ip: str,
    domain: str,
    timeout: float = CONFIGURE_TIMEOUT,
    port: int | None = None,
) -> Account:
    """A fresh account on the relay, configured (on one port, if given) and IDLE."""
    account = dc.add_account()
    configure(account, relay_ip, domain, timeout, port)
    bring_online(account, timeout)
    return account


def secure_join(
    inviter: Account, joiner: Account, timeout: float = JOIN_TIMEOUT
) -> tuple[Chat, Chat]:
    """Let `joiner` scan the inviter's Setup-Contact QR code and wait for both to finish.

    Returns the inviter's chat with the joiner and the joiner's chat with the inviter.
    """
    joiner_chat = joiner.secure_join(inviter.get_qr_code())
    done = wait_for_event(
        inviter,
        lambda e: e.kind == EventType.SECUREJOIN_INVITER_PROGRESS and e.progress == 1000,
        timeout,
    )
    wait_for_event(
        joiner,
        lambda e: e.kind == EventType.SECUREJOIN_JOINER_PROGRESS and e.progress == 1000,
        timeout,
    )
    return inviter.get_chat_by_id(done.chat_id), joiner_chat


def wait_for_incoming(account: Account, timeout: float = MESSAGE_TIMEOUT) -> AttrDict:
    """The snapshot of the account's next incoming message."""
    event = wait_for_kind(account, EventType.INCOMING_MSG, timeout)
    return account.get_message_by_id(event.msg_id).get_snapshot()


def send_and_receive(
    chat: Chat, receiver: Account, text: str, timeout: float = MESSAGE_TIMEOUT
) -> tuple[Message, AttrDict]:
    """Send `text` in `chat`; return the sent message and the receiver's snapshot of it."""
    sent = chat.send_text(text)
    received = wait_for_event(
        receiver,
        lambda e: (
            e.kind == EventType.INCOMING_MSG
            and receiver.get_message_by_id(e.msg_id).get_snapshot().text == text
        ),
        timeout,
    )
    return sent, receiver.get_message_by_id(received.msg_id).get_snapshot()
