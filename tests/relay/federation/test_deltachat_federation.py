"""Real Delta Chat clients on two relays: Secure-Join, messages and a group across them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from deltachat_helpers import (
    MESSAGE_TIMEOUT,
    delta_chat,
    new_online_account,
    secure_join,
    send_and_receive,
    wait_for_event,
)
from deltachat_rpc_client import Account, Chat
from deltachat_rpc_client.const import EventType


@dataclass
class People:
    alice: Account  # on relay1
    bob: Account  # on relay2
    carol: Account  # on relay2
    alice_bob: Chat
    bob_alice: Chat
    alice_carol: Chat


@pytest.fixture(scope="module")
def people(relay1, relay2):
    """Bob and Carol, on relay2, each scan the QR code of Alice, on relay1."""
    with delta_chat() as dc:
        alice = new_online_account(dc, relay1.ip, relay1.domain)
        bob = new_online_account(dc, relay2.ip, relay2.domain)
        carol = new_online_account(dc, relay2.ip, relay2.domain)
        alice_bob, bob_alice = secure_join(alice, bob)
        alice_carol, _unused = secure_join(alice, carol)
        yield People(alice, bob, carol, alice_bob, bob_alice, alice_carol)


@pytest.mark.parametrize("sender", ["alice", "bob"])
def test_messages_cross_the_relays_encrypted(people, sender):
    chat, receiver = (
        (people.alice_bob, people.bob) if sender == "alice" else (people.bob_alice, people.alice)
    )
    text = f"across relays from {sender}"

    sent, received = send_and_receive(chat, receiver, text)

    assert received.text == text
    assert received.show_padlock
    assert sent.get_snapshot().show_padlock


def received_by(account: Account, text: str):
    event = wait_for_event(
        account,
        lambda e: (
            e.kind == EventType.INCOMING_MSG
            and account.get_message_by_id(e.msg_id).get_snapshot().text == text
        ),
        MESSAGE_TIMEOUT,
    )
    return account.get_message_by_id(event.msg_id).get_snapshot()


def test_a_group_across_both_relays_reaches_every_member(people):
    group = people.alice.create_group("across relays")
    group.add_contact(*people.alice_bob.get_contacts(), *people.alice_carol.get_contacts())

    group.send_text("hello group")
    at_bob, at_carol = (received_by(member, "hello group") for member in (people.bob, people.carol))
    for received in (at_bob, at_carol):
        assert received.show_padlock
        assert received.chat.get_basic_snapshot().name == "across relays"

    # Bob answers from relay2: Alice gets it across the relays, Carol on his own.
    at_bob.chat.accept()
    at_bob.chat.send_text("hello from relay2")
    for member in (people.alice, people.carol):
        assert received_by(member, "hello from relay2").show_padlock
