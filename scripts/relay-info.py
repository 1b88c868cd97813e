"""Print how to reach a relay running in a local container, with a fresh account."""

from __future__ import annotations

import secrets
import shutil
import string
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "relay"))

from testbed import container_address


def dclogin_url(address: str, password: str, server: str) -> str:
    """A Delta Chat login link with explicit servers; ic=3 accepts the self-signed certificate."""
    params = {
        "p": password,
        "v": "1",
        "ih": server,
        "ip": "993",
        "sh": server,
        "sp": "465",
        "ic": "3",
    }
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params.items())
    return f"dclogin:{address}?{query}"


def main(name: str, domain: str) -> None:
    ip = container_address(name)
    local = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _unused in range(9))
    address, password = f"{local}@{domain}", secrets.token_urlsafe(12)
    url = dclogin_url(address, password, ip)
    print()
    print(f"relay {domain} is running in container {name} at {ip}")
    print(f"  IMAP {ip}:993 (TLS), {ip}:143 (STARTTLS); SMTP {ip}:465 (TLS), {ip}:587 (STARTTLS)")
    print(f"  IMAP and SMTP also on {ip}:443 (TLS, by ALPN); TURN {ip}:3478 (UDP, TCP)")
    print(f"  web:    https://{ip}/ (self-signed certificate; /new hands out accounts)")
    print(f"  shell:  docker exec -it {name} bash")
    print(f"  logs:   docker exec {name} journalctl -f")
    print()
    print("A fresh account (created on its first login), for a Delta Chat app on this machine:")
    print(f"  {url}")
    if shutil.which("qrencode"):
        subprocess.run(["qrencode", "-t", "ANSIUTF8", "-m", "2", url], check=False)


if __name__ == "__main__":
    main(*sys.argv[1:3])
