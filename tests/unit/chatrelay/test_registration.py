"""Who may register: open, invite and closed mode, invite tokens, /new and first logins."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from chatrelay import expire, mailbox, registration
from chatrelay.auth import AuthServer
from chatrelay.config import Config, load
from chatrelay.registration import Invites, RegistrationRefused
from relay_servers import Counted
from test_auth import FakeSystem, login
from test_newaccount import Client

DOMAIN = "example.org"
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def config(tmp_path: Path) -> Config:
    mailboxes = tmp_path / "mail" / DOMAIN
    mailboxes.mkdir(parents=True)
    invites = tmp_path / "invites"
    invites.mkdir()
    return Config(
        mail_domain=DOMAIN,
        mailboxes_dir=mailboxes,
        nocreate_file=tmp_path / "chatmail-nocreate",
        registration="invite",
        invites_dir=invites,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def invites(config: Config, clock: Clock) -> Invites:
    return Invites(config, clock)


def token_of(link: str) -> str:
    url = urlsplit(link.removeprefix("DCACCOUNT:"))
    assert (url.scheme, url.netloc, url.path) == ("https", DOMAIN, "/new")
    return url.query.removeprefix("token=")


# --- the token store --------------------------------------------------------------------


def test_a_token_registers_as_often_as_it_allows(invites: Invites) -> None:
    token = invites.create(uses=2, label="family")
    assert invites.redeem(token).uses_left == 1
    assert invites.redeem(token).uses_left == 0
    with pytest.raises(RegistrationRefused) as refused:
        invites.redeem(token)
    assert (refused.value.status, refused.value.message) == (410, "this invite token is used up")
    [invite] = invites.all()
    assert (invite.label, invite.used, invite.uses_left) == ("family", 2, 0)


def test_a_token_expires(invites: Invites, clock: Clock) -> None:
    token = invites.create(lifetime=registration.parse_lifetime("12h"))
    clock.now += 12 * 3600
    assert invites.check(token).uses_left == 1
    clock.now += 1
    with pytest.raises(RegistrationRefused) as refused:
        invites.redeem(token)
    assert (refused.value.status, refused.value.message) == (410, "this invite token is expired")
    assert invites.all()[0].uses_left == 1


@pytest.mark.parametrize("token", ["", "x", "A" * 22, "../../etc/passwd", "a b" * 10])
def test_unknown_tokens_are_refused(invites: Invites, token: str) -> None:
    invites.create()
    with pytest.raises(RegistrationRefused) as refused:
        invites.redeem(token)
    assert (refused.value.status, refused.value.message) == (403, "this invite token is not valid")


def test_a_revoked_token_is_refused(invites: Invites) -> None:
    kept, revoked_by_id, revoked_by_token = (invites.create() for _unused in range(3))
    by_id = registration.id_of(revoked_by_id)
    assert invites.revoke(by_id) and invites.revoke(revoked_by_token)
    assert not invites.revoke(by_id)
    for token in (revoked_by_id, revoked_by_token):
        with pytest.raises(RegistrationRefused):
            invites.check(token)
    assert invites.check(kept)
    assert len(invites.all()) == 1


def test_the_relay_keeps_no_token_only_its_digest(invites: Invites, config: Config) -> None:
    token = invites.create(uses=3)
    files = sorted(config.invites_dir.iterdir())
    assert [path.name for path in files if path.suffix == ".json"] == [
        registration.id_of(token) + ".json"
    ]
    for path in files:
        assert token.encode() not in path.read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("text", ["", "7", "0d", "-1h", "1w", "1.5h", "h"])
def test_bad_lifetimes_name_themselves(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("(", r"\(")):
        registration.parse_lifetime(text)


def test_an_invite_needs_a_use(invites: Invites) -> None:
    with pytest.raises(ValueError, match="at least one use"):
        invites.create(uses=0)


# --- /new in each mode ------------------------------------------------------------------


def test_invite_mode_hands_out_credentials_only_for_a_valid_token(
    config: Config, invites: Invites, serve: Callable[[Config], Client], system: FakeSystem
) -> None:
    client = serve(config)
    without = client.post()
    assert without.status == 403
    assert "by invitation only" in without.json()["error"]
    token = token_of(registration.link(config, Invites(config).create(uses=1)))
    reply = client.request("POST", f"/new?token={token}")
    assert reply.status == 200
    address, password = reply.json()["email"], reply.json()["password"]
    used_up = client.request("POST", f"/new?token={token}")
    assert used_up.status == 410 and used_up.json() == {"error": "this invite token is used up"}
    assert client.request("POST", "/new?token=not-a-token-at-all").status == 403
    # The credentials log in, and only addresses /new handed out are created.
    server = AuthServer(config, system.probe())
    assert login(server, address, password) is not None
    assert login(server, f"uninvited@{DOMAIN}", PASSWORD) is None
    assert mailbox.addresses(config) == [address]


def test_get_with_a_token_redirects_to_the_same_link(
    config: Config, serve: Callable[[Config], Client]
) -> None:
    reply = serve(config).request("GET", "/new?token=abc")
    assert reply.status == 302
    assert reply.headers["Location"] == f"dcaccount:https://{DOMAIN}/new?token=abc"


def test_closed_mode_hands_out_nothing(
    config: Config, invites: Invites, serve: Callable[[Config], Client]
) -> None:
    token = invites.create()
    client = serve(replace(config, registration="closed"))
    for path in ("/new", f"/new?token={token}"):
        reply = client.request("POST", path)
        assert reply.status == 403
        assert reply.json() == {"error": "registration is closed on this relay"}
    assert invites.check(token).uses_left == 1


def test_open_mode_needs_no_token(config: Config, serve: Callable[[Config], Client]) -> None:
    reply = serve(replace(config, registration="open")).post()
    assert reply.status == 200
    # Nothing is noted for an open relay's addresses: their first login creates them.
    assert os.listdir(config.mailboxes_dir) == []


def test_the_kill_switch_still_stops_an_invited_registration(
    config: Config, invites: Invites, serve: Callable[[Config], Client]
) -> None:
    token = invites.create()
    config.nocreate_file.touch()
    assert serve(config).request("POST", f"/new?token={token}").status == 503
    # Nothing was handed out, so the token keeps its use.
    assert invites.check(token).uses_left == 1


def test_the_token_stays_out_of_the_log(
    config: Config, invites: Invites, serve: Callable[[Config], Client], caplog
) -> None:
    token = invites.create(uses=2)
    with caplog.at_level(logging.INFO, logger="chatrelay.newaccount"):
        serve(config).request("POST", f"/new?token={token}")
    assert token not in caplog.text
    assert '"POST /new?token=... HTTP/1.1" 200' in caplog.text


# --- first logins in each mode ----------------------------------------------------------


def test_closed_mode_keeps_existing_accounts(config: Config, system: FakeSystem) -> None:
    open_server = AuthServer(replace(config, registration="open"), system.probe())
    existing = login(open_server, f"existing1@{DOMAIN}", PASSWORD)
    closed = AuthServer(replace(config, registration="closed"), system.probe())
    counted = Counted()
    assert login(closed, f"existing1@{DOMAIN}", PASSWORD) == existing
    assert login(closed, f"newcomer1@{DOMAIN}", PASSWORD) is None
    assert login(AuthServer(config, system.probe()), f"newcomer2@{DOMAIN}", PASSWORD) is None
    assert mailbox.addresses(config) == [f"existing1@{DOMAIN}"]
    assert counted.moved() == {
        "chatmail_account_refusals_total{rule=closed}": 1,
        "chatmail_account_refusals_total{rule=not_invited}": 1,
    }


def test_an_invitation_lapses_after_a_week(config: Config, system: FakeSystem) -> None:
    address = f"invited01@{DOMAIN}"
    mailbox.invite(config, address)
    week_ago = os.stat(mailbox.directory(config, address) / mailbox.INVITED_MARKER).st_mtime
    week_ago -= mailbox.INVITED_LIFETIME + 1
    os.utime(mailbox.directory(config, address) / mailbox.INVITED_MARKER, (week_ago, week_ago))
    assert login(AuthServer(config, system.probe()), address, PASSWORD) is None
    # The daily expiry removes what is left of it.
    expire.run_expiry(config, week_ago + mailbox.INVITED_LIFETIME + 2)
    assert not mailbox.directory(config, address).exists()


def test_a_created_account_loses_its_invitation(config: Config, system: FakeSystem) -> None:
    address = f"invited02@{DOMAIN}"
    mailbox.invite(config, address)
    assert login(AuthServer(config, system.probe()), address, PASSWORD) is not None
    assert not (mailbox.directory(config, address) / mailbox.INVITED_MARKER).exists()
    # Expiry treats it as any account now.
    summary = expire.run_expiry(config, os.stat(mailbox.directory(config, address)).st_mtime)
    assert summary.accounts == 0 and mailbox.addresses(config) == [address]


def test_an_invitation_counts_in_invite_mode_only(config: Config, system: FakeSystem) -> None:
    # open: anybody; invite: the invited; so switching back to open lets the uninvited in.
    address = f"newcomer2@{DOMAIN}"
    assert login(AuthServer(config, system.probe()), address, PASSWORD) is None
    server = AuthServer(replace(config, registration="open"), system.probe())
    assert login(server, address, PASSWORD) is not None


def test_invites_dir_and_mode_are_settings(tmp_path: Path) -> None:
    ini = tmp_path / "relay.ini"
    ini.write_text(
        "[relay]\nmail_domain = example.org\nmailboxes_dir = /m\n"
        "registration = invite\ninvites_dir = /var/lib/x/invites\n"
    )
    loaded = load(ini)
    assert (loaded.registration, loaded.invites_dir) == ("invite", Path("/var/lib/x/invites"))
    ini.write_text(ini.read_text().replace("= invite", "= sometimes"))
    with pytest.raises(ValueError, match="registration = 'sometimes': expected one of open"):
        load(ini)


def test_invite_json_round_trip(invites: Invites) -> None:
    invites.create(uses=4, lifetime=60, label="x")
    [invite] = invites.all()
    data = json.loads((invites.directory / f"{invite.id}.json").read_text())
    assert data["uses_left"] == 4 and data["expires"] == data["created"] + 60
