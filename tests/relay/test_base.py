"""The base system a relay stands on."""

from __future__ import annotations


def test_mailname_is_the_mail_domain(host, domain):
    assert host.file("/etc/mailname").content_string == domain + "\n"


def test_vmail_user_owns_the_mail_home(host):
    vmail = host.user("vmail")
    assert vmail.uid == 5000
    assert vmail.shell == "/usr/sbin/nologin"
    home = host.file("/home/vmail")
    assert home.is_directory
    assert home.user == "vmail"
    assert home.mode == 0o700


def test_journal_is_kept_in_memory_only(host):
    assert host.run("systemctl is-active systemd-journald").stdout.strip() == "active"
    assert host.file("/run/log/journal").is_directory
    assert not host.file("/var/log/journal").exists or not any(
        host.file("/var/log/journal").listdir()
    )


def test_apt_installs_no_recommended_packages(host):
    out = host.run("apt-config dump APT::Install-Recommends").stdout
    assert 'APT::Install-Recommends "false"' in out
