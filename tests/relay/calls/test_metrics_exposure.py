"""The relay's metrics exposed to a Prometheus elsewhere (role nginx, nginx_metrics_port).

Scenario calls exposes them on port 9443 to clients that present a certificate from the
operator's metrics CA (molecule/calls/prepare.yml makes it) and a basic-auth password.
Anything less is refused before the exporter is asked.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from pathlib import Path

import pytest
from testbed import required_env


@pytest.fixture(scope="module")
def exposed() -> dict:
    return {
        "client": Path(required_env("CHATMAIL_METRICS_CLIENT", "the metrics client's certificate")),
        "port": int(required_env("CHATMAIL_METRICS_PORT", "the port of the exposed metrics")),
        "user": required_env("CHATMAIL_METRICS_USER", "a user of the exposed metrics"),
        "password": required_env("CHATMAIL_METRICS_PASSWORD", "that user's password"),
    }


def get_metrics(
    address: str, port: int, client: Path | None, user: str | None = None, password: str = ""
) -> tuple[int, bytes]:
    """GET /metrics over TLS, with a client certificate and basic auth when given."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the relay's own certificate is tested elsewhere
    if client is not None:
        context.load_cert_chain(client / "cert.pem", client / "key.pem")
    headers = {}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    connection = http.client.HTTPSConnection(address, port, context=context, timeout=10)
    try:
        connection.request("GET", "/metrics", headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_the_certificate_and_the_password_together_get_the_metrics(relay_ip, exposed):
    status, body = get_metrics(
        relay_ip, exposed["port"], exposed["client"], exposed["user"], exposed["password"]
    )
    assert status == 200
    assert b"\nchatmail_accounts " in body and b"dovecot_auth_success_total" in body


def test_without_a_client_certificate_nothing_is_shown(relay_ip, exposed):
    status, body = get_metrics(
        relay_ip, exposed["port"], None, exposed["user"], exposed["password"]
    )
    assert status == 400
    assert b"chatmail_" not in body


def test_a_certificate_from_another_ca_is_refused(relay_ip, exposed):
    # The operator's server certificate: a real certificate, but not from the metrics CA.
    other = Path(required_env("CHATMAIL_OPERATOR_CA", "the operator's test CA"))
    status, body = get_metrics(
        relay_ip, exposed["port"], other, exposed["user"], exposed["password"]
    )
    assert status == 400
    assert b"chatmail_" not in body


@pytest.mark.parametrize("password", [None, "wrong password"])
def test_the_certificate_without_the_right_password_is_refused(relay_ip, exposed, password):
    user = None if password is None else exposed["user"]
    status, body = get_metrics(relay_ip, exposed["port"], exposed["client"], user, password or "")
    assert status == 401
    assert b"chatmail_" not in body


def test_nginx_keeps_only_a_hash_of_the_password(host, exposed):
    users = host.file("/etc/nginx/chatmail-metrics.htpasswd")
    assert users.mode == 0o640 and users.user == "root" and users.group == "www-data"
    assert exposed["password"] not in users.content_string
    assert f"{exposed['user']}:$6$" in users.content_string
