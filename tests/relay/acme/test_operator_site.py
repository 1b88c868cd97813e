"""The operator's own web pages (nginx_site_source) replace the generated ones.

The acme scenario deploys tests/relay/acme/site: an index template that uses the
role's onboarding link and QR code, and a plain style sheet in a subfolder. The
info and privacy pages, which the folder lacks, stay the generated ones.
"""

from __future__ import annotations

import re
from pathlib import Path

from webclient import https

SITE = Path(__file__).parent / "site"


def test_the_landing_page_is_the_operators_template_filled_in(relay_ip, domain):
    status, _unused, body = https(relay_ip, domain, "/")
    page = body.decode()
    assert status == 200
    assert "Run by the ACME test team." in page
    assert f"<h1>{domain}</h1>" in page
    assert f'href="DCACCOUNT:https://{domain}/new"' in page
    [image] = re.findall(r'<img src="(/qr-[0-9a-f]{12}\.png)"', page)
    status, _unused, png = https(relay_ip, domain, image)
    assert status == 200 and png.startswith(b"\x89PNG")


def test_the_operators_files_are_served_as_they_are(relay_ip, domain):
    status, _unused, body = https(relay_ip, domain, "/styles/operator.css")
    assert status == 200
    assert body == (SITE / "styles" / "operator.css").read_bytes()
    # Templates are served filled in, not as source.
    assert https(relay_ip, domain, "/index.html.j2")[0] == 404


def test_pages_the_operator_did_not_provide_stay_generated(relay_ip, domain):
    for path in ("/info", "/privacy"):
        status, _unused, body = https(relay_ip, domain, path)
        assert status == 200, path
        assert domain in body.decode() and "ACME test team" not in body.decode()
