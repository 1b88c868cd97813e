"""In a container the kernel limits are the host's: role dovecot says what to set there.

The test bed's host allows more than one relay of the default size needs, so
the relay here is configured for more connections than the host allows.
"""

from __future__ import annotations

from containers import docker, run_playbook

CONNECTIONS = 1_000_000  # wants 2 000 000 inotify instances and 8 000 000 watches


def test_limits_the_container_cannot_raise_are_reported_and_persisted(systemd_container):
    first = run_playbook(
        systemd_container,
        "dovecot_kernel_limits.yml",
        {"chatmail_max_imap_connections": CONNECTIONS},
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"WARNING: {systemd_container} cannot change these kernel settings" in first.stdout
    assert "fs.inotify.max_user_instances = 2000000" in first.stdout
    assert "fs.inotify.max_user_watches = 8000000" in first.stdout

    persisted = docker("exec", systemd_container, "cat", "/etc/sysctl.d/60-chatmail-dovecot.conf")
    assert "\nfs.inotify.max_user_instances = 2000000\n" in persisted
    assert "\nfs.inotify.max_user_watches = 8000000\n" in persisted

    again = run_playbook(
        systemd_container,
        "dovecot_kernel_limits.yml",
        {"chatmail_max_imap_connections": CONNECTIONS},
    )
    assert "changed=0" in again.stdout, again.stdout
