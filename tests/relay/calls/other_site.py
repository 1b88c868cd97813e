"""A stand-in for an operator's own web site that shares port 443 with the relay
(role nginx, nginx_other_sites): it terminates TLS itself, with its own certificate.

    python3 other_site.py CERT_DIR

    8443  HTTPS
    8444  HTTPS behind a PROXY protocol (v1) header, as nginx sends it
    8080  plain HTTP

Every page says which listener answered, the Host it was asked for and the client
address it saw (for 8444 the one in the PROXY header), so a test can tell what
reached the site and how.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (
            f"other site via {self.server.listener}: host={self.headers.get('Host')}"
            f" client={self.client_address[0]}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def read_proxy_header(sock: socket.socket) -> tuple[str, int]:
    """The client's (address, port) from a PROXY protocol v1 line."""
    line = b""
    while not line.endswith(b"\r\n"):
        byte = sock.recv(1)
        if not byte or len(line) > 107:
            raise ConnectionError(f"no PROXY header: {line!r}")
        line += byte
    fields = line.decode("ascii").split()
    if fields[:1] != ["PROXY"] or len(fields) != 6:
        raise ConnectionError(f"bad PROXY header: {line!r}")
    return fields[2], int(fields[4])


class Site(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, listener: str, context: ssl.SSLContext | None, proxied: bool):
        super().__init__(("0.0.0.0", port), Page)
        self.listener = listener
        self.context = context
        self.proxied = proxied

    def finish_request(self, request, client_address) -> None:
        # In the request's own thread: a slow handshake does not hold up the others.
        if self.proxied:
            client_address = read_proxy_header(request)
        if self.context is not None:
            request = self.context.wrap_socket(request, server_side=True)
        Page(request, client_address, self)

    def handle_error(self, request, client_address) -> None:
        print(f"{self.listener}: {sys.exc_info()[1]!r} from {client_address}", flush=True)


def main(cert_dir: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(f"{cert_dir}/cert.pem", f"{cert_dir}/key.pem")
    sites = [
        Site(8443, "https", context, proxied=False),
        Site(8444, "https-proxy-protocol", context, proxied=True),
        Site(8080, "http", None, proxied=False),
    ]
    for site in sites[1:]:
        threading.Thread(target=site.serve_forever, daemon=True).start()
    sites[0].serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
