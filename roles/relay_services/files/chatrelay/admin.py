"""The operator's command on the relay: accounts and invite tokens.

    chatmail-admin accounts list [--json]
    chatmail-admin accounts disable|enable|delete ADDRESS
    chatmail-admin invites create [--uses N] [--expires 7d] [--label TEXT] [--qr] [--json]
    chatmail-admin invites list [--json]
    chatmail-admin invites revoke ID|TOKEN

A disabled account (SPEC section 12) keeps its mail and may still log in, but mail
from it is dropped and mail to it is left out; enable undoes that. delete removes the
account with its mail at once (the daily expiry does the same after
delete_inactive_users_after days without a login). Errors go to stderr with exit
status 1; --json prints what playbooks/accounts.yml and playbooks/invites.yml read.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import mailbox, registration
from .config import DEFAULT_PATH, Config, load


class CommandError(Exception):
    """What the operator asked for cannot be done; the message says why."""


def _day(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).date().isoformat()


def _account(config: Config, address: str) -> str:
    address = address.strip().lower()
    if not mailbox.is_address(config, address):
        raise CommandError(f"{address!r} is not an address of {config.mail_domain}")
    if mailbox.password_hash(config, address) is None:
        raise CommandError(f"{address} is no account of this relay")
    return address


def list_accounts(config: Config) -> list[dict[str, Any]]:
    rows = []
    for address in mailbox.addresses(config):
        home = mailbox.directory(config, address)
        rows.append(
            {
                "address": address,
                "last_login": _day(mailbox.last_login(home)),
                "disabled": mailbox.is_disabled(config, address),
            }
        )
    return rows


def _kick(address: str) -> None:
    """End the account's IMAP sessions, so that nothing writes into a deleted folder."""
    doveadm = shutil.which("doveadm")
    if doveadm:
        subprocess.run([doveadm, "kick", address], capture_output=True, check=False)


def change_account(config: Config, action: str, address: str) -> dict[str, Any]:
    address = _account(config, address)
    if action == "delete":
        _kick(address)
        mailbox.delete(config, address)
        return {"address": address, "deleted": True, "changed": True}
    disable = action == "disable"
    changed = mailbox.is_disabled(config, address) != disable
    mailbox.set_disabled(config, address, disable)
    marker = mailbox.directory(config, address) / mailbox.DISABLED_MARKER
    if disable and os.geteuid() == 0:
        os.chown(marker, config.vmail_uid, config.vmail_gid)
    return {"address": address, "disabled": disable, "changed": changed}


def _invite_row(invite: registration.Invite, now: float) -> dict[str, Any]:
    return {
        "id": invite.id,
        "label": invite.label,
        "created": _day(invite.created),
        "expires": (
            None
            if invite.expires is None
            else datetime.datetime.fromtimestamp(invite.expires, datetime.UTC).isoformat(
                timespec="minutes"
            )
        ),
        "uses_left": invite.uses_left,
        "used": invite.used,
        "state": invite.state(now),
    }


def _qr_code(text: str) -> str:
    qrencode = shutil.which("qrencode")
    if not qrencode:
        raise CommandError("--qr needs qrencode (apt install qrencode)")
    return subprocess.run(
        [qrencode, "-t", "UTF8", "-m", "2", text], capture_output=True, text=True, check=True
    ).stdout


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[("-" if row[c] is None else str(row[c])) for c in columns] for row in rows]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="chatmail-admin", description="Accounts and invite tokens of this relay."
    )
    top.add_argument("--config", type=Path, default=DEFAULT_PATH, help="relay.ini path")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    groups = top.add_subparsers(dest="group", required=True)
    accounts = groups.add_parser("accounts", help="list, disable, enable or delete accounts")
    account_actions = accounts.add_subparsers(dest="action", required=True)
    account_actions.add_parser(
        "list", help="every account with its last-login day", parents=[common]
    )
    for action, text in (
        ("disable", "drop mail from and to the account"),
        ("enable", "undo disable"),
        ("delete", "remove the account and its mail now"),
    ):
        account_actions.add_parser(action, help=text, parents=[common]).add_argument("address")
    invites = groups.add_parser("invites", help="invite tokens (chatmail_registration: invite)")
    invite_actions = invites.add_subparsers(dest="action", required=True)
    create = invite_actions.add_parser(
        "create", help="a new token and its dcaccount: link", parents=[common]
    )
    create.add_argument("--uses", type=int, default=1, help="registrations it allows (1)")
    create.add_argument("--expires", help="lifetime such as 30m, 12h or 7d (default: none)")
    create.add_argument("--label", default="", help="a note for the list, e.g. whom it is for")
    create.add_argument("--qr", action="store_true", help="also print the link as a QR code")
    invite_actions.add_parser("list", help="every token with its uses and expiry", parents=[common])
    revoke = invite_actions.add_parser("revoke", help="remove a token", parents=[common])
    revoke.add_argument("token")
    return top


def run(args: argparse.Namespace, config: Config, now: float) -> tuple[Any, str]:
    """What to print: the JSON value and the text for a person."""
    if args.group == "accounts":
        if args.action == "list":
            rows = list_accounts(config)
            return rows, _table(rows, ["address", "last_login", "disabled"])
        result = change_account(config, args.action, args.address)
        verb = {"delete": "deleted", "disable": "disabled", "enable": "enabled"}[args.action]
        return result, f"{result['address']} {verb}"
    invites = registration.Invites(config)
    if args.action == "create":
        try:
            lifetime = None if args.expires is None else registration.parse_lifetime(args.expires)
            token = invites.create(args.uses, lifetime, args.label)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        link = registration.link(config, token)
        text = link + ("\n" + _qr_code(link) if args.qr else "")
        if config.registration != "invite":
            text += f"\n(note: registration is {config.registration}, tokens matter only in invite)"
        return {"id": registration.id_of(token), "link": link}, text
    if args.action == "list":
        rows = [_invite_row(invite, now) for invite in invites.all()]
        return rows, _table(rows, ["id", "label", "created", "expires", "uses_left", "state"])
    if not invites.revoke(args.token):
        raise CommandError(f"no invite token {args.token!r}")
    return {"revoked": args.token, "changed": True}, f"revoked {args.token}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load(args.config)
        value, text = run(args, config, time.time())
    except (CommandError, OSError, ValueError) as exc:
        print(f"chatmail-admin: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(value) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
