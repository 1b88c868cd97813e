"""A stand-in for the phone vendors' push gateway: a real HTTP server that records
what it gets and answers as it is told.

    POST /notify          a notification; recorded, answered with the current status
    GET  /requests        every recorded notification, as JSON
    PUT  /status          set the status later notifications get (body: e.g. 410)

Records go to a file in the working directory so they outlive the server: the
tests kill it to play a gateway that is down, and its container starts it again.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RECORDS = Path("requests.jsonl")
STATUS = Path("status")
_lock = threading.Lock()


class Gateway(BaseHTTPRequestHandler):
    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path != "/notify":
            self._reply(404)
            return
        body = self._body()
        with _lock:
            status = int(STATUS.read_text()) if STATUS.exists() else 200
            record = {
                "time": time.time(),
                "body": body.decode("utf-8", "replace"),
                "content_type": self.headers.get("Content-Type"),
                "status": status,
            }
            with RECORDS.open("a") as out:
                out.write(json.dumps(record) + "\n")
        self._reply(status)

    def do_GET(self) -> None:
        if self.path != "/requests":
            self._reply(404)
            return
        with _lock:
            lines = RECORDS.read_text().splitlines() if RECORDS.exists() else []
        self._reply(200, json.dumps([json.loads(line) for line in lines]).encode())

    def do_PUT(self) -> None:
        if self.path != "/status":
            self._reply(404)
            return
        status = int(self._body())
        with _lock:
            STATUS.write_text(str(status))
        self._reply(204)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    ThreadingHTTPServer(("0.0.0.0", port), Gateway).serve_forever()
