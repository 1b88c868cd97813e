"""The relay's certificate comes from the ACME server (Pebble), everywhere, and renews."""

from __future__ import annotations

import imaplib
import os
import ssl
import urllib.request

import pytest
from cryptography import x509
from mailclient import tls_context
from testbed import container_address
from tlsprobe import ENDPOINTS, IDS, served_certificate


def pebble_pem(path: str) -> str:
    """Pebble's issuing root or intermediate, from its management API."""
    context = ssl.create_default_context(cafile=os.environ["CHATMAIL_PEBBLE_LISTENER_CA"])
    context.check_hostname = False  # the listener's name only resolves inside containers
    address = container_address(os.environ["CHATMAIL_PEBBLE"])
    with urllib.request.urlopen(f"https://{address}:15000{path}", context=context) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def pebble_root() -> str:
    """Pebble's root only: the relay must send the intermediate itself."""
    return pebble_pem("/roots/0")


def installed_certificate(host) -> x509.Certificate:
    return x509.load_pem_x509_certificate(host.file(os.environ["CHATMAIL_TLS_CERT_FILE"]).content)


def test_the_certificate_names_the_relay_and_comes_from_the_acme_server(host, domain):
    cert = installed_certificate(host)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(names.get_values_for_type(x509.DNSName)) == sorted(
        [domain, f"www.{domain}", f"mta-sts.{domain}"]
    )
    assert "Pebble" in cert.issuer.rfc4514_string()
    assert cert.public_key().curve.name == "secp256r1"


@pytest.mark.parametrize(("port", "how", "alpn"), ENDPOINTS, ids=IDS)
def test_every_service_presents_it(relay_ip, domain, host, pebble_root, port, how, alpn):
    served = served_certificate(relay_ip, port, how, alpn, domain, pebble_root)
    assert served.serial_number == installed_certificate(host).serial_number


def test_a_renewal_reaches_every_service(relay_ip, domain, host, pebble_root, account):
    before = installed_certificate(host).serial_number
    # A client connected before the renewal keeps its connection.
    imap = imaplib.IMAP4_SSL(relay_ip, 993, ssl_context=tls_context(), timeout=30)
    imap.login(*account)
    # certbot's own timer service; Pebble's 10-day certificates are always due.
    host.run_test("systemctl start certbot.service")
    after = installed_certificate(host).serial_number
    assert after != before, "certbot renewed nothing"
    assert imap.noop()[0] == "OK"
    imap.logout()
    for port, how, alpn in ENDPOINTS:
        served = served_certificate(relay_ip, port, how, alpn, domain, pebble_root)
        assert served.serial_number == after, f"port {port} ({alpn or how}) serves the old one"


def test_accounts_belong_to_the_operators_mail_user(host, account):
    """chatmail_vmail_user and chatmail_vmail_home, set once, are what every role used."""
    user = os.environ["CHATMAIL_VMAIL_USER"]
    account_dir = host.file(f"{os.environ['CHATMAIL_MAILBOXES_DIR']}/{account[0]}")
    assert account_dir.is_directory
    assert (account_dir.user, account_dir.group) == (user, user)
    assert host.file(f"{account_dir.path}/password").user == user
