"""nginx: port 443 for web and mail clients, the web site, /new, autoconfig, MTA-STS."""

from __future__ import annotations

import imaplib
import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from deltachat_helpers import delta_chat, new_online_account, secure_join, send_and_receive
from mailclient import imap_login, tls_context
from webclient import http_plain, https, s_client, smtp_by_alpn

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


def test_alpn_imap_on_443_talks_to_dovecot(relay_ip):
    output = s_client(relay_ip, "imap", b"a CAPABILITY\r\nb LOGOUT\r\n")
    assert output.startswith("* OK"), output
    assert "XCHATMAIL" in output
    assert "* BYE" in output


def test_alpn_smtp_on_443_talks_to_postfix(relay_ip):
    smtp = smtp_by_alpn(relay_ip)
    code, features = smtp.ehlo("test.example")
    assert code == 250
    assert re.search(rb"^AUTH\b.*\bPLAIN\b", features, re.M), features
    assert smtp.quit()[0] == 221


def test_no_alpn_on_443_gets_the_web_site(relay_ip, domain):
    output = s_client(relay_ip, None, f"GET / HTTP/1.0\r\nHost: {domain}\r\n\r\n".encode(), domain)
    assert output.startswith("HTTP/1.1 200"), output
    assert "<html" in output


def test_mail_clients_on_443_are_known_by_their_own_address(relay_ip, account, host):
    """nginx passes the client's address on (PROXY protocol): limits and logs see it."""
    context = tls_context()
    context.set_alpn_protocols(["imap"])
    imap = imaplib.IMAP4_SSL(relay_ip, 443, ssl_context=context, timeout=30)
    imap.login(*account)
    imap.logout()
    client = subprocess.run(
        ["ip", "-o", "route", "get", relay_ip], capture_output=True, text=True, check=True
    ).stdout
    [source] = re.findall(r"\bsrc (\S+)", client)
    log = host.run(f"journalctl --no-pager -o cat -u dovecot --since -1min | grep '{account[0]}'")
    logins = re.findall(r"Login: user=<[^>]+>.*?rip=([0-9.]+)", log.stdout)
    assert logins and logins[-1] == source, log.stdout


def test_an_account_from_new_logs_in(relay_ip, domain):
    status, headers, body = https(relay_ip, domain, "/new", method="POST")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    credentials = json.loads(body)
    assert credentials["email"].endswith("@" + domain)
    imap_login(relay_ip, credentials["email"], credentials["password"]).logout()
    # A self-signed relay also offers a dclogin: link that accepts its certificate.
    if "dclogin_url" in credentials:
        url = urlsplit(credentials["dclogin_url"])
        assert url.scheme == "dclogin" and url.path == credentials["email"]
        assert parse_qs(url.query)["p"] == [credentials["password"]]


def test_new_opened_in_a_browser_redirects_to_delta_chat(relay_ip, domain):
    status, headers, _unused = https(relay_ip, domain, "/new")
    assert status == 302
    assert headers["Location"] == f"dcaccount:https://{domain}/new"
    status, _unused, _unused = https(relay_ip, domain, "/new", method="PUT", body=b"")
    assert status == 405


def test_new_is_rate_limited(relay_ip, domain):
    statuses = [https(relay_ip, domain, "/new", method="POST")[0] for _unused in range(20)]
    assert statuses[0] == 200
    assert 429 in statuses, statuses
    # The bucket refills; later tests get credentials again.
    time.sleep(4)


def test_autoconfig_lists_every_way_in(relay_ip, domain):
    status, headers, body = https(relay_ip, domain, "/.well-known/autoconfig/mail/config-v1.1.xml")
    assert status == 200
    assert "xml" in headers["Content-Type"]
    provider = ET.fromstring(body).find("emailProvider")
    servers = [
        (
            server.tag,
            server.get("type"),
            server.findtext("hostname"),
            server.findtext("port"),
            server.findtext("socketType"),
            server.findtext("authentication"),
            server.findtext("username"),
        )
        for server in provider
        if server.tag in ("incomingServer", "outgoingServer")
    ]
    common = ("password-cleartext", "%EMAILADDRESS%")
    assert servers == [
        ("incomingServer", "imap", domain, "993", "SSL", *common),
        ("incomingServer", "imap", domain, "143", "STARTTLS", *common),
        ("incomingServer", "imap", domain, "443", "SSL", *common),
        ("outgoingServer", "smtp", domain, "465", "SSL", *common),
        ("outgoingServer", "smtp", domain, "587", "STARTTLS", *common),
        ("outgoingServer", "smtp", domain, "443", "SSL", *common),
    ]
    assert provider.findtext("domain") == domain


def test_mta_sts_policy(relay_ip, domain):
    status, headers, body = https(relay_ip, f"mta-sts.{domain}", "/.well-known/mta-sts.txt")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert body.decode() == (f"version: STSv1\nmode: enforce\nmx: {domain}\nmax_age: 2419200\n")


def test_www_and_plain_http_redirect(relay_ip, domain):
    status, headers, _unused = https(relay_ip, f"www.{domain}", "/info")
    assert (status, headers["Location"]) == (301, f"https://{domain}/info")
    status, headers, _unused = http_plain(relay_ip, domain, "/privacy")
    assert (status, headers["Location"]) == (301, f"https://{domain}/privacy")


def test_port_80_serves_acme_challenges(relay_ip, domain, host):
    token = f"token{time.monotonic_ns()}"
    host.run_test(f"echo {token}-proof > /var/lib/chatmail/acme/.well-known/acme-challenge/{token}")
    try:
        status, _unused, body = http_plain(relay_ip, domain, f"/.well-known/acme-challenge/{token}")
    finally:
        host.run(f"rm -f /var/lib/chatmail/acme/.well-known/acme-challenge/{token}")
    assert (status, body) == (200, f"{token}-proof\n".encode())


def test_pages_and_robots(relay_ip, domain):
    for path in ("/", "/info", "/privacy"):
        status, _unused, body = https(relay_ip, domain, path)
        assert status == 200, path
        assert domain in body.decode()
    status, _unused, body = https(relay_ip, domain, "/robots.txt")
    assert status == 200 and b"Disallow: /new" in body
    # No page loads anything (scripts, images, styles) from other sites.
    _unused, _unused, index = https(relay_ip, domain, "/")
    assert not re.search(rb'(src="|<link[^>]*href=")(https?:)?//', index)
    assert b"<script" not in index


def test_a_browser_shows_a_qr_code_for_a_new_account(relay_ip, domain, tmp_path):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"landing-{domain.strip('_')}.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
            f"--host-resolver-rules=MAP {domain} {relay_ip}",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=800,1000",
            f"--screenshot={shot}",
            f"https://{domain}/",
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 0
    decoded = subprocess.run(
        ["zbarimg", "--raw", "-q", str(shot)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert decoded == [f"DCACCOUNT:https://{domain}/new"]


def test_delta_chat_works_with_only_port_443(relay_ip, domain):
    with delta_chat() as dc:
        only_443 = new_online_account(dc, relay_ip, domain, port=443)
        other = new_online_account(dc, relay_ip, domain)
        chat_443, other_chat = secure_join(only_443, other)
        _unused, received = send_and_receive(chat_443, other, "sent through 443")
        assert received.text == "sent through 443" and received.show_padlock
        _unused, received = send_and_receive(other_chat, only_443, "received through 443")
        assert received.text == "received through 443" and received.show_padlock
