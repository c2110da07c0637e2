"""Which words the desk greets a customer with (mesh.support.facts.plausible_name)."""

from __future__ import annotations

import pytest

from mesh.support.facts import plausible_name


@pytest.mark.parametrize(
    "name",
    ["Olga Petrov", "José", "Anne-Marie Dubois", "Liam O'Brien", "McKay", "Łukasz Nowak",
     "Zoë Murphy", "Freya Hernández"],
)  # fmt: skip
def test_a_persons_name_is_kept(name: str) -> None:
    assert plausible_name(name, f"Hi, it's {name} here. Where is ORD-101010?") == name


@pytest.mark.parametrize(
    "name",
    ["Merci", "Gracias", "Hola", "Cheers", "Morning", "SSD", "USB-C", "with", "Coffee Grinder",
     "Mouse", "A", "one two three four"],
)  # fmt: skip
def test_a_sign_off_a_product_or_a_stray_word_is_nobodys_name(name: str) -> None:
    assert plausible_name(name) is None


def test_a_name_the_message_does_not_write_is_dropped() -> None:
    assert plausible_name("Olga Petrov", "Where is ORD-101010?") is None
