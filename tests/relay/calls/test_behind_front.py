"""The relay behind the operator's own front server (role nginx, nginx_front).

The module re-runs playbooks/web.yml with nginx_front=true: the relay's nginx gives up
ports 80 and 443 and writes the front's snippets. A second nginx on the relay's host
plays the front: its configuration includes those snippets and nothing of the relay
besides, and it serves a site of its own. Clients then reach the relay through the
front only. At the end the front stops and web.yml runs again with the scenario's own
settings, which gives the relay its ports back.

molecule/calls verify.yml runs this module last, on its own: nothing else may use the
relay while its nginx is reconfigured.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mailclient import new_credentials
from testbed import client_address, playbook, required_env
from webclient import http_plain, https, s_client, smtp_by_alpn

FRONT = "/etc/nginx-front"
SNIPPETS = "/etc/chatmail/front"
# The front's own site, behind its SNI map's default.
OWN_NAME = "www.front.test"
FRONT_CONF = f"""
user www-data;
worker_processes 1;
pid /run/nginx-front.pid;
include /etc/nginx/modules-enabled/*.conf;
error_log {FRONT}/error.log;

events {{
    worker_connections 256;
}}

stream {{
    include {SNIPPETS}/stream-upstream.conf;

    map $ssl_preread_server_name $front_upstream {{
        include {SNIPPETS}/stream-names.map;
        default 127.0.0.1:9444;
    }}

    server {{
        listen 443;
        ssl_preread on;
        proxy_pass $front_upstream;
        proxy_protocol on;
    }}
}}

http {{
    access_log off;
    include {SNIPPETS}/http.conf;

    server {{
        listen 127.0.0.1:9444 ssl proxy_protocol;
        ssl_certificate {FRONT}/own.pem;
        ssl_certificate_key {FRONT}/own.key;
        location / {{
            return 200 "the front's own site\\n";
        }}
    }}
}}
"""


def web_playbook(settings: dict):
    started = time.monotonic()
    result = playbook("web", settings)
    print(f"web.yml with {settings} took {time.monotonic() - started:.0f} s")
    return result


def listening(host, port: int) -> list[str]:
    return host.check_output(f"ss -Hltn 'sport = :{port}' | awk '{{print $4}}'").split()


@pytest.fixture(scope="module")
def front(host):
    """The relay behind a front nginx that includes the relay's snippets."""
    run = web_playbook({"nginx_front": True, "nginx_other_sites": []})
    try:
        assert run.returncode == 0, run.stdout[-3000:]
        host.run_test(
            f"mkdir -p {FRONT} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256"
            f" -nodes -days 2 -subj /CN={OWN_NAME} -keyout {FRONT}/own.key -out {FRONT}/own.pem"
        )
        host.run_test(f"cat > {FRONT}/nginx.conf <<'EOF'\n{FRONT_CONF}\nEOF")
        started = host.run(f"nginx -c {FRONT}/nginx.conf")
        assert started.rc == 0, started.stderr
        yield
    finally:
        host.run(f"nginx -c {FRONT}/nginx.conf -s quit; sleep 1; rm -rf {FRONT}")
        restored = web_playbook({})
        assert restored.returncode == 0, restored.stdout[-3000:]
        assert listening(host, 443) == ["0.0.0.0:443"]


def test_the_relay_gives_up_ports_80_and_443_to_the_front(front, host):
    assert listening(host, 10443) == ["127.0.0.1:10443"]
    assert listening(host, 10480) == ["127.0.0.1:10480"]
    front_pid = host.file("/run/nginx-front.pid").content_string.strip()
    owners = host.check_output("ss -Hltnp '( sport = :443 or sport = :80 )'")
    assert set(re.findall(r"pid=(\d+)", owners)) <= set(
        host.check_output(f"pgrep -P {front_pid}; echo {front_pid}").split()
    ), owners


def test_imap_by_alpn_through_the_front_reaches_dovecot_with_the_clients_address(
    front, relay_ip, domain, host
):
    address, password = new_credentials(domain)
    output = s_client(
        relay_ip, "imap", f"a LOGIN {address} {password}\r\nb LOGOUT\r\n".encode(), domain
    )
    assert "XCHATMAIL" in output and "a OK" in output, output
    log = host.run(f"journalctl --no-pager -o cat -u dovecot --since -1min | grep '{address}'")
    logins = re.findall(r"Login: user=<[^>]+>.*?rip=([0-9.]+)", log.stdout)
    assert logins and logins[-1] == client_address(relay_ip), log.stdout


def test_smtp_by_alpn_through_the_front_reaches_postfix(front, relay_ip, domain):
    smtp = smtp_by_alpn(relay_ip, domain)
    assert smtp.ehlo("test.example")[0] == 250
    assert smtp.quit()[0] == 221


def test_the_relays_site_through_the_front(front, relay_ip, domain):
    ca = Path(required_env("CHATMAIL_OPERATOR_CA", "the relay's test CA folder")) / "ca.pem"
    context = ssl.create_default_context(cafile=ca)
    status, _headers, body = https(relay_ip, domain, "/", context=context)
    assert status == 200 and b"<html" in body
    status, _headers, body = https(relay_ip, f"mta-sts.{domain}", "/.well-known/mta-sts.txt")
    assert status == 200 and b"mode: enforce" in body


def test_new_through_the_front_makes_an_account_that_logs_in(front, relay_ip, domain):
    status, _headers, body = https(relay_ip, domain, "/new", method="POST")
    assert status == 200
    credentials = json.loads(body)
    assert credentials["email"].endswith("@" + domain)
    login = f"a LOGIN {credentials['email']} {credentials['password']}\r\nb LOGOUT\r\n"
    assert "a OK" in s_client(relay_ip, "imap", login.encode(), domain)


def test_autoconfig_through_the_front(front, relay_ip, domain):
    status, headers, body = https(relay_ip, domain, "/.well-known/autoconfig/mail/config-v1.1.xml")
    assert status == 200
    assert "xml" in headers["Content-Type"]
    document = ET.fromstring(body)
    assert {element.text for element in document.iter("hostname")} == {domain}
    assert "443" in {element.text for element in document.iter("port")}


def test_port_80_through_the_front_serves_acme_and_redirects(front, relay_ip, domain, host):
    token = uuid.uuid4().hex
    challenge = f"/.well-known/acme-challenge/{token}"
    host.run_test(f"echo {token}-proof > /var/lib/chatmail/acme{challenge}")
    try:
        status, _headers, body = http_plain(relay_ip, domain, challenge)
        assert (status, body) == (200, f"{token}-proof\n".encode())
    finally:
        host.run(f"rm -f /var/lib/chatmail/acme{challenge}")
    status, headers, _body = http_plain(relay_ip, f"mta-sts.{domain}", "/x")
    assert (status, headers["Location"]) == (301, f"https://mta-sts.{domain}/x")


def test_other_names_stay_the_fronts(front, relay_ip):
    status, _headers, body = https(relay_ip, OWN_NAME, "/")
    assert (status, body) == (200, b"the front's own site\n")
