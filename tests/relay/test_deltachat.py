"""Two real Delta Chat clients chat through the relay (SPEC §1, §11).

The relay refuses cleartext, so the accounts first establish contact by a Secure-Join
QR scan, as people do; after that every message must arrive end-to-end encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from deltachat_helpers import delta_chat, new_online_account, secure_join, send_and_receive
from deltachat_rpc_client import Account, Chat


@dataclass
class Pair:
    alice: Account
    bob: Account
    alice_chat: Chat
    bob_chat: Chat


@pytest.fixture(scope="module")
def pair(relay_ip, domain):
    """Alice shows her Setup-Contact QR code, Bob scans it; both end up in a chat."""
    with delta_chat() as dc:
        alice = new_online_account(dc, relay_ip, domain)
        bob = new_online_account(dc, relay_ip, domain)
        alice_chat, bob_chat = secure_join(alice, bob)
        yield Pair(alice, bob, alice_chat, bob_chat)


@pytest.mark.parametrize("side", ["alice", "bob"])
def test_secure_join_gives_each_side_an_encrypted_chat_with_the_others_key(pair, side):
    account, chat = getattr(pair, side), getattr(pair, f"{side}_chat")
    other = pair.bob if side == "alice" else pair.alice
    snapshot = chat.get_full_snapshot()
    assert snapshot.is_encrypted
    assert snapshot.can_send
    assert not snapshot.is_contact_request
    [contact_id] = snapshot.contact_ids
    contact = account.get_contact_by_id(contact_id).get_snapshot()
    assert contact.address == other.get_config("configured_addr")
    assert contact.is_key_contact
    assert contact.e2ee_avail


@pytest.mark.parametrize("sender", ["alice", "bob"])
def test_a_message_arrives_encrypted_in_the_joined_chat(pair, sender):
    chat = getattr(pair, f"{sender}_chat")
    receiver, receiver_chat = (
        (pair.bob, pair.bob_chat) if sender == "alice" else (pair.alice, pair.alice_chat)
    )
    text = f"hello from {sender}"

    sent, received = send_and_receive(chat, receiver, text)

    assert received.text == text
    assert received.show_padlock
    assert received.chat_id == receiver_chat.id
    assert not received.is_info
    assert sent.get_snapshot().show_padlock
