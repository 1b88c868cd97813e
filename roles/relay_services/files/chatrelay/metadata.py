"""Dovecot's IMAP METADATA dict: device tokens, new-message pushes, server-wide keys.

Dovecot (`mail_attribute_dict = proxy:<socket>:metadata`) hands us the keys below;
everything else is `N` on lookup and fails a commit.

- `priv/<mailbox-guid>/devicetoken`: lookup gives the account's live tokens separated
  by spaces; a set adds or refreshes the token in the value; an unset (or a set to
  the empty string) removes all of the account's tokens, since Dovecot's unset names
  no value and a client that clears its token wants no more pushes.
- `priv/<mailbox-guid>/messagenew`: set by the Lua push hook on each delivery; queues
  a notification for every live token before the commit is acknowledged. An unset
  counts the same: the key is a signal, its value means nothing.
- `shared/[<anything>/]vendor/vendor.dovecot/pvt/server/vendor/deltachat/<name>`
  (GETMETADATA "" /shared/vendor/deltachat/<name>), lookup only: `turn`,
  `irohrelay`, `maxsmtprecipients`, `appversions` (the operator's app-version hints,
  SPEC section 12, as one line of JSON; none without the file).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import socket
import sys
import time
from pathlib import Path

from . import mailbox, metrics
from .config import Config
from .dictproto import Change, DictServer, run_service, split_namespace
from .push import Clock, Notifier, Sender, TokenStore, is_valid_token, token_id

log = logging.getLogger("chatrelay.metadata")

TOKEN_KEY = "devicetoken"
MESSAGE_NEW_KEY = "messagenew"
_PRIVATE_KEY = re.compile(r"[^/]+/([^/]+)")
_SERVER_KEY = re.compile(r"(?:.*/)?vendor/vendor\.dovecot/pvt/server/vendor/deltachat/([^/]+)")


def turn_credentials(secret: bytes, expires: int) -> tuple[str, str]:
    """TURN REST credentials (what coturn's use-auth-secret checks): the username is
    the expiry as Unix time, the password base64(HMAC-SHA1(secret, username))."""
    username = str(expires)
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def read_secret(path: Path) -> bytes:
    """The TURN shared secret; an unreadable or empty file is an error, never a default."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise RuntimeError(f"TURN secret {path} cannot be read: {exc}") from exc
    if not secret:
        raise RuntimeError(f"TURN secret {path} is empty")
    return secret


def private_key_name(key: str) -> str | None:
    """'devicetoken' for 'priv/<guid>/devicetoken'; None for keys of other shapes."""
    namespace, rest = split_namespace(key)
    match = _PRIVATE_KEY.fullmatch(rest)
    return match.group(1) if namespace == "priv" and match else None


def server_key_name(key: str) -> str | None:
    """'turn' for 'shared/<guid>/vendor/vendor.dovecot/pvt/server/vendor/deltachat/turn'."""
    namespace, rest = split_namespace(key)
    match = _SERVER_KEY.fullmatch(rest)
    return match.group(1) if namespace == "shared" and match else None


class MetadataServer(DictServer):
    """Answers Dovecot's metadata dict and runs the push notifier in the same process."""

    def __init__(
        self, config: Config, sender: Sender | None = None, clock: Clock = time.time
    ) -> None:
        self.config = config
        self.clock = clock
        self.tokens = TokenStore(config, clock)
        self.notifier = Notifier(config, self.tokens, sender, clock)

    def lookup(self, key: str, user: str) -> str | None:
        name = private_key_name(key)
        if name == TOKEN_KEY:
            if not mailbox.is_address(self.config, user):
                return None
            return " ".join(self.tokens.live(user)) or None
        name = server_key_name(key)
        if name == "turn":
            return self.turn()
        if name == "irohrelay":
            return self.config.iroh_relay or None
        if name == "maxsmtprecipients":
            return str(self.config.max_smtp_recipients)
        if name == "appversions":
            return self.appversions()
        return None

    def appversions(self) -> str | None:
        """The app-version hints as compact JSON on one line; None without them."""
        try:
            document = json.loads(self.config.appversions_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # Deployment validates the document; a file broken since is no answer.
            log.error("app-version hints %s unusable: %s", self.config.appversions_file, exc)
            return None
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False)

    def turn(self) -> str:
        """'<host>:<port>:<username>:<password>' for the TURN server."""
        expires = int(self.clock()) + self.config.turn_credential_lifetime
        username, password = turn_credentials(read_secret(self.config.turn_secret_file), expires)
        metrics.TURN_CREDENTIALS.inc()
        return f"{self.config.turn_hostname}:{self.config.turn_port}:{username}:{password}"

    def commit(self, changes: list[Change], user: str) -> bool:
        for key, value in changes:
            name = private_key_name(key)
            if name not in (TOKEN_KEY, MESSAGE_NEW_KEY):
                log.warning("refusing change of unsupported key %r", key)
                return False
            if name == TOKEN_KEY and value and not is_valid_token(value):
                log.warning("refusing malformed device token %s of %r", token_id(value), user)
                return False
        if not mailbox.is_address(self.config, user):
            if any(private_key_name(key) == TOKEN_KEY for key, _value in changes):
                log.warning("refusing device token change for non-account %r", user)
                return False
            log.debug("no push notifications for non-account %r", user)
            return True
        # Notifications go out after all token changes, so a token set in the same
        # transaction is notified whatever the order of the changes.
        notify = False
        for key, value in changes:
            if private_key_name(key) == MESSAGE_NEW_KEY:
                notify = True
            elif value:
                self.tokens.add(user, value)
            else:
                self.tokens.clear(user)
        if notify:
            self.notifier.notify(user)
        return True

    async def serve(self, sock: socket.socket) -> None:
        """Start the push workers, then serve Dovecot until cancelled."""
        await asyncio.to_thread(self.notifier.start)
        try:
            await super().serve(sock)
        finally:
            await asyncio.to_thread(self.notifier.stop)


def main(argv: list[str] | None = None) -> int:
    return run_service(
        MetadataServer,
        "python3 -m chatrelay.metadata",
        "Dovecot IMAP METADATA dict: push tokens and notifications, TURN credentials.",
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
