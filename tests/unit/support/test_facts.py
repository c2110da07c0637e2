"""What the desk puts in a reply: the name it greets (plausible_name), the next step it adds."""

from __future__ import annotations

import pytest

from mesh.support.factcheck import check_reply
from mesh.support.facts import addressed_name, plausible_name, written_name
from mesh.support.replies import greeting, write_reply


@pytest.mark.parametrize(
    "name",
    ["Olga Petrov", "José", "Anne-Marie Dubois", "Liam O'Brien", "McKay", "Łukasz Nowak",
     "Zoë Murphy", "Freya Hernández", "M. Mensah"],
)  # fmt: skip
def test_a_persons_name_is_kept(name: str) -> None:
    assert plausible_name(name, f"Hi, it's {name} here. Where is ORD-101010?") == name


@pytest.mark.parametrize(
    "name",
    ["Merci", "Gracias", "Hola", "Cheers", "Morning", "SSD", "USB-C", "with", "Coffee Grinder",
     "Mouse", "A", "M.", "Mensah M.", "one two three four"],
)  # fmt: skip
def test_a_sign_off_a_product_or_a_stray_word_is_nobodys_name(name: str) -> None:
    assert plausible_name(name) is None


def test_a_name_the_message_does_not_write_is_dropped() -> None:
    assert plausible_name("Olga Petrov", "Where is ORD-101010?") is None


DELIVERED = {
    "intent": "track_shipment", "tool": "track_shipment", "ok": True, "customer": None,
    "order_id": "ORD-540418", "status": "delivered", "carrier": "FedEx",
    "tracking_number": "FX675301576170", "delivered_on": "2024-01-31",
}  # fmt: skip
"""A delivered parcel's tracking facts, as reply_facts gives them."""


def test_a_delivered_parcel_reply_says_what_to_do_when_it_is_not_there() -> None:
    facts = DELIVERED
    reply = write_reply(facts)
    assert reply.endswith("the carrier can tell you where it was left with that number.")
    assert check_reply(facts, reply) == []
    returned = {**facts, "status": "refunded"}
    assert "where it was left" not in write_reply(returned)


@pytest.mark.parametrize(
    ("extracted", "message", "name"),
    [
        ("Kofi Inviato da iPhone", "thanks\nKofi\n\nInviato da iPhone", "Kofi"),
        ("Rahul Kim Field Technician", "Rahul Kim\nField Technician", "Rahul Kim"),
        ("Amara Hernández Sous Chef, Bistro", "Best,\nAmara Hernández\nSous Chef, Bistro",
         "Amara Hernández"),
        ("Nakamura Head of Research", "Regards,\n\nDr. Valentina Nakamura\nHead of Research",
         "Valentina Nakamura"),
        ("Elena", "Thanks,\nElena O'Brien", "Elena O'Brien"),
        ("Gracias Sofía", "Gracias Sofía", "Sofía"),
        ("Gracias Sofía", "Bought it twice. Gracias\n\nSofía\n\nSent from my Galaxy", "Sofía"),
        ("Olga Petrov", "Hi, it's Olga Petrov here. Where is ORD-101010?", "Olga Petrov"),
        ("Olga", "Hi I'm Olga, where is my order", "Olga"),
        ("Nobody Here", "Where is ORD-101010?", "Nobody Here"),
        ("M", "My order ORD-101010, please cancel it.\nBest regards,\nM. Mensah", "M. Mensah"),
        ("Brennan", "please cancel ORD-101010\nthanks\nS. Brennan", "S. Brennan"),
    ],
)  # fmt: skip
def test_the_name_is_the_one_the_message_writes_on_one_line(
    extracted: str, message: str, name: str
) -> None:
    assert written_name(extracted, message) == name


@pytest.mark.parametrize(
    ("customer", "addressed"),
    [("Olga Petrov", "Olga"), ("M. Mensah", "M. Mensah"), ("Zoë", "Zoë"), ("", None), (None, None)],
)
def test_a_greeting_addresses_the_first_name_or_the_initial_with_the_surname(
    customer: str | None, addressed: str | None
) -> None:
    assert addressed_name(customer) == addressed
    assert greeting(customer) == (f"Hi {addressed}," if addressed else "Hello,")
    facts = {**DELIVERED, "customer": customer}
    reply = write_reply(facts)
    assert reply.startswith(greeting(customer))
    assert check_reply(facts, reply) == []
    if addressed is not None:
        assert check_reply(facts, reply.replace(addressed, "Speaker", 1)) != []
