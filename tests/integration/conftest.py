"""Fixtures of the integration tests (see containers.py)."""

from containers import systemd_container

__all__ = ["systemd_container"]
