"""Another release, or a Dovecot that does not fit the release, fails before any change."""

from __future__ import annotations

import pytest
from containers import docker, run_playbook


@pytest.fixture
def relay(systemd_container):
    return systemd_container


def recap(stdout: str) -> str:
    return stdout[stdout.rindex("PLAY RECAP") :]


@pytest.mark.parametrize("systemd_container", ["12"], indirect=True)
def test_an_unsupported_debian_release_fails_naming_it(relay):
    # The host claims to be Debian 11: the release files are what Ansible reads.
    docker("exec", relay, "sh", "-c",
           "echo 11.11 >/etc/debian_version && sed -i -e 's/^VERSION_ID=.*/VERSION_ID=\"11\"/'"
           " -e 's/bookworm/bullseye/g' -e 's/ 12 / 11 /' /etc/os-release")  # fmt: skip
    result = run_playbook(relay, "base.yml", {})
    assert result.returncode != 0
    assert "runs Debian 11.11 (bullseye)" in result.stdout, result.stdout[-3000:]
    assert "Debian 12 (bookworm) or Debian 13 (trixie)" in result.stdout
    assert "changed=0" in recap(result.stdout)
    assert docker("exec", relay, "ls", "/etc/apt/preferences.d/").strip() == ""


@pytest.mark.parametrize("systemd_container", ["13"], indirect=True)
def test_debian_dovecot_on_debian_13_fails_before_any_change(relay):
    result = run_playbook(relay, "base.yml", {"dovecot_source": "debian"})
    assert result.returncode != 0
    assert "dovecot_source=debian" in result.stdout, result.stdout[-3000:]
    assert "Dovecot 2.4" in result.stdout
    assert "changed=0" in recap(result.stdout)
    assert "ok installed" not in docker(
        "exec", relay, "sh", "-c", "dpkg-query -W -f '${Status}' dovecot-core 2>&1 || true"
    )


@pytest.mark.parametrize("systemd_container", ["13"], indirect=True)
def test_debian_13_base_pins_dovecot_before_apt_updates(relay):
    result = run_playbook(relay, "base.yml", {})
    assert result.returncode == 0, result.stdout[-3000:]
    tasks = [line for line in result.stdout.splitlines() if line.startswith("TASK [")]
    pin = next(i for i, task in enumerate(tasks) if "Pin Dovecot against Debian" in task)
    apt = next(i for i, task in enumerate(tasks) if "Install the base packages" in task)
    assert pin < apt
    # apt would take Debian 13's Dovecot 2.4 for none of the relay's packages.
    policy = docker("exec", relay, "apt-cache", "policy", "dovecot-core")
    assert "Candidate: (none)" in policy, policy


@pytest.mark.parametrize("systemd_container", ["12"], indirect=True)
def test_a_check_run_on_a_fresh_host_stops_where_packages_are_missing(relay):
    result = run_playbook(relay, "base.yml", {}, "--check", "--diff")
    assert result.returncode != 0
    assert "--check on " + relay + ": unbound, dns-root-data are not installed yet" in result.stdout
    assert "run site.yml without --check once" in result.stdout
    failures = [line for line in result.stdout.splitlines() if line.startswith("fatal:")]
    assert failures and "are not installed yet" in failures[0], failures
    # Nothing was installed or written.
    assert "ok installed" not in docker(
        "exec", relay, "sh", "-c", "dpkg-query -W -f '${Status}' unbound 2>&1 || true"
    )
    assert docker("exec", relay, "ls", "/etc/apt/preferences.d/").strip() == ""
