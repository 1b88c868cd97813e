"""The message classifier: what counts as encrypted, Secure-Join, setup message, report."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil

import pgp_samples as s
import pytest
from chatrelay import openpgp
from chatrelay.openpgp import (
    dearmor,
    is_autocrypt_setup_message,
    is_encrypted,
    is_encrypted_payload,
    is_mailer_daemon_report,
    is_securejoin,
    iter_packets,
    parse_message,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BOTH = pytest.mark.parametrize("outgoing", [True, False], ids=["outgoing", "incoming"])


@pytest.fixture(scope="module")
def gnupg():
    if shutil.which("gpg") is None:
        pytest.skip("gpg not installed")
    gpg = s.GnuPG(["bob@example.net", "carol@example.com"])
    yield gpg
    gpg.close()


# --- real messages from GnuPG --------------------------------------------------------


@BOTH
def test_gpg_public_key_message_is_encrypted(gnupg, outgoing):
    armored = gnupg.encrypt(b"Hello Bob", ["bob@example.net"])
    assert is_encrypted(s.pgp_mime(armored), outgoing)


@BOTH
def test_gpg_message_to_several_recipients_is_encrypted(gnupg, outgoing):
    armored = gnupg.encrypt(b"Hello both", ["bob@example.net", "carol@example.com"])
    packets = [tag for tag, _unused in iter_packets(dearmor(armored))]
    assert packets == [1, 1, 18]
    assert is_encrypted(s.pgp_mime(armored), outgoing)


@BOTH
def test_gpg_symmetric_message_is_encrypted(gnupg, outgoing):
    armored = gnupg.encrypt_symmetric(b"Hello", "correct horse")
    assert [tag for tag, _unused in iter_packets(dearmor(armored))] == [3, 18]
    assert is_encrypted(s.pgp_mime(armored), outgoing)


def test_gpg_streamed_message_uses_partial_lengths(gnupg):
    # Data from a pipe has no known length, so gpg writes the SEIPD in partial chunks.
    armored = gnupg.encrypt(os.urandom(300_000), ["bob@example.net"], "--compress-algo", "none")
    data = dearmor(armored)
    assert data[0] & 0xC0 == 0x80, "gpg writes the PKESK in the old format"
    size = 1 << (data[0] & 0x03)
    seipd = 1 + size + int.from_bytes(data[1 : 1 + size], "big")
    assert data[seipd] == 0xC0 | 18
    assert 224 <= data[seipd + 1] < 255
    assert is_encrypted(s.pgp_mime(armored), outgoing=True)


def test_gpg_message_with_version_header_only_incoming(gnupg):
    armored = gnupg.encrypt(b"Hi", ["bob@example.net"])
    with_version = armored.replace(
        "-----BEGIN PGP MESSAGE-----\n", "-----BEGIN PGP MESSAGE-----\nVersion: GnuPG v2\n"
    )
    assert with_version != armored
    assert not is_encrypted(s.pgp_mime(with_version), outgoing=True)
    assert is_encrypted(s.pgp_mime(with_version), outgoing=False)


def test_gpg_message_corrupted_checksum_is_refused(gnupg):
    armored = gnupg.encrypt(b"Hi", ["bob@example.net"])
    lines = armored.splitlines()
    checksum = next(i for i, line in enumerate(lines) if line.startswith("="))
    lines[checksum] = "=AAAA" if lines[checksum] != "=AAAA" else "=AAAB"
    assert not is_encrypted(s.pgp_mime("\n".join(lines)), outgoing=True)


def test_gpg_signed_but_unencrypted_message_is_refused(gnupg):
    armored = gnupg.run("--armor", "--sign", "--local-user", "bob@example.net", data=b"spam")
    assert not is_encrypted(s.pgp_mime(armored.decode("ascii")), outgoing=False)


def test_is_encrypted_accepts_a_parsed_message(gnupg):
    armored = gnupg.encrypt(b"Hi", ["bob@example.net"])
    assert is_encrypted(parse_message(s.pgp_mime(armored)), outgoing=True)


# --- hand-made packet sequences ------------------------------------------------------

VALID_SEQUENCES = {
    "pkesk+seipd": s.PKESK + s.SEIPD,
    "skesk+seipd": s.SKESK + s.SEIPD,
    "seipd only": s.SEIPD,
    "two pkesk+skesk+seipd": s.PKESK + s.PKESK + s.SKESK + s.SEIPD,
    "old-format 1-octet pkesk": s.old_packet(1, s.pkesk_body()[:200], 0) + s.SEIPD,
    "old-format 2-octet pkesk": s.old_packet(1, s.pkesk_body(), 1) + s.SEIPD,
    "old-format 4-octet skesk": s.old_packet(3, s.skesk_body(), 2) + s.SEIPD,
    "2-octet length seipd": s.PKESK + s.packet(18, s.seipd_body(5000)),
    "5-octet length seipd": s.PKESK + s.packet(18, s.seipd_body(100), octets=5),
    "partial seipd": s.PKESK + s.partial_packet(18, s.seipd_body(5000), 9),
    "partial seipd ending at chunk end": s.PKESK + s.partial_packet(18, s.seipd_body(1023)),
    "partial seipd with big chunks": s.SKESK + s.partial_packet(18, s.seipd_body(70_000), 14),
    "v6 pkesk + v2 seipd": s.packet(1, s.pkesk_body(6)) + s.packet(18, s.seipd_body(80, 2)),
    "v6 skesk": s.packet(3, s.skesk_body(6)) + s.SEIPD,
}

INVALID_SEQUENCES = {
    "empty": b"",
    "pkesk only": s.PKESK,
    "seipd before pkesk": s.SEIPD + s.PKESK,
    "two seipd": s.PKESK + s.SEIPD + s.SEIPD,
    "trailing junk": s.PKESK + s.SEIPD + b"\x00junk",
    "trailing byte": s.PKESK + s.SEIPD + b"\xd2",
    "truncated seipd": (s.PKESK + s.SEIPD)[:-1],
    "literal data": s.packet(11, b"b\x00\x00\x00\x00\x00Buy now!"),
    "compressed data": s.PKESK + s.packet(8, b"\x01" + os.urandom(50)),
    "signature then seipd": s.packet(2, os.urandom(50)) + s.SEIPD,
    "symmetrically encrypted without mdc (tag 9)": s.PKESK + s.packet(9, os.urandom(100)),
    "aead packet (tag 20)": s.PKESK + s.packet(20, os.urandom(100)),
    "marker packet": s.packet(10, b"PGP") + s.SEIPD,
    "seipd then padding": s.PKESK + s.SEIPD + s.packet(21, b"\x00" * 16),
    "partial length on pkesk": s.partial_packet(1, s.pkesk_body(), 8) + s.SEIPD,
    "partial seipd without final length": s.PKESK + b"\xd2\xe9" + os.urandom(512),
    "header bit 7 clear": b"\x41" + s.SEIPD[1:],
    "old-format indeterminate pkesk": s.old_packet(1, s.pkesk_body(), 3) + s.SEIPD,
    "unknown pkesk version": s.packet(1, s.pkesk_body(4)) + s.SEIPD,
    "unknown seipd version": s.PKESK + s.packet(18, s.seipd_body(100, 3)),
    "seipd too short for an mdc": s.PKESK + s.packet(18, s.seipd_body(10)),
    "empty seipd": s.PKESK + s.packet(18, b""),
    "length past the end": s.PKESK + b"\xd2\xff\x00\x01\x00\x00" + s.seipd_body(),
    "truncated 5-octet length": s.PKESK + b"\xd2\xff\x00",
    "truncated 2-octet length": s.PKESK + b"\xd2\xc5",
}


@pytest.mark.parametrize("data", VALID_SEQUENCES.values(), ids=VALID_SEQUENCES.keys())
def test_valid_packet_sequences(data):
    assert is_encrypted_payload(data)
    assert is_encrypted(s.pgp_mime(s.armor(data)), outgoing=True)


@pytest.mark.parametrize("data", INVALID_SEQUENCES.values(), ids=INVALID_SEQUENCES.keys())
def test_invalid_packet_sequences(data):
    assert not is_encrypted_payload(data)
    assert not is_encrypted(s.pgp_mime(s.armor(data)), outgoing=False)


def test_partial_chunks_are_joined():
    body = s.seipd_body(3000)
    [(tag, parsed)] = list(iter_packets(s.partial_packet(18, body, 9)))
    assert (tag, parsed) == (18, body)


def test_absurd_number_of_partial_chunks_is_refused():
    # One-octet chunks: legal framing, but a cheap way to burn CPU on a huge message.
    body = s.seipd_body(70_000)
    assert not is_encrypted_payload(s.PKESK + s.partial_packet(18, body, 0))
    assert is_encrypted_payload(s.PKESK + s.partial_packet(18, body, 9))


def test_crc24_known_value():
    # The CRC-24 of the empty string is the initial value; "123456789" is the standard check.
    assert openpgp.crc24(b"") == 0xB704CE
    assert openpgp.crc24(b"123456789") == 0x21CF02


# --- armor ---------------------------------------------------------------------------

PAYLOAD = s.PKESK + s.SEIPD


def test_armor_without_checksum_is_accepted():
    assert is_encrypted(s.pgp_mime(s.armor(PAYLOAD, checksum=False)), outgoing=True)


def test_armor_with_comment_header_is_accepted_outgoing():
    armored = s.armor(PAYLOAD, headers=("Comment: https://example.org",))
    assert is_encrypted(s.pgp_mime(armored), outgoing=True)


@pytest.mark.parametrize("header", ["Version: rPGP 0.10", "version: 1"])
def test_armor_version_header(header):
    armored = s.armor(PAYLOAD, headers=(header,))
    assert not is_encrypted(s.pgp_mime(armored), outgoing=True)
    assert is_encrypted(s.pgp_mime(armored), outgoing=False)


def test_armor_with_long_lines_and_lf_endings():
    armored = s.armor(PAYLOAD, line_length=1000).replace("\r\n", "\n")
    assert is_encrypted(s.pgp_mime(armored), outgoing=True)


ARMOR = s.armor(PAYLOAD)
BAD_ARMOR = {
    "text before": "Buy cheap pills!\r\n" + ARMOR,
    "text after": ARMOR + "Buy cheap pills!\r\n",
    "two blocks": ARMOR + ARMOR,
    "junk base64": ARMOR.replace(ARMOR.splitlines()[3], "!!!! not base64 !!!!"),
    "bad padding": ARMOR.replace(ARMOR.splitlines()[2], ARMOR.splitlines()[2][:-1]),
    "wrong checksum": s.armor(PAYLOAD).replace(ARMOR.splitlines()[-2], "=AAAA"),
    "no end line": ARMOR.replace("-----END PGP MESSAGE-----", ""),
    "public key block": ARMOR.replace("PGP MESSAGE", "PGP PUBLIC KEY BLOCK"),
    "signed message": ARMOR.replace("PGP MESSAGE", "PGP SIGNED MESSAGE"),
    "header without blank line": ARMOR.replace("-----\r\n\r\n", "-----\r\nComment: x\r\n"),
    "malformed header": ARMOR.replace("-----\r\n\r\n", "-----\r\nNo colon here\r\n\r\n"),
    "empty": "",
    "only markers": "-----BEGIN PGP MESSAGE-----\r\n\r\n-----END PGP MESSAGE-----\r\n",
}


@pytest.mark.parametrize("armored", BAD_ARMOR.values(), ids=BAD_ARMOR.keys())
def test_bad_armor_is_refused(armored):
    assert not is_encrypted(s.pgp_mime(armored), outgoing=False)


def test_dearmor_returns_the_payload():
    assert dearmor(ARMOR) == PAYLOAD
    assert dearmor(ARMOR.replace("\r\n", "  \n")) == PAYLOAD
    assert dearmor("\r\n\r\n" + ARMOR + "\r\n\r\n") == PAYLOAD


# --- MIME structure ------------------------------------------------------------------


def test_mime_wrapper_sanity():
    assert is_encrypted(s.pgp_mime(ARMOR), outgoing=True)


BAD_MIME = {
    "three parts": s.pgp_mime(ARMOR, extra_parts=(s.text_part("Buy now"),)),
    "top multipart/mixed": s.pgp_mime(ARMOR, top_type="multipart/mixed"),
    "control text/plain": s.pgp_mime(ARMOR, control_type="text/plain"),
    "control version 2": s.pgp_mime(ARMOR, control_body="Version: 2"),
    "control with extra text": s.pgp_mime(ARMOR, control_body="Version: 1\r\nBuy now"),
    "payload text/plain": s.pgp_mime(ARMOR, payload_type="text/plain"),
    "payload application/pgp-encrypted": s.pgp_mime(
        ARMOR, payload_type="application/pgp-encrypted"
    ),
    "not multipart": s.cleartext(text=ARMOR),
    "nested": s.multipart(
        "multipart/encrypted",
        [
            s.text_part("Version: 1", "application/pgp-encrypted"),
            "Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\n"
            + s.text_part(ARMOR, "application/octet-stream")
            + "--inner--\r\n",
        ],
        s.headers("alice@example.org", "bob@example.net"),
    ),
    "missing closing boundary": s.pgp_mime(ARMOR).replace(b"--==pgp-mime-boundary==--", b""),
    "garbage": b"\x00\xff" * 100,
    "empty": b"",
}


@pytest.mark.parametrize("message", BAD_MIME.values(), ids=BAD_MIME.keys())
def test_bad_mime_structure_is_refused(message):
    assert not is_encrypted(message, outgoing=False)


def test_base64_transfer_encoded_parts_are_decoded():
    encoded = base64.encodebytes(ARMOR.encode("ascii")).decode("ascii")
    message = s.pgp_mime(encoded).replace(
        b'filename="encrypted.asc"\r\n',
        b'filename="encrypted.asc"\r\nContent-Transfer-Encoding: base64\r\n',
    )
    assert is_encrypted(message, outgoing=True)


# --- Secure-Join ---------------------------------------------------------------------


@pytest.mark.parametrize("step", ["vc-request", "vg-request"])
def test_securejoin_request(step):
    assert is_securejoin(s.securejoin(step))


def test_securejoin_body_is_trimmed_and_case_insensitive():
    assert is_securejoin(s.securejoin(body="  SECURE-JOIN: VC-REQUEST \r\n\r\n"))


NOT_SECUREJOIN = {
    "other step": s.securejoin("vc-auth-required"),
    "wrong body": s.securejoin(body="Secure-Join: vc-request. Buy now!"),
    "body of other step": s.securejoin(body="Secure-Join: vc-auth-required"),
    "two parts": s.securejoin(parts=[s.text_part("Secure-Join: vc-request")] * 2),
    "html part": s.securejoin(parts=[s.text_part("Secure-Join: vc-request", "text/html")]),
    "no header": s.cleartext(text="Secure-Join: vc-request"),
    "single part message": s.cleartext(text="Secure-Join: vc-request").replace(
        b"MIME-Version", b"Secure-Join: vc-request\r\nMIME-Version"
    ),
}


@pytest.mark.parametrize("message", NOT_SECUREJOIN.values(), ids=NOT_SECUREJOIN.keys())
def test_not_securejoin(message):
    assert not is_securejoin(message)


# --- Autocrypt Setup Message ---------------------------------------------------------


def test_setup_message_to_oneself():
    message = s.setup_message()
    assert is_autocrypt_setup_message(message, "alice@example.org", ["alice@example.org"])
    assert is_autocrypt_setup_message(message, "Alice@Example.org", ["alice@example.ORG"])


def test_setup_message_to_someone_else_is_refused():
    message = s.setup_message(recipient="bob@example.net")
    assert not is_autocrypt_setup_message(message, "alice@example.org", ["bob@example.net"])
    assert not is_autocrypt_setup_message(
        message, "alice@example.org", ["alice@example.org", "bob@example.net"]
    )
    assert not is_autocrypt_setup_message(message, "alice@example.org", [])


NOT_SETUP = {
    "no header": s.setup_message(header="v2"),
    "cleartext attachment": s.setup_message(payload=b"\xa3\x01Buy now"),
    "extra image": s.setup_message(extra_parts=(s.text_part("xx", "image/png"),)),
    "plain text mail": s.cleartext("alice@example.org", "alice@example.org"),
    "attachment without armor": s.setup_message().replace(b"BEGIN PGP MESSAGE", b"BEGIN"),
    "two armored blocks": s.setup_message().replace(
        b"</pre>", s.armor(s.SKESK + s.SEIPD).encode("ascii") + b"</pre>"
    ),
    "two setup attachments": s.setup_message(
        extra_parts=(s.setup_message().split(b"--==sample-boundary==")[2].decode("ascii")[2:],)
    ),
}


@pytest.mark.parametrize("message", NOT_SETUP.values(), ids=NOT_SETUP.keys())
def test_not_setup_message(message):
    assert not is_autocrypt_setup_message(message, "alice@example.org", ["alice@example.org"])


# --- mailer-daemon reports -----------------------------------------------------------


def test_mailer_daemon_report():
    assert is_mailer_daemon_report(s.mailer_daemon_report())
    assert is_mailer_daemon_report(s.mailer_daemon_report("mailer-daemon@example.net"))


NOT_REPORT = {
    "auto-submitted no": s.mailer_daemon_report(auto_submitted="no"),
    "no auto-submitted": s.mailer_daemon_report(auto_submitted=None),
    "other sender": s.mailer_daemon_report(sender="postmaster@example.net"),
    "look-alike sender": s.mailer_daemon_report(sender="mailer-daemon.x@example.net"),
    "not a report": s.mailer_daemon_report(top_type="multipart/mixed"),
}


@pytest.mark.parametrize("message", NOT_REPORT.values(), ids=NOT_REPORT.keys())
def test_not_mailer_daemon_report(message):
    assert not is_mailer_daemon_report(message)


# --- nothing random is ever encrypted, and nothing raises ----------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4000))
def test_random_bytes_are_never_encrypted(data):
    for outgoing in (True, False):
        assert not is_encrypted(data, outgoing)
    is_securejoin(data)
    is_mailer_daemon_report(data)
    is_autocrypt_setup_message(data, "alice@example.org", ["alice@example.org"])
    parse_message(data)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_payload_in_a_pgp_mime_wrapper_is_not_encrypted(data):
    assert not is_encrypted(s.pgp_mime(s.armor(data)), outgoing=False)


@FUZZ
@given(st.binary(max_size=2000))
def test_packet_parser_only_raises_value_error(data):
    with contextlib.suppress(ValueError):
        list(iter_packets(data))
    is_encrypted_payload(data)


@FUZZ
@given(st.text(max_size=2000))
def test_dearmor_never_raises(text):
    dearmor(text)
    dearmor(ARMOR[:50] + text + ARMOR[-40:])


@FUZZ
@given(st.integers(min_value=0), st.binary(min_size=1, max_size=8))
def test_mutated_messages_never_raise(position, junk):
    message = s.pgp_mime(ARMOR)
    position %= len(message)
    for outgoing in (True, False):
        is_encrypted(message[:position] + junk + message[position + len(junk) :], outgoing)
        is_encrypted(message[:position], outgoing)


# --- the From: address ---------------------------------------------------------------

FROM_HEADERS = {
    "From: <alice@example.org>": "alice@example.org",
    "From: Alice <alice@example.org>": "alice@example.org",
    "From: =?utf-8?q?Gr=C3=BC=C3=9Fe?= <alice@example.org>": "alice@example.org",
    "From: Alice\r\n <alice@example.org>": "alice@example.org",
    "From: carol@[192.0.2.1]": "carol@[192.0.2.1]",
    "From: MAILER-DAEMON@example.net (Mail Delivery System)": "MAILER-DAEMON@example.net",
    "From: alice@example.org, bob@example.org": None,
    "From: alice@example.org <bob@example.org>": None,
    "From: alice": None,
    "From: <>": None,
    "From:": None,
}


@pytest.mark.parametrize("header, expected", FROM_HEADERS.items(), ids=FROM_HEADERS.keys())
def test_single_from_address(header, expected):
    msg = parse_message(f"{header}\r\nTo: x@example.org\r\n\r\nbody\r\n".encode())
    assert openpgp.single_address(msg, "From") == expected


def test_raw_utf8_display_name():
    msg = parse_message("From: Grüße <alice@example.org>\r\n\r\nbody\r\n".encode())
    assert openpgp.single_address(msg, "From") == "alice@example.org"


def test_two_from_headers_have_no_single_address():
    msg = parse_message(b"From: <a@example.org>\r\nFrom: <a@example.org>\r\n\r\nbody\r\n")
    assert openpgp.single_address(msg, "From") is None
