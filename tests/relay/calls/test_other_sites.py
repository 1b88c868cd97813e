"""Port 443 shared with the operator's other web site (role nginx, nginx_other_sites).

Scenario calls runs that site in a container of its own (molecule/calls prepare.yml,
tests/relay/calls/other_site.py) with a certificate from another test CA:
www.other.test and other.test on its port 8443 (plain HTTP on 8080), and
proxied.other.test on its port 8444, which reads PROXY protocol. Its pages say which
listener answered and which client address it saw.
"""

from __future__ import annotations

import re
import socket
import ssl
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from testbed import client_address, required_env
from webclient import http_plain, https, s_client, smtp_by_alpn


@pytest.fixture(scope="module")
def other_ca() -> str:
    folder = Path(required_env("CHATMAIL_OTHER_SITE_CA", "the other site's test CA folder"))
    return (folder / "ca.pem").read_text()


@pytest.fixture(scope="module")
def relay_ca() -> str:
    folder = Path(required_env("CHATMAIL_OPERATOR_CA", "the relay's test CA folder"))
    return (folder / "ca.pem").read_text()


def verified_get(address: str, name: str, ca: str) -> tuple[int, bytes, x509.Certificate]:
    """GET https://<name>/ at address, the certificate verified for name against ca."""
    context = ssl.create_default_context(cadata=ca)
    with (
        socket.create_connection((address, 443), timeout=30) as sock,
        context.wrap_socket(sock, server_hostname=name) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.0\r\nHost: {name}\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        certificate = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1], certificate


def issuer(certificate: x509.Certificate) -> str:
    return certificate.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


@pytest.mark.parametrize("name", ["www.other.test", "other.test"])
def test_the_other_sites_names_get_its_page_and_its_certificate(relay_ip, other_ca, name):
    status, body, certificate = verified_get(relay_ip, name, other_ca)
    assert status == 200
    assert body.decode().startswith(f"other site via https: host={name} "), body
    assert issuer(certificate) == "Other site test CA"


def test_a_site_without_proxy_protocol_sees_the_relay_as_its_client(relay_ip, other_ca):
    _status, body, _certificate = verified_get(relay_ip, "www.other.test", other_ca)
    assert body.decode().rstrip().endswith(f" client={relay_ip}"), body


def test_a_site_with_proxy_protocol_learns_the_clients_address(relay_ip, other_ca):
    status, body, certificate = verified_get(relay_ip, "proxied.other.test", other_ca)
    assert status == 200
    assert body.decode() == (
        f"other site via https-proxy-protocol: host=proxied.other.test"
        f" client={client_address(relay_ip)}\n"
    )
    assert issuer(certificate) == "Other site test CA"


def test_port_80_of_a_site_with_an_http_server_reaches_it(relay_ip):
    status, _headers, body = http_plain(relay_ip, "www.other.test", "/plain")
    assert status == 200
    assert body.decode().startswith("other site via http: host=www.other.test "), body


def test_port_80_of_a_site_without_one_redirects_and_keeps_the_relays_challenges(
    relay_ip, domain, host
):
    token = uuid.uuid4().hex
    challenge = f"/.well-known/acme-challenge/{token}"
    host.run_test(f"echo {token}-proof > /var/lib/chatmail/acme{challenge}")
    try:
        status, headers, _body = http_plain(relay_ip, "proxied.other.test", challenge)
        assert status == 301
        assert headers["Location"] == f"https://proxied.other.test{challenge}"
        status, _headers, body = http_plain(relay_ip, domain, challenge)
        assert (status, body) == (200, f"{token}-proof\n".encode())
    finally:
        host.run(f"rm -f /var/lib/chatmail/acme{challenge}")


def test_the_relays_own_names_still_get_the_relay(relay_ip, domain, relay_ca):
    status, body, certificate = verified_get(relay_ip, domain, relay_ca)
    assert status == 200
    assert b"<html" in body
    assert issuer(certificate) == "Operator test CA"
    status, _headers, body = https(relay_ip, f"mta-sts.{domain}", "/.well-known/mta-sts.txt")
    assert status == 200 and b"mode: enforce" in body
    status, headers, _body = https(relay_ip, f"www.{domain}", "/info")
    assert (status, headers["Location"]) == (301, f"https://{domain}/info")


def test_imap_by_alpn_on_443_still_reaches_dovecot(relay_ip, domain):
    output = s_client(relay_ip, "imap", b"a CAPABILITY\r\nb LOGOUT\r\n", domain)
    assert output.startswith("* OK"), output
    assert "XCHATMAIL" in output


def test_smtp_by_alpn_on_443_still_reaches_postfix(relay_ip, domain):
    smtp = smtp_by_alpn(relay_ip, domain)
    code, features = smtp.ehlo("test.example")
    assert code == 250
    assert re.search(rb"^AUTH\b.*\bPLAIN\b", features, re.M), features
    assert smtp.quit()[0] == 221
