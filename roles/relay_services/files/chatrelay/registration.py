"""Who may register: the registration mode, and the invite tokens of invite mode.

    open     the first login of any valid new address creates it (SPEC section 5)
    invite   /new hands out an address only for a valid invite token, and a first
             login creates only an address /new handed out (chatrelay.mailbox.invite)
    closed   no new accounts; existing ones keep working

The kill switch file (nocreate_file) stops new accounts in every mode.

Invite tokens live in invites_dir, one JSON file per token named by its id, the first
16 hex digits of the token's SHA-256. The token itself is stored nowhere on the relay:
the operator sees it once, in the link `create` returns. A token has a number of uses
and, optionally, an expiry; one use is taken when /new hands out an address for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from http import HTTPStatus
from pathlib import Path
from urllib.parse import quote

from .config import Config

MODES = ("open", "invite", "closed")
TOKEN_BYTES = 16
ID_LENGTH = 16
LOCK_FILE = ".lock"
_ID = re.compile(f"[0-9a-f]{{{ID_LENGTH}}}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_DURATION = re.compile(r"([1-9][0-9]*)([mhd])")
_DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400}


class RegistrationRefused(Exception):
    """/new hands out nothing: the HTTP status and the message for the client."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Invite:
    """One invite token, as stored: never the token itself, only its digest."""

    id: str
    digest: str
    label: str
    created: int
    # Unix time after which the token is refused; None: never.
    expires: int | None
    uses_left: int
    used: int = 0

    def state(self, now: float) -> str:
        if self.expires is not None and now > self.expires:
            return "expired"
        return "used up" if self.uses_left <= 0 else "valid"


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def id_of(token: str) -> str:
    """The token's id: what names its file, what list shows and revoke takes."""
    return digest_of(token)[:ID_LENGTH]


def parse_lifetime(text: str) -> int:
    """Seconds from '30m', '12h' or '7d'; anything else is a ValueError naming it."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"expiry {text!r} is not a duration such as 30m, 12h or 7d")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def link(config: Config, token: str) -> str:
    """The dcaccount: link Delta Chat opens (or scans as a QR code) to register."""
    return f"DCACCOUNT:https://{config.mail_domain}/new?token={quote(token, safe='')}"


class Invites:
    """The invite tokens in one directory; every change holds its lock."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.directory = config.invites_dir
        self.clock = clock

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._own(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _own(self, fd: int) -> None:
        # Files root writes (the operator's command) stay usable by the services.
        if os.geteuid() == 0:
            os.fchown(fd, self.config.vmail_uid, self.config.vmail_gid)

    def _path(self, invite_id: str) -> Path:
        return self.directory / f"{invite_id}.json"

    def _read(self, invite_id: str) -> Invite | None:
        try:
            data = json.loads(self._path(invite_id).read_text())
        except FileNotFoundError:
            return None
        return Invite(**data)

    def _write(self, invite: Invite) -> None:
        temporary = self.directory / f".{invite.id}.{secrets.token_hex(8)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self._own(fd)
            with os.fdopen(fd, "w") as file:
                json.dump(asdict(invite), file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self._path(invite.id))
        finally:
            temporary.unlink(missing_ok=True)

    def create(self, uses: int = 1, lifetime: int | None = None, label: str = "") -> str:
        """A new token for uses registrations within lifetime seconds; returned once."""
        if uses < 1:
            raise ValueError(f"an invite needs at least one use, not {uses}")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        digest = digest_of(token)
        now = int(self.clock())
        invite = Invite(
            id=id_of(token),
            digest=digest,
            label=label,
            created=now,
            expires=None if lifetime is None else now + lifetime,
            uses_left=uses,
        )
        with self._locked():
            self._write(invite)
        return token

    def all(self) -> list[Invite]:
        """Every token, oldest first."""
        invites = [self._read(path.stem) for path in self.directory.glob("*.json")]
        return sorted((i for i in invites if i is not None), key=lambda i: (i.created, i.id))

    def revoke(self, token_or_id: str) -> bool:
        """Remove a token, named by its id or by itself; False if there is none."""
        invite_id = token_or_id if _ID.fullmatch(token_or_id) else id_of(token_or_id)
        with self._locked():
            try:
                self._path(invite_id).unlink()
            except FileNotFoundError:
                return False
        return True

    def check(self, token: str) -> Invite:
        """The token's invite if it may register now, else RegistrationRefused."""
        digest = digest_of(token)
        invite = self._read(digest[:ID_LENGTH]) if _TOKEN.fullmatch(token) else None
        if invite is None or not hmac.compare_digest(invite.digest, digest):
            raise RegistrationRefused(HTTPStatus.FORBIDDEN, "this invite token is not valid")
        state = invite.state(self.clock())
        if state != "valid":
            raise RegistrationRefused(HTTPStatus.GONE, f"this invite token is {state}")
        return invite

    def redeem(self, token: str) -> Invite:
        """Take one use of the token, or raise RegistrationRefused and take nothing."""
        with self._locked():
            invite = self.check(token)
            redeemed = replace(invite, uses_left=invite.uses_left - 1, used=invite.used + 1)
            self._write(redeemed)
        return redeemed


def admit(config: Config, invites: Invites, token: str | None) -> None:
    """Raise RegistrationRefused unless the mode lets /new hand out an address for token."""
    if config.registration == "closed":
        raise RegistrationRefused(HTTPStatus.FORBIDDEN, "registration is closed on this relay")
    if config.registration == "invite":
        if not token:
            raise RegistrationRefused(
                HTTPStatus.FORBIDDEN,
                "this relay registers new addresses by invitation only:"
                " open an invite link from its operator",
            )
        invites.check(token)
