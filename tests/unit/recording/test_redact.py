"""PII redaction of recorded calls (mesh.recording.redact)."""

from __future__ import annotations

import json

import pytest

from mesh.recording.redact import SURROGATE_NAMES, Redaction, luhn_valid


@pytest.mark.parametrize(
    "email",
    [
        "jane.doe@example.org",
        "a+tag@mail.co.uk",
        "Olga_Petrov-2@sub.domain.io",
        "x@y.de",
    ],
)
def test_emails_become_numbered_example_addresses(email: str) -> None:
    redact = Redaction()
    assert redact(f"write to {email}, thanks") == "write to user1@example.com, thanks"


@pytest.mark.parametrize(
    "phone",
    [
        "+44 20 7946 0958",
        "+1 (415) 555-2671",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "+33 1 23 45 67 89",
        "+49 30 901820",
        "+91 98765 43210",
        "020 7946 0958",
        "+442079460958",
    ],
)
def test_international_phone_formats_are_replaced(phone: str) -> None:
    text = Redaction()(f"call me on {phone} today")
    assert text == "call me on +1-202-555-0001 today"


@pytest.mark.parametrize(
    "text",
    [
        "Where is my order ORD-123456?",
        "Refund ORD-4111111111111111 please",  # an id, even when its digits pass Luhn
        "It arrived on 2024-05-01 and cost 19.99 EUR",
        "Ship to 12 Harbour Road, Dublin D02 X285",
        "Order 1234567 is late",  # 7 digits: no phone, no card
        "Card 4111 1111 1111 1112 was declined",  # fails Luhn: not a card number
        "Meet at 10:30 on 12/05",
    ],
)
def test_ids_dates_amounts_and_luhn_failures_stay(text: str) -> None:
    redact = Redaction()
    assert redact(text) == text
    assert not redact.found


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ("4111 1111 1111 1111", "4000 0000 0000 0010"),
        ("4111-1111-1111-1111", "4000-0000-0000-0010"),
        ("5555555555554444", "4000000000000010"),
        ("3782 822463 10005", "4000 0000 0000 0010"),  # Amex grouping, still found
    ],
)
def test_card_numbers_become_luhn_valid_test_numbers(card: str, expected: str) -> None:
    text = Redaction()(f"my card is {card}.")
    assert text == f"my card is {expected}."
    assert luhn_valid(expected.replace(" ", "").replace("-", ""))


def test_names_and_their_single_words_are_replaced() -> None:
    redact = Redaction(names=["Aisha Okafor"])
    text = redact("Hi, this is Aisha Okafor. AISHA OKAFOR again; Aisha here. Okafor family.")
    assert text == (
        f"Hi, this is {SURROGATE_NAMES[0]}. {SURROGATE_NAMES[0]} again; Alex here. Morgan family."
    )
    assert "Aishagram" == redact("Aishagram")  # whole words only


def test_the_same_value_gets_the_same_surrogate_in_input_and_output() -> None:
    redact = Redaction(names=["Olga Petrov", "Li Wei"])
    source = (
        "Olga Petrov (olga@mail.ru, +7 495 123-45-67) and Li Wei (li@wei.cn) paid with "
        "4111 1111 1111 1111"
    )
    output = json.dumps(
        {
            "name": "Olga Petrov",
            "email": "olga@mail.ru",
            "phone": "+74951234567",
            "other": "li@wei.cn",
            "card": "4111111111111111",
        },
        separators=(",", ":"),
    )
    redacted_input, redacted_output = redact(source), redact(output)
    value = json.loads(redacted_output or "")
    assert value == {
        "name": "Alex Morgan",
        "email": "user1@example.com",
        "phone": "+1-202-555-0001",
        "other": "user2@example.com",
        "card": "4000000000000010",
    }
    assert redacted_input == (
        "Alex Morgan (user1@example.com, +1-202-555-0001) and Sam Taylor "
        "(user2@example.com) paid with 4000 0000 0000 0010"
    )
    # every surrogate the output holds is copyable from the input, as the original was
    for field in ("name", "email", "phone"):
        assert value[field] in (redacted_input or "")


def test_surrogates_restart_per_call_and_never_carry_the_original() -> None:
    first, second = Redaction(), Redaction()
    assert first("a@b.com c@d.com") == "user1@example.com user2@example.com"
    assert second("c@d.com") == "user1@example.com"  # no link between two calls of one person


def test_an_email_that_contains_a_name_stays_one_email() -> None:
    text = Redaction(names=["Olga"])("olga@mail.ru from Olga")
    assert text == "user1@example.com from Alex Morgan"


def test_many_names_run_past_the_list() -> None:
    names = [f"Name{i} Person{i}" for i in range(len(SURROGATE_NAMES) + 2)]
    redact = Redaction(names=names)
    assert redact(names[-1]) == f"Person {len(SURROGATE_NAMES) + 2}"
