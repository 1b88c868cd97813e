"""The relay serves the certificate its operator maintains, and follows its renewals.

With chatmail_tls_mode external the operator's own tools (another ACME client, a
corporate CA) write a certificate chain and key on the host; the relay installs
them when either file changes. CHATMAIL_OPERATOR_CA names the directory with the
test CA that signs them (ca.pem, ca.key); CHATMAIL_OPERATOR_CERT and
CHATMAIL_OPERATOR_KEY the files on the relay.
"""

from __future__ import annotations

import datetime
import imaplib
import os
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mailclient import tls_context
from tlsprobe import ENDPOINTS, IDS, served_certificate

# chatmail-tls-install waits this long for a key that belongs to the chain.
INSTALL_WAIT = 10


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    directory = Path(os.environ["CHATMAIL_OPERATOR_CA"])
    cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    return cert, key


@pytest.fixture(scope="module")
def ca_pem(ca) -> str:
    return ca[0].public_bytes(serialization.Encoding.PEM).decode()


def issue(ca, domain: str) -> tuple[bytes, bytes]:
    """A new key and a certificate for the relay's names, as the operator's CA makes them."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [domain, f"www.{domain}", f"mta-sts.{domain}"]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write(container: str, path: str, data: bytes) -> None:
    """Replace a file on the relay the way tools do: a new file renamed into place."""
    subprocess.run(
        ["docker", "exec", "-i", container, "sh", "-ec", f"cat > {path}.tmp; mv {path}.tmp {path}"],
        input=data,
        check=True,
    )


def serials(relay_ip: str, domain: str, ca_pem: str) -> dict[str, int]:
    """The serial number each endpoint presents, verified against the operator's CA."""
    return {
        ident: served_certificate(relay_ip, port, how, alpn, domain, ca_pem).serial_number
        for ident, (port, how, alpn) in zip(IDS, ENDPOINTS, strict=True)
    }


def wait_for_serial(relay_ip: str, domain: str, ca_pem: str, serial: int, timeout: float):
    """Seconds until every endpoint presents the certificate with this serial."""
    start = time.monotonic()
    while True:
        served = serials(relay_ip, domain, ca_pem)
        if set(served.values()) == {serial}:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"after {timeout} s the endpoints serve {served}, not serial {serial}")
        time.sleep(0.5)


def operator_serial(host) -> int:
    pem = host.file(os.environ["CHATMAIL_OPERATOR_CERT"]).content
    return x509.load_pem_x509_certificate(pem).serial_number


@pytest.mark.parametrize(("port", "how", "alpn"), ENDPOINTS, ids=IDS)
def test_every_service_presents_the_operators_certificate(
    relay_ip, domain, host, ca_pem, port, how, alpn
):
    served = served_certificate(relay_ip, port, how, alpn, domain, ca_pem)
    assert served.serial_number == operator_serial(host)


def test_a_renewal_by_the_operator_reaches_every_service(
    relay_ip, domain, host, container, ca, ca_pem, account
):
    imap = imaplib.IMAP4_SSL(relay_ip, 993, ssl_context=tls_context(), timeout=30)
    imap.login(*account)
    cert, key = issue(ca, domain)
    # The operator's tool writes the chain first and the key a moment later;
    # in between the two do not belong together and nothing is installed.
    write(container, os.environ["CHATMAIL_OPERATOR_CERT"], cert)
    time.sleep(2)
    write(container, os.environ["CHATMAIL_OPERATOR_KEY"], key)
    new = x509.load_pem_x509_certificate(cert).serial_number
    took = wait_for_serial(relay_ip, domain, ca_pem, new, timeout=30)
    print(f"operator's renewal served everywhere {took:.1f} s after the key was written")
    # A client connected before the renewal keeps its connection.
    assert imap.noop()[0] == "OK"
    imap.logout()
    assert not host.run("systemctl is-failed --quiet chatmail-tls-update.service").succeeded


def test_a_key_that_does_not_belong_to_the_chain_is_never_installed(
    relay_ip, domain, host, container, ca, ca_pem
):
    before = serials(relay_ip, domain, ca_pem)
    installed = host.file("/etc/chatmail/tls/fullchain.pem").content
    cert, key = issue(ca, domain)
    write(container, os.environ["CHATMAIL_OPERATOR_CERT"], cert)
    time.sleep(INSTALL_WAIT + 3)
    # The daemons keep serving the certificate they had, which still works.
    assert host.file("/etc/chatmail/tls/fullchain.pem").content == installed
    assert serials(relay_ip, domain, ca_pem) == before
    assert host.run("systemctl is-failed --quiet chatmail-tls-update.service").succeeded
    log = host.run("journalctl --no-pager -o cat -u chatmail-tls-update --since -1min").stdout
    assert "is not the private key of the certificate" in log
    # Once the matching key arrives, the pair is installed.
    write(container, os.environ["CHATMAIL_OPERATOR_KEY"], key)
    new = x509.load_pem_x509_certificate(cert).serial_number
    wait_for_serial(relay_ip, domain, ca_pem, new, timeout=30)
