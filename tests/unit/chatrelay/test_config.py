"""The settings file the services read, and the .d directory other roles add to."""

from __future__ import annotations

from pathlib import Path

import pytest
from chatrelay.config import load


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def main_file(tmp_path):
    return write(
        tmp_path / "relay.ini",
        "[relay]\nmail_domain = chat.example.org\nmailboxes_dir = /home/vmail/mail\n"
        "max_mailbox_size = 1G\nmax_load_1m = 2.5\n",
    )


def test_reads_types_and_keeps_defaults(main_file):
    config = load(main_file)
    assert config.mail_domain == "chat.example.org"
    assert config.mailboxes_dir == Path("/home/vmail/mail")
    assert config.max_mailbox_size == 1024**3
    assert config.max_load_1m == 2.5
    assert config.push_concurrency == 8
    assert config.turn_hostname == "chat.example.org"


def test_files_in_the_d_directory_add_and_override_in_name_order(main_file):
    write(main_file.parent / "relay.d" / "b.ini", "[relay]\npush_concurrency = 3\n")
    write(main_file.parent / "relay.d" / "a.ini", "[relay]\npush_concurrency = 2\niroh_relay = x\n")
    write(main_file.parent / "relay.d" / "ignored.conf", "[relay]\nnot_a_setting = 1\n")
    config = load(main_file)
    assert config.push_concurrency == 3
    assert config.iroh_relay == "x"


def test_an_unknown_setting_in_the_d_directory_names_the_files(main_file):
    extra = write(main_file.parent / "relay.d" / "push.ini", "[relay]\npush_gateway = x\n")
    with pytest.raises(ValueError, match="unknown settings: push_gateway") as error:
        load(main_file)
    assert str(extra) in str(error.value)


def test_a_malformed_value_names_the_key(main_file):
    write(main_file.parent / "relay.d" / "push.ini", "[relay]\npush_concurrency = many\n")
    with pytest.raises(ValueError, match=r"push_concurrency = 'many'"):
        load(main_file)


def test_a_broken_extra_file_is_named(main_file):
    extra = write(main_file.parent / "relay.d" / "push.ini", "push_concurrency = 2\n")
    with pytest.raises(ValueError, match=str(extra)):
        load(main_file)


def test_missing_file_and_required_settings(tmp_path):
    with pytest.raises(FileNotFoundError, match="relay settings not found"):
        load(tmp_path / "relay.ini")
    with pytest.raises(ValueError, match="mailboxes_dir is required"):
        load(write(tmp_path / "relay.ini", "[relay]\nmail_domain = a.example\n"))
    with pytest.raises(ValueError, match=r"missing \[relay\] section"):
        load(write(tmp_path / "other.ini", "[other]\n"))


@pytest.mark.parametrize(("text", "value"), [("true", True), ("False", False), ("yes", True)])
def test_reads_switches(main_file, text, value):
    write(main_file.parent / "relay.d" / "x.ini", f"[relay]\ndisable_ipv6 = {text}\n")
    assert load(main_file).disable_ipv6 is value


def test_a_switch_that_is_neither_names_the_key(main_file):
    write(main_file.parent / "relay.d" / "x.ini", "[relay]\ndisable_ipv6 = maybe\n")
    with pytest.raises(ValueError, match=r"disable_ipv6 = 'maybe': expected true or false"):
        load(main_file)
