"""The hand-written support evaluation set (eval/support/) is well-formed and matches the
seeded demo order database it is about."""

from __future__ import annotations

import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from mesh.support.evaluation import (
    EVAL_DIR,
    OPEN_FILE,
    SEALED_FILE,
    SIDE_EFFECT_TOOLS,
    Item,
    item_problems,
    load_set,
)
from mesh.tools.orders import create_demo_database

ORDER_ID = re.compile(r"ORD-\d{6}")
CARRIERS = ("UPS", "FedEx", "DHL", "DPD", "Royal Mail")


@pytest.fixture(scope="module")
def items() -> list[Item]:
    return load_set()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    path = tmp_path_factory.mktemp("evalset") / "orders.sqlite"
    create_demo_database(path)
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        yield conn


def _orders(db: sqlite3.Connection) -> dict[str, sqlite3.Row]:
    rows = db.execute(
        "SELECT o.*, c.email, c.name FROM orders o JOIN customers c ON c.id = o.customer_id"
    )
    return {row["order_id"]: row for row in rows}


def _order_of(item: Item) -> str | None:
    if item.tool and isinstance(item.tool.get("arguments"), dict):
        order_id = item.tool["arguments"].get("order_id")
        if order_id:
            return order_id
    order_id = item.fields.get("order_id")
    return order_id if isinstance(order_id, str) else None


def _named_orders(item: Item) -> set[str]:
    text = f"{item.message} {item.tool} {dict(item.fields)}"
    return set(ORDER_ID.findall(text))


def test_every_raw_item_has_the_documented_shape() -> None:
    for name in (OPEN_FILE, SEALED_FILE):
        raw = yaml.safe_load((EVAL_DIR / name).read_text(encoding="utf-8"))
        assert isinstance(raw, list), name
        assert raw, name
        for entry in raw:
            assert item_problems(entry) == [], (name, entry.get("id"))


def test_the_set_is_large_enough_and_a_third_is_sealed(items: list[Item]) -> None:
    sealed = [i for i in items if i.part == "sealed"]
    assert len(items) >= 165
    assert len(sealed) == len(items) // 3
    assert len({i.id for i in items}) == len(items)
    intents = {i.intent for i in items}
    assert intents == {
        "order_status",
        "track_shipment",
        "cancel_order",
        "refund_request",
        "change_address",
        "general_question",
    }
    assert sum(not i.english for i in items) >= 10
    assert sum(i.sender is None for i in items) >= 10


def test_orders_and_emails_are_real_rows_of_the_seeded_database(
    items: list[Item], db: sqlite3.Connection
) -> None:
    orders = _orders(db)
    emails = {row[0] for row in db.execute("SELECT email FROM customers")}
    for item in items:
        if item.sender:
            assert item.sender in emails, item.id
        for order_id in _named_orders(item):
            if "bad_order_id" in item.kind:
                continue
            assert order_id in orders, (item.id, order_id)
        if "bad_order_id" in item.kind and _order_of(item):
            assert _order_of(item) not in orders, item.id
        email = (item.tool or {}).get("arguments", {}).get("email") or item.fields.get("email")
        if email:
            assert email in emails, (item.id, email)


def test_senders_own_their_orders_unless_the_item_tests_authorization(
    items: list[Item], db: sqlite3.Connection
) -> None:
    orders = _orders(db)
    for item in items:
        order_id = _order_of(item)
        if not item.sender or order_id not in orders:
            continue
        owner = orders[order_id]["email"] == item.sender
        other = bool({"other_customer", "impersonation"} & set(item.kind))
        assert owner != other, item.id


def test_expected_carriers_and_tracking_numbers_are_the_orders_own(
    items: list[Item], db: sqlite3.Connection
) -> None:
    orders = _orders(db)
    for item in items:
        order_id = _order_of(item)
        if order_id not in orders or item.sender != orders[order_id]["email"]:
            continue
        row = orders[order_id]
        for options in item.must:
            for value in options:
                if value in CARRIERS:
                    assert row["carrier"] == value, item.id
                if re.fullmatch(r"(1Z|FX|JD|RM|DP)\d{12}", value):
                    assert row["tracking_number"] == value, item.id
        for value in item.must_not:
            assert value not in (row["carrier"], row["tracking_number"]) or not item.english, (
                item.id,
                value,
            )


def test_an_order_a_side_effect_may_touch_is_named_by_no_other_item(
    items: list[Item], db: sqlite3.Connection
) -> None:
    orders = _orders(db)
    named: dict[str, set[str]] = defaultdict(set)
    for item in items:
        for order_id in _named_orders(item):
            named[order_id].add(item.id)
    touched = {}
    for item in items:
        asks = item.side_effect in ("allowed", "refused") or (
            item.tool is not None and item.tool["name"] in SIDE_EFFECT_TOOLS
        )
        order_id = _order_of(item)
        if asks and order_id:
            assert named[order_id] == {item.id}, (item.id, order_id, named[order_id])
            touched[order_id] = item.id
    for item in items:
        if item.tool and item.tool["name"] == "find_orders":
            email = item.tool["arguments"]["email"]
            for order_id, by in touched.items():
                if order_id in orders:
                    assert orders[order_id]["email"] != email, (item.id, by)


def test_side_effect_rules_are_consistent(items: list[Item]) -> None:
    for item in items:
        name = item.tool["name"] if item.tool else None
        if item.side_effect == "allowed":
            assert item.sender is not None, item.id
        if item.side_effect == "forbidden":
            assert name not in SIDE_EFFECT_TOOLS, item.id
        if not item.english:
            assert item.tool is None, item.id
            assert item.side_effect == "forbidden", item.id
        if name == "search_faq":
            assert item.intent == "general_question", item.id


def test_the_open_and_sealed_files_do_not_change_shape_on_load() -> None:
    # Both files are read by one loader; a path typo would silently score nothing.
    assert (Path(EVAL_DIR) / OPEN_FILE).is_file()
    assert (Path(EVAL_DIR) / SEALED_FILE).is_file()


DEV_FILES = sorted(Path(EVAL_DIR).glob("dev*.yaml"))


@pytest.mark.parametrize("path", DEV_FILES, ids=lambda path: path.name)
def test_a_development_file_parses_and_shares_no_id_or_message_with_the_evaluation_set(
    items: list[Item], path: Path
) -> None:
    """eval/support/dev*.yaml are debugged against; they must stay apart from the frozen set."""
    from mesh.support.evaluation import load_items

    dev = load_items(path, "open")
    assert len(dev) >= 100
    assert len({item.id for item in dev}) == len(dev)
    assert not {item.id for item in dev} & {item.id for item in items}
    assert not {item.message for item in dev} & {item.message for item in items}
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert [item_problems(entry) for entry in raw] == [[] for _ in raw]
    # One file runs on one fresh database: an order an item may change is named by no other.
    named: dict[str, set[str]] = {}
    for item in dev:
        for order_id in re.findall(r"ORD-\d{6}", item.message.upper()):
            named.setdefault(order_id, set()).add(item.id)
    for item in dev:
        if item.side_effect in ("allowed", "refused"):
            for order_id in re.findall(r"ORD-\d{6}", item.message.upper()):
                assert named[order_id] == {item.id}, (item.id, order_id, named[order_id])


def test_the_development_files_share_no_item_id() -> None:
    from mesh.support.evaluation import load_items

    ids = [item.id for path in DEV_FILES for item in load_items(path, "open")]
    assert len(DEV_FILES) >= 3
    assert len(ids) == len(set(ids))
