"""The demo order database: schema, seeded generation, idempotent creation, money."""

from __future__ import annotations

import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from mesh.tools import orders

SMALL = {"customers": 30, "orders": 90}


def dump(path: Path) -> dict[str, list[tuple]]:
    with closing(sqlite3.connect(path)) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("customers", "orders", "refunds", "meta")
        }


def test_creates_the_requested_number_of_customers_and_orders(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "orders.sqlite"

    assert orders.create_demo_database(path, **SMALL) is True

    data = dump(path)
    assert len(data["customers"]) == 30
    assert len(data["orders"]) == 90
    assert orders.is_initialized(path)


def test_second_creation_is_a_no_op_and_keeps_changes(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite"
    orders.create_demo_database(path, **SMALL)
    with closing(orders.connect(path)) as conn, orders.write_transaction(conn):
        order_id = conn.execute("SELECT order_id FROM orders LIMIT 1").fetchone()[0]
        orders.cancel_order(conn, order_id, "kept", at=orders.utc_now())
    before = dump(path)

    assert orders.create_demo_database(path, **SMALL) is False
    assert orders.create_demo_database(path, seed=99, customers=5, orders=5) is False

    assert dump(path) == before


def test_same_seed_gives_identical_rows_and_another_seed_does_not(tmp_path: Path) -> None:
    first, second, other = (tmp_path / f"{name}.sqlite" for name in ("a", "b", "c"))
    orders.create_demo_database(first, seed=11, **SMALL)
    orders.create_demo_database(second, seed=11, **SMALL)
    orders.create_demo_database(other, seed=12, **SMALL)

    assert dump(first) == dump(second)
    assert dump(first)["orders"] != dump(other)["orders"]
    assert dump(first)["customers"] != dump(other)["customers"]


def test_generated_data_is_varied_and_consistent(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite"
    orders.create_demo_database(path)
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        customers = conn.execute("SELECT * FROM customers").fetchall()
        rows = conn.execute("SELECT * FROM orders").fetchall()
        refunded = dict(
            conn.execute("SELECT order_id, SUM(amount_cents) FROM refunds GROUP BY order_id")
        )

    assert len({c["email"] for c in customers}) == len(customers) == 200
    assert all(re.fullmatch(r"[a-z0-9.]+@example\.(com|org|net)", c["email"]) for c in customers)
    assert len({c["name"] for c in customers}) > 150
    assert len({c["city"] for c in customers}) >= 15
    assert len({r["product"] for r in rows}) >= 20
    assert len({r["ordered_at"][:7] for r in rows}) >= 12
    assert {r["status"] for r in rows} == set(orders.ORDER_STATUSES)
    assert len({r["currency"] for r in rows}) >= 3
    for row in rows:
        assert re.fullmatch(r"ORD-\d{6}", row["order_id"])
        shipped = row["status"] in ("shipped", "delivered", "refunded")
        assert (row["tracking_number"] is not None) == shipped
        assert (row["delivered_at"] is not None) == (row["status"] in ("delivered", "refunded"))
        assert (row["cancelled_at"] is not None) == (row["status"] == "cancelled")
        if row["status"] == "refunded":
            assert refunded[row["order_id"]] == row["amount_cents"]
        else:
            assert row["order_id"] not in refunded


def test_concurrent_creation_fills_the_database_once(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite"

    with ThreadPoolExecutor(max_workers=4) as pool:
        created = list(pool.map(lambda _: orders.create_demo_database(path, **SMALL), range(4)))

    assert sorted(created) == [False, False, False, True]
    assert len(dump(path)["orders"]) == 90


def test_an_existing_empty_file_is_initialized(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite"
    path.touch()

    assert not orders.is_initialized(path)
    assert orders.create_demo_database(path, **SMALL) is True
    assert orders.is_initialized(path)


def test_connect_never_creates_a_missing_database(tmp_path: Path) -> None:
    path = tmp_path / "missing.sqlite"

    with pytest.raises(sqlite3.OperationalError):
        orders.connect(path)

    assert not path.exists()
    assert not orders.is_initialized(path)


@pytest.mark.parametrize(
    ("sizes", "complaint"),
    [({"customers": 0}, "customers"), ({"orders": -1}, "orders"), ({"orders": 900_001}, "orders")],
)
def test_impossible_sizes_are_refused(
    tmp_path: Path, sizes: dict[str, int], complaint: str
) -> None:
    with pytest.raises(ValueError, match=f"^{complaint} must be"):
        orders.create_demo_database(tmp_path / "orders.sqlite", **sizes)

    assert not (tmp_path / "orders.sqlite").exists()


def test_check_constraints_keep_bad_rows_out(tmp_path: Path) -> None:
    path = tmp_path / "orders.sqlite"
    orders.create_demo_database(path, **SMALL)

    with closing(orders.connect(path)) as conn:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE orders SET status = ? WHERE rowid = 1", ("lost",))
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE orders SET order_id = ? WHERE rowid = 1", ("ORD-12",))


@pytest.mark.parametrize(
    ("amount", "cents"), [(19.99, 1999), (0.29, 29), ("12.50", 1250), (7, 700)]
)
def test_to_cents_is_exact_for_decimal_amounts(amount: float | str, cents: int) -> None:
    assert orders.to_cents(amount) == cents


@pytest.mark.parametrize(
    ("cents", "text"), [(0, "0.00"), (5, "0.05"), (1999, "19.99"), (-250, "-2.50")]
)
def test_format_money(cents: int, text: str) -> None:
    assert orders.format_money(cents) == text
