"""Sockets handed over by systemd socket activation (sd_listen_fds), with a fallback."""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def inherited_sockets() -> list[socket.socket]:
    """Return the sockets systemd passed to this process, in unit order."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return [socket.socket(fileno=SD_LISTEN_FDS_START + i) for i in range(count)]


def unix_listener(path: str) -> socket.socket:
    """The inherited socket if systemd started us, else a fresh one bound at path."""
    inherited = inherited_sockets()
    if inherited:
        return inherited[0]
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(128)
    return sock


def tcp_listener(host: str, port: int) -> socket.socket:
    """The inherited socket if systemd started us, else a fresh one on host:port."""
    inherited = inherited_sockets()
    if inherited:
        return inherited[0]
    sock = socket.create_server((host, port), backlog=128, reuse_port=False)
    return sock
