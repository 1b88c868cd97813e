"""Classify a mail as OpenPGP-encrypted or as one of the few allowed cleartext kinds.

Everything here is pure: it looks at the message only, touches no files and never
raises on malformed input (a message we cannot understand is simply not encrypted).
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import functools
import re
from collections.abc import Callable, Iterable
from email.message import Message

MessageLike = bytes | bytearray | Message

_ARMOR_BEGIN = "-----BEGIN PGP MESSAGE-----"
_ARMOR_END = "-----END PGP MESSAGE-----"
_ARMOR_HEADER = re.compile(r"([A-Za-z0-9-]+): ?(.*)")
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_CHECKSUM_LINE = re.compile(r"=([A-Za-z0-9+/]{4})")
_FOLD = re.compile(r"\r?\n(?=[ \t])")

TAG_PKESK = 1
TAG_SKESK = 3
TAG_SEIPD = 18
_ESK_VERSIONS = {TAG_PKESK: {3, 6}, TAG_SKESK: {4, 5, 6}}
# v1: version, cipher prefix of at least 8 + 2 octets, 22-octet MDC packet;
# v2: four parameter octets, 32-octet salt, at least one 16-octet tag.
_SEIPD_MIN_LENGTH = {1: 1 + 10 + 22, 2: 4 + 32 + 16}
# Bounds on loop iterations, far above what real clients produce, so that a crafted
# 30 MB payload of tiny packets or chunks cannot keep a worker busy for long.
_MAX_ESK_PACKETS = 10_000
_MAX_PARTIAL_CHUNKS = 65_536

_SECUREJOIN_STEPS = {"vc-request", "vg-request"}


def _false_on_error(func: Callable[..., bool]) -> Callable[..., bool]:
    """Malformed input is a reason to refuse, never a crash of the filter."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> bool:
        try:
            return bool(func(*args, **kwargs))
        except Exception:  # any parser surprise means "not recognised"
            return False

    return wrapper


def parse_message(data: MessageLike) -> Message:
    """Parse raw bytes leniently (compat32 never raises on odd headers)."""
    if isinstance(data, Message):
        return data
    return email.message_from_bytes(bytes(data), policy=email.policy.compat32)


