"""chatmail-admin, the operator's command: accounts and invite tokens, as run on a relay."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from chatrelay import admin, mailbox, registration
from chatrelay.auth import AuthServer
from chatrelay.config import load
from test_auth import FakeSystem, login

DOMAIN = "example.org"
PASSWORD = "correct horse battery"


@pytest.fixture
def ini(tmp_path: Path) -> Path:
    (tmp_path / "mail").mkdir()
    (tmp_path / "invites").mkdir()
    path = tmp_path / "relay.ini"
    path.write_text(
        f"[relay]\nmail_domain = {DOMAIN}\nmailboxes_dir = {tmp_path / 'mail'}\n"
        f"invites_dir = {tmp_path / 'invites'}\nregistration = invite\n"
        f"nocreate_file = {tmp_path / 'nocreate'}\n"
    )
    return path


def run(ini: Path, capsys, *args: str) -> tuple[int, str, str]:
    status = admin.main(["--config", str(ini), *args])
    out, err = capsys.readouterr()
    return status, out, err


def make_account(ini: Path, localpart: str) -> str:
    address = f"{localpart}@{DOMAIN}"
    server = AuthServer(replace(load(ini), registration="open"), FakeSystem().probe())
    assert login(server, address, PASSWORD) is not None
    return address


def test_accounts_are_listed_with_their_last_login_day(ini: Path, capsys) -> None:
    first, second = make_account(ini, "aaaaaaaaa"), make_account(ini, "bbbbbbbbb")
    home = ini.parent / "mail" / first
    os.utime(home / mailbox.PASSWORD_FILE, (1_767_225_600, 1_767_225_600))  # 2026-01-01
    status, out, _err = run(ini, capsys, "accounts", "list", "--json")
    assert status == 0
    rows = json.loads(out)
    assert [row["address"] for row in rows] == [first, second]
    assert rows[0] == {"address": first, "last_login": "2026-01-01", "disabled": False}
    status, out, _err = run(ini, capsys, "accounts", "list")
    assert out.splitlines()[0].split() == ["address", "last_login", "disabled"]
    assert out.splitlines()[1].split() == [first, "2026-01-01", "False"]


def test_disable_enable_and_delete(ini: Path, capsys) -> None:
    address = make_account(ini, "ccccccccc")
    assert run(ini, capsys, "accounts", "disable", address.upper(), "--json")[:2] == (
        0,
        json.dumps({"address": address, "disabled": True, "changed": True}) + "\n",
    )
    assert (ini.parent / "mail" / address / mailbox.DISABLED_MARKER).exists()
    # Again: nothing more to change.
    assert (
        json.loads(run(ini, capsys, "accounts", "disable", address, "--json")[1])["changed"]
        is False
    )
    assert json.loads(run(ini, capsys, "accounts", "list", "--json")[1])[0]["disabled"] is True
    assert run(ini, capsys, "accounts", "enable", address)[:2] == (0, f"{address} enabled\n")
    assert not (ini.parent / "mail" / address / mailbox.DISABLED_MARKER).exists()
    assert run(ini, capsys, "accounts", "delete", address)[:2] == (0, f"{address} deleted\n")
    assert not (ini.parent / "mail" / address).exists()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        (f"nobody123@{DOMAIN}", "is no account of this relay"),
        ("someone@example.net", "is not an address of example.org"),
        ("../../etc@example.org", "is not an address of example.org"),
    ],
)
def test_changes_of_non_accounts_fail_naming_the_address(
    ini: Path, capsys, address, message
) -> None:
    for action in ("disable", "enable", "delete"):
        status, out, err = run(ini, capsys, "accounts", action, address)
        assert (status, out) == (1, "")
        assert err.startswith("chatmail-admin: ") and message in err


def test_an_invite_link_registers_and_the_list_shows_its_use(ini: Path, capsys) -> None:
    status, out, _err = run(
        ini,
        capsys,
        "invites",
        "create",
        "--uses",
        "2",
        "--expires",
        "7d",
        "--label",
        "team",
        "--json",
    )
    assert status == 0
    created = json.loads(out)
    assert created["link"].startswith(f"DCACCOUNT:https://{DOMAIN}/new?token=")
    token = created["link"].rpartition("token=")[2]
    registration.Invites(load(ini)).redeem(token)
    [row] = json.loads(run(ini, capsys, "invites", "list", "--json")[1])
    assert row["id"] == created["id"]
    assert (row["label"], row["uses_left"], row["used"], row["state"]) == ("team", 1, 1, "valid")
    assert row["expires"] is not None
    assert token not in run(ini, capsys, "invites", "list")[1]
    assert run(ini, capsys, "invites", "revoke", created["id"])[0] == 0
    assert json.loads(run(ini, capsys, "invites", "list", "--json")[1]) == []
    status, _out, err = run(ini, capsys, "invites", "revoke", created["id"])
    assert status == 1 and "no invite token" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--uses", "0"], "at least one use"),
        (["--expires", "soon"], "expiry 'soon' is not a duration"),
    ],
)
def test_bad_invite_settings_fail_naming_them(ini: Path, capsys, args, message) -> None:
    status, out, err = run(ini, capsys, "invites", "create", *args)
    assert (status, out) == (1, "") and message in err
    assert list((ini.parent / "invites").glob("*.json")) == []


def test_a_token_outside_invite_mode_comes_with_a_note(ini: Path, capsys) -> None:
    ini.write_text(ini.read_text().replace("registration = invite", "registration = open"))
    status, out, _err = run(ini, capsys, "invites", "create")
    assert status == 0 and "registration is open" in out
