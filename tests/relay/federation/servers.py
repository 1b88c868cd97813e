"""The mail servers of the federation test bed, as the tests reach them."""

from __future__ import annotations

import re
import smtplib
import time
from dataclasses import dataclass

import testinfra
from mailclient import imap_login, new_credentials
from testbed import container_address


@dataclass
class Server:
    """A mail server of the test bed: its container, domain, address and a shell in it."""

    container: str
    domain: str
    ip: str
    host: object

    def journal(self, since: float, *units: str) -> str:
        """What these units logged since the epoch time `since`."""
        names = " ".join(f"-u '{unit}'" for unit in units)
        return self.host.run(f"journalctl --no-pager -o cat {names} --since @{since:.0f}").stdout

    def new_account(self) -> tuple[str, str]:
        """A fresh account, created by its first login (a relay only)."""
        address, password = new_credentials(self.domain)
        imap_login(self.ip, address, password).logout()
        return address, password


def server(container: str, domain: str) -> Server:
    return Server(
        container, domain, container_address(container), testinfra.get_host(f"docker://{container}")
    )


def hand_to_classic(classic: Server, sender: str, recipient: str, message: bytes, port=25) -> str:
    """Give a message to the classic server for delivery; return its queue ID."""
    with smtplib.SMTP(classic.ip, port, timeout=30) as smtp:
        smtp.ehlo("tests.test")
        smtp.mail(sender)
        smtp.rcpt(recipient)
        code, reply = smtp.data(message)
    assert code == 250, reply
    return re.search(rb"queued as (\w+)", reply).group(1).decode()


def classic_outcome(classic: Server, queue_id: str, timeout: float = 60) -> str:
    """The classic server's final delivery log line for the queued message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = classic.host.run(
            f"journalctl --no-pager -o cat -u 'postfix*' | grep '{queue_id}: to='"
        )
        done = [
            line for line in log.stdout.splitlines() if re.search("status=(sent|bounced)", line)
        ]
        if done:
            return done[-1]
        time.sleep(0.5)
    raise TimeoutError(f"classic server did not finish {queue_id} within {timeout} s: {log.stdout}")


def through_classic(classic: Server, sender: str, recipient: str, message: bytes, port=25) -> str:
    """Send a message by the classic server; return how its delivery ended, as it logged it."""
    return classic_outcome(classic, hand_to_classic(classic, sender, recipient, message, port))
