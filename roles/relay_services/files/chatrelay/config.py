"""The relay settings every service reads, from one INI file written by Ansible."""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_PATH = Path("/etc/chatmail/relay.ini")
SECTION = "relay"

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """Parse '500M', '1G', '31457280' into bytes (binary units, as Dovecot does)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (expected e.g. 500M, 1G or bytes)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


@dataclass(frozen=True)
class Config:
    mail_domain: str
    mailboxes_dir: Path
    vmail_uid: int = 5000
    vmail_gid: int = 5000
    username_min_length: int = 9
    username_max_length: int = 9
    password_min_length: int = 9
    nocreate_file: Path = Path("/etc/chatmail-nocreate")
    # Who may register (chatrelay.registration): open, invite or closed.
    registration: str = "open"
    invites_dir: Path = Path("/var/lib/chatmail/invites")
    max_load_1m: float = 5.0
    min_available_memory: int = 200 * 1024**2
    min_free_disk_space: int = 1024**3
    max_user_send_per_minute: int = 60
    max_user_send_burst_size: int = 10
    max_message_size: int = 31457280
    max_mailbox_size: int = 500 * 1024**2
    delete_mails_after: int = 20
    delete_large_after: int = 7
    delete_inactive_users_after: int = 90
    filter_outgoing_port: int = 10080
    filter_incoming_port: int = 10081
    reinject_outgoing_port: int = 10025
    reinject_incoming_port: int = 10026
    # HTTPS delivery between relays (SPEC section 12): the incoming filter's HTTP
    # listener behind nginx, and the delivery service Postfix hands remote mail to.
    mxdeliv_port: int = 10082
    delivery_port: int = 10027
    # The delivery service asks DNS for IPv4 addresses only.
    disable_ipv6: bool = False
    # Metadata service: push notifications (SPEC section 7).
    push_gateway_url: str = "https://notifications.delta.chat/notify"
    push_queue_dir: Path = Path("/var/lib/chatmail/push")
    push_concurrency: int = 8
    # Seconds after its first enqueue that an undelivered notification is dropped.
    push_give_up_after: int = 5 * 3600
    push_token_expiry_days: int = 90
    # Metadata service: server-wide keys a client reads (TURN, iroh relay, limits).
    turn_secret_file: Path = Path("/etc/chatmail/turn-secret")
    # Empty means mail_domain.
    turn_host: str = ""
    turn_port: int = 3478
    # Seconds a TURN credential stays valid after it was handed out.
    turn_credential_lifetime: int = 5 * 86400
    iroh_relay: str = ""
    # The app-version hints clients read (SPEC section 12); no file: none.
    appversions_file: Path = Path("/etc/chatmail/appversions.json")
    max_smtp_recipients: int = 1000
    # Where the TLS certificate comes from: acme, self_signed or external. Clients of a
    # self_signed relay must be told to accept its certificate.
    tls_mode: str = "acme"
    # The /new service (credentials for a new account), behind nginx on 127.0.0.1.
    new_account_port: int = 10090
    # The metrics exporter (chatrelay.metrics) on 127.0.0.1, Dovecot's stats service
    # (OpenMetrics) it passes on, and how often it counts the storage.
    metrics_port: int = 9469
    dovecot_stats_port: int = 9900
    metrics_storage_interval: int = 300

    @property
    def address_suffix(self) -> str:
        return "@" + self.mail_domain

    @property
    def turn_hostname(self) -> str:
        return self.turn_host or self.mail_domain


_SIZES = {"min_available_memory", "min_free_disk_space", "max_message_size", "max_mailbox_size"}
_CHOICES = {
    "tls_mode": ("acme", "self_signed", "external"),
    "registration": ("open", "invite", "closed"),
}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ValueError("expected true or false")


def extra_files(path: Path) -> list[Path]:
    """Settings files of other roles, read after the main one: <dir>/<name>.d/*.ini."""
    return sorted((path.parent / f"{path.stem}.d").glob("*.ini"))


def load(path: Path = DEFAULT_PATH) -> Config:
    """Read the settings file and its .d directory; a missing or malformed value names the key."""
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(path):
        raise FileNotFoundError(f"relay settings not found: {path}")
    extras = extra_files(path)
    for extra in extras:
        try:
            parser.read(extra)
        except configparser.Error as exc:
            raise ValueError(f"{extra}: {exc}") from None
    # Errors name every file a value may have come from.
    where = ", ".join(str(p) for p in (path, *extras))
    if not parser.has_section(SECTION):
        raise ValueError(f"{where}: missing [{SECTION}] section")
    raw = dict(parser.items(SECTION))
    values: dict[str, object] = {}
    for field in fields(Config):
        if field.name not in raw:
            continue
        text = raw.pop(field.name)
        try:
            if field.name in _SIZES:
                values[field.name] = parse_size(text)
            elif field.type in ("int",):
                values[field.name] = int(text)
            elif field.type == "bool":
                values[field.name] = _parse_bool(text)
            elif field.type == "float":
                values[field.name] = float(text)
            elif field.type == "Path":
                values[field.name] = Path(text)
            elif field.name in _CHOICES and text not in _CHOICES[field.name]:
                raise ValueError(f"expected one of {', '.join(_CHOICES[field.name])}")
            else:
                values[field.name] = text
        except ValueError as exc:
            raise ValueError(f"{where}: [{SECTION}] {field.name} = {text!r}: {exc}") from None
    if raw:
        raise ValueError(f"{where}: unknown settings: {', '.join(sorted(raw))}")
    for required in ("mail_domain", "mailboxes_dir"):
        if required not in values:
            raise ValueError(f"{where}: [{SECTION}] {required} is required")
    return Config(**values)  # type: ignore[arg-type]
