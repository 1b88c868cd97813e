"""The account store the relay services share: one directory per address.

    <mailboxes_dir>/<address>/
        password              the {SHA512-CRYPT} hash; its mtime is the last-login day
        enforceE2EEincoming   cleartext from outside is refused (new accounts have it)
        DISABLED              switched off: mail from it is dropped, mail to it too
        invited               /new handed the address out in invite mode (its mtime
                              is when), so that its first login may create it
        devicetokens          push tokens (chatrelay.push)
        cur/ new/ tmp/ ...    the Maildir (Dovecot)

An account exists once its password file does. Everything that turns an
address into a path checks its shape first, so a crafted name never reaches
outside mailboxes_dir.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path

from .config import Config

PASSWORD_FILE = "password"
E2EE_MARKER = "enforceE2EEincoming"
# The reference relay's name for it (SPEC section 12).
DISABLED_MARKER = "DISABLED"
INVITED_MARKER = "invited"
TOKEN_FILE = "devicetokens"
# How long an address /new handed out in invite mode waits for its first login.
INVITED_LIFETIME = 7 * 86400

_LOCALPART = re.compile(r"[a-z0-9._-]+")


def is_address(config: Config, address: str) -> bool:
    """True if address has the shape of one of our accounts (any length)."""
    localpart, at, domain = address.rpartition("@")
    return bool(at) and domain == config.mail_domain and bool(_LOCALPART.fullmatch(localpart))


def directory(config: Config, address: str) -> Path:
    """The address's account directory (which may not exist)."""
    if not is_address(config, address):
        raise ValueError(f"not an address of {config.mail_domain}: {address!r}")
    return config.mailboxes_dir / address


def directories(config: Config) -> list[Path]:
    """Every account directory, with or without a password file, sorted."""
    try:
        entries = list(os.scandir(config.mailboxes_dir))
    except FileNotFoundError:
        return []
    return sorted(
        Path(entry.path)
        for entry in entries
        if "@" in entry.name and entry.is_dir(follow_symlinks=False)
    )


def addresses(config: Config) -> list[str]:
    """Addresses of all accounts, sorted."""
    return [path.name for path in directories(config) if (path / PASSWORD_FILE).is_file()]


def password_hash(config: Config, address: str) -> str | None:
    """The account's password hash, or None if there is no such account."""
    try:
        stored = (directory(config, address) / PASSWORD_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    if not stored:
        raise ValueError(f"empty password file for {address}")
    return stored


def create(config: Config, address: str, hashed: str) -> tuple[str, bool]:
    """Create the account with this hash unless a concurrent login did.

    Returns the stored hash and whether this call created the account.
    """
    home = directory(config, address)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The marker comes first so that no account is ever visible without it.
    (home / E2EE_MARKER).touch(mode=0o600)
    temporary = home / f".{PASSWORD_FILE}.{os.getpid()}.{secrets.token_hex(8)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(hashed + "\n")
            file.flush()
            os.fsync(file.fileno())
        # link() never replaces an existing file: of concurrent first logins
        # exactly one wins, and the others read back the winner's hash.
        os.link(temporary, home / PASSWORD_FILE)
    except FileExistsError:
        stored = password_hash(config, address)
    else:
        (home / INVITED_MARKER).unlink(missing_ok=True)
        return hashed, True
    finally:
        temporary.unlink(missing_ok=True)
    if stored is None:
        raise RuntimeError(f"account {address} vanished while being created")
    return stored, False


def enforces_e2ee(config: Config, address: str) -> bool:
    """True if the account refuses cleartext from outside; False for non-accounts too."""
    return is_address(config, address) and (directory(config, address) / E2EE_MARKER).exists()


def is_disabled(config: Config, address: str) -> bool:
    """True if the account is switched off; False for non-accounts."""
    return is_address(config, address) and (directory(config, address) / DISABLED_MARKER).exists()


def set_disabled(config: Config, address: str, disabled: bool) -> bool:
    """Switch the account off or on; False if there is no such account."""
    if password_hash(config, address) is None:
        return False
    marker = directory(config, address) / DISABLED_MARKER
    if disabled:
        marker.touch(mode=0o600)
    else:
        marker.unlink(missing_ok=True)
    return True


def invite(config: Config, address: str) -> None:
    """Note that /new handed the address out, so that its first login may create it."""
    home = directory(config, address)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / INVITED_MARKER).touch(mode=0o600)


def is_invited(config: Config, address: str, now: float) -> bool:
    """True if /new handed the address out within INVITED_LIFETIME."""
    try:
        handed_out = (directory(config, address) / INVITED_MARKER).stat().st_mtime
    except FileNotFoundError:
        return False
    return now - handed_out <= INVITED_LIFETIME


def delete(config: Config, address: str) -> bool:
    """Remove the account with all its mail and tokens; False if there was none."""
    home = directory(config, address)
    if not home.is_dir():
        return False
    shutil.rmtree(home)
    return True


def last_login(home: Path) -> float | None:
    """The last-login day (Unix time) of an account directory, None without a password."""
    try:
        return (home / PASSWORD_FILE).stat().st_mtime
    except FileNotFoundError:
        return None


def record_login_day(config: Config, address: str, day: int) -> None:
    """Set the account's last-login day; an address that is not (or no longer)
    an account has none to set."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(directory(config, address) / PASSWORD_FILE, (day, day))


def token_file(config: Config, address: str) -> Path:
    return directory(config, address) / TOKEN_FILE