def _header(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    return None if value is None else str(value).strip()


def _body(part: Message) -> bytes:
    """The part's body with its transfer encoding undone."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise ValueError("part has no single body")
    return payload


def _has_defects(*msgs: Message) -> bool:
    """A broken MIME structure could hide cleartext beside a valid-looking part."""
    return any(msg.defects for msg in msgs)


def crc24(data: bytes) -> int:
    """The OpenPGP ASCII-armor checksum (RFC 4880 section 6.1)."""
    crc = 0xB704CE
    table = _CRC24_TABLE
    for octet in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ table[(crc >> 16) ^ octet]
    return crc


def _crc24_table() -> list[int]:
    table = []
    for index in range(256):
        crc = index << 16
        for _bit in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return table


_CRC24_TABLE = _crc24_table()


def dearmor(text: str, *, allow_version: bool = True) -> bytes | None:
    """Decode text holding exactly one ASCII-armored PGP MESSAGE, else None.

    Only blank lines may surround the block. Armor headers are accepted as long as
    they are well formed; ``Version:`` only when allow_version is set. A checksum
    line is optional and must match when present.
    """
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < 2 or lines[0] != _ARMOR_BEGIN or lines[-1] != _ARMOR_END:
        return None
    inner = lines[1:-1]

    position = 0
    while position < len(inner) and inner[position]:
        match = _ARMOR_HEADER.fullmatch(inner[position])
        if match is None:
            break
        if match.group(1).lower() == "version" and not allow_version:
            return None
        position += 1
    if position > 0:
        # Headers must be separated from the data by a blank line.
        if position >= len(inner) or inner[position]:
            return None
        position += 1
    elif position < len(inner) and not inner[position]:
        position += 1

    data_lines = inner[position:]
    checksum: bytes | None = None
    if data_lines:
        match = _CHECKSUM_LINE.fullmatch(data_lines[-1])
        if match is not None:
            checksum = base64.b64decode(match.group(1))
            data_lines = data_lines[:-1]
    if not all(_BASE64_LINE.fullmatch(line) for line in data_lines):
        return None
    try:
        data = base64.b64decode("".join(data_lines), validate=True)
    except (binascii.Error, ValueError):
        return None
    if checksum is not None and crc24(data) != int.from_bytes(checksum, "big"):
        return None
    return data


def _read_length(data: bytes, pos: int) -> tuple[int, int, bool]:
    """Decode a new-format body length at pos: (length, next pos, is_partial)."""
    if pos >= len(data):
        raise ValueError("truncated length")
    first = data[pos]
    if first < 192:
        return first, pos + 1, False
    if first < 224:
        if pos + 2 > len(data):
            raise ValueError("truncated length")
        return ((first - 192) << 8) + data[pos + 1] + 192, pos + 2, False
    if first == 255:
        if pos + 5 > len(data):
            raise ValueError("truncated length")
        return int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5, False
    return 1 << (first & 0x1F), pos + 1, True


def iter_packets(data: bytes) -> Iterable[tuple[int, bytes]]:
    """Yield (tag, body) for each OpenPGP packet; raise ValueError on bad framing."""
    pos = 0
    end = len(data)
    while pos < end:
        header = data[pos]
        if not header & 0x80:
            raise ValueError("packet header bit 7 not set")
        if header & 0x40:
            tag = header & 0x3F
            length, pos, partial = _read_length(data, pos + 1)
            if not partial:
                body = data[pos : pos + length]
                pos += length
            else:
                # RFC 4880 4.2.2.4: only data packets may be split in chunks.
                if tag != TAG_SEIPD:
                    raise ValueError("partial length on a non-data packet")
                chunks = []
                for _chunk in range(_MAX_PARTIAL_CHUNKS):
                    chunks.append(data[pos : pos + length])
                    pos += length
                    if not partial:
                        break
                    if pos >= end:
                        raise ValueError("partial body ends without a final length")
                    length, pos, partial = _read_length(data, pos)
                else:
                    raise ValueError("too many partial body chunks")
                body = b"".join(chunks)
        else:
            tag = (header >> 2) & 0x0F
            length_type = header & 0x03
            if length_type == 3:
                # Indeterminate length: the packet runs to the end of the data.
                body = data[pos + 1 :]
                pos = end
            else:
                size = 1 << length_type
                if pos + 1 + size > end:
                    raise ValueError("truncated old-format length")
                length = int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
                pos += 1 + size
                body = data[pos : pos + length]
                pos += length
        if pos > end:
            raise ValueError("packet extends past the end of the data")
        yield tag, body


def is_encrypted_payload(data: bytes) -> bool:
    """True if data is zero or more PKESK/SKESK packets and then exactly one SEIPD."""
    try:
        esk_count = 0
        seen_seipd = False
        for tag, body in iter_packets(data):
            if seen_seipd:
                return False
            if tag in _ESK_VERSIONS:
                esk_count += 1
                if esk_count > _MAX_ESK_PACKETS or not body:
                    return False
                if body[0] not in _ESK_VERSIONS[tag]:
                    return False
            elif tag == TAG_SEIPD:
                if not body or body[0] not in _SEIPD_MIN_LENGTH:
                    return False
                if len(body) < _SEIPD_MIN_LENGTH[body[0]]:
                    return False
                seen_seipd = True
            else:
                return False
        return seen_seipd
    except (ValueError, IndexError):
        return False


@_false_on_error
def is_encrypted(msg: MessageLike, outgoing: bool) -> bool:
    """True for a PGP/MIME encrypted message (RFC 3156) carrying a well-formed payload."""
    msg = parse_message(msg)
    if msg.get_content_type() != "multipart/encrypted" or not msg.is_multipart():
        return False
    parts = msg.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        return False
    if _has_defects(msg, *parts) or any(part.is_multipart() for part in parts):
        return False
    control, payload = parts
    if control.get_content_type() != "application/pgp-encrypted":
        return False
    if _body(control).strip() != b"Version: 1":
        return False
    if payload.get_content_type() != "application/octet-stream":
        return False
    text = _body(payload).decode("ascii")
    data = dearmor(text, allow_version=not outgoing)
    return data is not None and is_encrypted_payload(data)


def single_address(msg: Message, header: str) -> str | None:
    """The one address of a header that must hold exactly one (From:), else None.

    Parsed with the modern header parser, which knows domain literals and reports
    ambiguous input as defects; anything ambiguous counts as no address.
    """
    values = [value for name, value in msg.raw_items() if name.lower() == header.lower()]
    if len(values) != 1:
        return None
    # Raw 8-bit header bytes (SMTPUTF8 mail) arrive surrogate-escaped; restore them.
    value = str(values[0]).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    value = _FOLD.sub("", value)
    try:
        parsed = email.policy.default.header_factory(header, value)
        addresses = parsed.addresses
    except Exception:  # CR/LF left in the value and other junk
        return None
    if parsed.defects or len(addresses) != 1:
        return None
    (address,) = addresses
    if not address.username or not address.domain:
        return None
    return address.addr_spec


@_false_on_error
def is_securejoin(msg: MessageLike) -> bool:
    """True for the unencrypted first step of a Secure-Join (setup-contact) handshake."""
    msg = parse_message(msg)
    step = _header(msg, "Secure-Join")
    if step is None or step.lower() not in _SECUREJOIN_STEPS:
        return False
    if not msg.is_multipart() or _has_defects(msg):
        return False
    parts = msg.get_payload()
    if not isinstance(parts, list) or len(parts) != 1:
        return False
    (part,) = parts
    if part.is_multipart() or part.get_content_type() != "text/plain":
        return False
    text = _body(part).decode("utf-8").strip().lower()
    return text in {f"secure-join: {known}" for known in _SECUREJOIN_STEPS}


def _leaf_parts(msg: Message) -> list[Message]:
    return [part for part in msg.walk() if not part.is_multipart()]


@_false_on_error
def is_autocrypt_setup_message(
    msg: MessageLike, envelope_from: str, recipients: Iterable[str]
) -> bool:
    """True for an Autocrypt Setup Message sent by an account to itself only.

    Autocrypt Level 1 section 4.4: multipart/mixed with one application/autocrypt-setup
    part carrying a symmetrically encrypted, armored PGP MESSAGE (which may have
    Passphrase-* armor headers, possibly inside an HTML wrapper); besides it, only
    text/plain parts explaining what the message is are allowed.
    """
    msg = parse_message(msg)
    if (_header(msg, "Autocrypt-Setup-Message") or "").lower() != "v1":
        return False
    recipients = list(recipients)
    sender = envelope_from.lower()
    if not recipients or any(recipient.lower() != sender for recipient in recipients):
        return False
    if msg.get_content_type() != "multipart/mixed" or _has_defects(msg):
        return False
    setup_parts = []
    for part in _leaf_parts(msg):
        content_type = part.get_content_type()
        if content_type == "application/autocrypt-setup":
            setup_parts.append(part)
        elif content_type != "text/plain":
            return False
    if len(setup_parts) != 1:
        return False
    text = _body(setup_parts[0]).decode("utf-8")
    start = text.find(_ARMOR_BEGIN)
    stop = text.find(_ARMOR_END)
    if start < 0 or stop < start or text.count(_ARMOR_BEGIN) != 1:
        return False
    data = dearmor(text[start : stop + len(_ARMOR_END)])
    return data is not None and is_encrypted_payload(data)


@_false_on_error
def is_mailer_daemon_report(msg: MessageLike) -> bool:
    """True for an automatic delivery report (a bounce) from a mailer daemon."""
    msg = parse_message(msg)
    auto_submitted = _header(msg, "Auto-Submitted")
    if not auto_submitted or auto_submitted.lower() == "no":
        return False
    sender = single_address(msg, "From")
    if sender is None or sender.rpartition("@")[0].lower() != "mailer-daemon":
        return False
    return msg.get_content_type() == "multipart/report"
