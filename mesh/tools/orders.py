"""The support desk's order database: schema, demo data and the reads and writes tools need.

Money is stored as integer minor units (``*_cents`` columns) so sums and comparisons are
exact; it leaves this module as decimal strings (``"19.99"``, see :func:`format_money`)
because A2A data parts carry every number as a double. Timestamps are ISO 8601 UTC text.

Every function here is synchronous and takes a :class:`Connection`: stdlib ``sqlite3``'s
(the embedded default; callers run them in a worker thread, ``asyncio.to_thread``), or the
PostgreSQL one of :mod:`mesh.tools.postgres`, which runs the same SQL inside SQLAlchemy's
``run_sync`` on the event loop. SQL always binds values as ``?`` parameters and is written
in the dialect both databases share.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from mesh.tools import faq
from mesh.tools.connection import Connection, ServerConnection

SCHEMA_VERSION = 2
"""Bumped when the tables change; stored in ``meta`` by :func:`create_demo_database`.

Version 2 added the ``faq`` table (and its FTS5 index ``faq_terms``); an older file is
migrated in place when it is opened by :func:`create_demo_database`.
"""

ORDER_STATUSES = ("placed", "shipped", "delivered", "cancelled", "refunded")
"""Every status an order can have, in lifecycle order."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS customers (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE,
        city TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS orders (
        order_id TEXT PRIMARY KEY CHECK (order_id GLOB 'ORD-[0-9][0-9][0-9][0-9][0-9][0-9]'),
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        product TEXT NOT NULL,
        quantity INTEGER NOT NULL CHECK (quantity > 0),
        amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
        currency TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('placed', 'shipped', 'delivered', 'cancelled', 'refunded')),
        ordered_at TEXT NOT NULL,
        shipping_address TEXT NOT NULL,
        carrier TEXT,
        tracking_number TEXT,
        shipped_at TEXT,
        delivered_at TEXT,
        cancelled_at TEXT,
        cancel_reason TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS orders_by_customer ON orders(customer_id, ordered_at)",
    """CREATE TABLE IF NOT EXISTS refunds (
        id INTEGER PRIMARY KEY,
        order_id TEXT NOT NULL REFERENCES orders(order_id),
        amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS refunds_by_order ON refunds(order_id)",
    """CREATE TABLE IF NOT EXISTS address_changes (
        id INTEGER PRIMARY KEY,
        order_id TEXT NOT NULL REFERENCES orders(order_id),
        old_address TEXT NOT NULL,
        new_address TEXT NOT NULL,
        changed_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS tool_calls (
        idempotency_key TEXT PRIMARY KEY,
        tool TEXT NOT NULL,
        arguments TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
)

# fmt: off
_FIRST_NAMES = (
    "Aisha", "Mateo", "Yuki", "Olga", "Kwame", "Priya", "Liam", "Sofía", "Chen", "Fatima",
    "Noah", "Ingrid", "Tariq", "Mei", "Lucas", "Amara", "Dmitri", "Zoë", "Rahul", "Elena",
    "Kofi", "Hana", "Jonas", "Leila", "Diego", "Anika", "Omar", "Siobhan", "Tomás", "Ngozi",
    "Ethan", "Camille", "Hiroshi", "Valentina", "Arjun", "Freya", "Musa", "Isabel", "Wei",
    "Astrid",
)
_LAST_NAMES = (
    "Okafor", "García", "Tanaka", "Ivanova", "Mensah", "Sharma", "Murphy", "Rossi", "Wang",
    "Haddad", "Müller", "Nguyễn", "Kowalski", "Johansson", "O'Brien", "Silva", "Kim", "Dubois",
    "Patel", "Novak", "Abebe", "Fischer", "Yilmaz", "Costa", "Lindqvist", "Moreau", "Adeyemi",
    "Hernández", "Sato", "Petrov", "Walsh", "Nakamura", "Brennan", "Castillo", "Hoffmann",
    "Reyes", "Lee", "Andersen", "Bianchi", "Schwartz",
)
# fmt: on
_CITIES = (
    ("Seattle", "USA", "USD", "98101"),
    ("Austin", "USA", "USD", "73301"),
    ("Chicago", "USA", "USD", "60601"),
    ("Boston", "USA", "USD", "02108"),
    ("Denver", "USA", "USD", "80202"),
    ("Toronto", "Canada", "CAD", "M5H 2N2"),
    ("Vancouver", "Canada", "CAD", "V6B 1A1"),
    ("London", "United Kingdom", "GBP", "EC1A 1BB"),
    ("Manchester", "United Kingdom", "GBP", "M1 1AE"),
    ("Edinburgh", "United Kingdom", "GBP", "EH1 1YZ"),
    ("Berlin", "Germany", "EUR", "10115"),
    ("Munich", "Germany", "EUR", "80331"),
    ("Paris", "France", "EUR", "75001"),
    ("Lyon", "France", "EUR", "69001"),
    ("Madrid", "Spain", "EUR", "28001"),
    ("Lisbon", "Portugal", "EUR", "1100-148"),
    ("Amsterdam", "Netherlands", "EUR", "1012 JS"),
    ("Dublin", "Ireland", "EUR", "D02 X285"),
    ("Milan", "Italy", "EUR", "20121"),
    ("Vienna", "Austria", "EUR", "1010"),
)
_STREETS = (
    "Maple Street",
    "Harbour Road",
    "Elm Avenue",
    "Station Road",
    "Lindenstraße",
    "Rue de la Paix",
    "Calle Mayor",
    "King Street",
    "Oak Lane",
    "Canal Street",
    "Park Avenue",
    "Hill Road",
    "Rua Augusta",
    "Via Roma",
    "Church Lane",
    "Bridge Street",
)
_PRODUCTS = (
    ("Wireless Earbuds", 7999),
    ("Noise-Cancelling Headphones", 24999),
    ("Mechanical Keyboard", 12950),
    ("Ergonomic Mouse", 4999),
    ("27-inch Monitor", 32900),
    ("USB-C Hub", 3999),
    ("Laptop Stand", 4550),
    ("Webcam 1080p", 6999),
    ("Portable SSD 1TB", 10999),
    ("Smart Watch", 19999),
    ("Fitness Tracker", 8999),
    ("Bluetooth Speaker", 5999),
    ("E-Reader", 13999),
    ("Phone Case", 1999),
    ("Charging Cable 2m", 1299),
    ("Desk Lamp", 3450),
    ("Coffee Grinder", 8900),
    ("French Press", 3299),
    ("Running Shoes", 11999),
    ("Yoga Mat", 2999),
    ("Backpack", 7450),
    ("Water Bottle", 2499),
    ("Office Chair", 27900),
    ("Air Purifier", 15999),
)
_CARRIERS = (("UPS", "1Z"), ("FedEx", "FX"), ("DHL", "JD"), ("Royal Mail", "RM"), ("DPD", "DP"))

PRODUCTS = tuple(name for name, _ in _PRODUCTS)
"""Every product the demo shop sells, as the ``product`` column spells it."""

CARRIERS = tuple(name for name, _ in _CARRIERS)
"""Every carrier a demo order ships with, as the ``carrier`` column spells it."""

CURRENCIES = ("USD", "EUR", "GBP", "CAD", "CHF", "SEK", "NOK", "DKK", "PLN")
"""Currencies an order may be in (the demo database uses EUR, GBP and USD)."""
_STATUS_WEIGHTS = (
    ("placed", 20),
    ("shipped", 20),
    ("delivered", 45),
    ("cancelled", 8),
    ("refunded", 7),
)
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
_DEMO_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_DEMO_SPAN_DAYS = 540


@dataclass(frozen=True)
class Customer:
    """A row of ``customers``."""

    id: int
    name: str
    email: str
    city: str


@dataclass(frozen=True)
class Order:
    """An order with its customer and what has been refunded so far."""

    order_id: str
    customer_id: int
    customer_name: str
    customer_email: str
    product: str
    quantity: int
    amount_cents: int
    currency: str
    status: str
    ordered_at: str
    shipping_address: str
    carrier: str | None
    tracking_number: str | None
    shipped_at: str | None
    delivered_at: str | None
    cancelled_at: str | None
    refunded_cents: int

    @property
    def refundable_cents(self) -> int:
        """What may still be refunded: the order total less earlier refunds."""
        return max(self.amount_cents - self.refunded_cents, 0)


@dataclass(frozen=True)
class RecordedCall:
    """The stored outcome of a side-effecting tool call, keyed by its idempotency key."""

    tool: str
    arguments: str
    result: dict[str, Any]


def format_money(cents: int) -> str:
    """Minor units as a decimal string (``1999`` -> ``"19.99"``), exact for any size."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{whole}.{fraction:02d}"


def to_cents(amount: float | Decimal | str) -> int:
    """A decimal amount as minor units, going through ``str`` so ``19.99`` stays exact."""
    return int((Decimal(str(amount)) * 100).to_integral_value())


def utc_now() -> str:
    """The current time in the format every timestamp column uses."""
    return _isoformat(datetime.now(UTC))


def connect(path: str | Path) -> sqlite3.Connection:
    """Opens an existing order database read-write; never creates an empty file.

    The connection is in autocommit mode: writers open their transaction explicitly with
    :func:`write_transaction` so the write lock is taken before anything is read.
    """
    uri = Path(path).resolve().as_uri() + "?mode=rw"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def write_transaction(
    conn: Connection, *, idempotency_key: str | None = None, order_id: str | None = None
) -> Iterator[Connection]:
    """One transaction that commits, or rolls back if the block raises.

    On SQLite, ``BEGIN IMMEDIATE`` takes the write lock up front and serializes concurrent
    writers (other threads or replicas sharing the file), so a check-then-write such as
    "is this key already recorded?" cannot interleave with another writer. On a server
    (:class:`ServerConnection`) the transaction locks the call's idempotency key and its
    order row instead, which serializes exactly the calls that could interleave.
    """
    if not isinstance(conn, sqlite3.Connection):
        server: ServerConnection = conn  # type: ignore[assignment]  # the only other kind
        with server.transaction(idempotency_key=idempotency_key, order_id=order_id):
            yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    with conn:
        yield conn


def is_initialized(path: str | Path) -> bool:
    """Whether ``path`` holds an order database of the current schema version."""
    if not Path(path).is_file():
        return False
    with closing(connect(path)) as conn:
        return _schema_version(conn) == SCHEMA_VERSION


_LOCK_TIMEOUT_S = 30.0


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switches the file to WAL, waiting while another replica holds it.

    SQLite answers a journal-mode change that meets another connection's lock with "database
    is locked" at once, without its busy timeout (seen when replicas start together and one
    is filling the file), so the switch is retried until the lock timeout.
    """
    deadline = time.monotonic() + _LOCK_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def create_demo_database(
    path: str | Path, *, seed: int = 7, customers: int = 200, orders: int = 600
) -> bool:
    """Creates and fills the demo order database; returns False if it was already there.

    The same ``seed`` and sizes always give the same rows, so demos and tests can name
    real order ids. Creation happens in one transaction holding SQLite's write lock, so
    replicas starting together neither double-fill nor see a half-filled file.

    An existing file keeps its orders; it is migrated to :data:`SCHEMA_VERSION` and its
    ``faq`` table is re-seeded when the packaged FAQ entries changed.
    """
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if not 0 <= orders <= 900_000:
        raise ValueError("orders must be between 0 and 900000 (the ORD-nnnnnn id space)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=_LOCK_TIMEOUT_S)
    with closing(conn):
        _use_wal(conn)
        with write_transaction(conn):
            version = _schema_version(conn)
            if version is not None:
                _upgrade(conn, version)
                return False
            for statement in _SCHEMA:
                conn.execute(statement)
            _set_meta(conn, "schema_version", str(SCHEMA_VERSION))
            fill_demo(conn, seed=seed, customers=customers, orders=orders)
    return True


def fill_demo(conn: Connection, *, seed: int = 7, customers: int = 200, orders: int = 600) -> None:
    """Inserts the seeded demo shop (customers, orders, refunds, the FAQ) into empty tables,
    recording ``seed`` and the sizes in ``meta``; runs in the caller's transaction."""
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if not 0 <= orders <= 900_000:
        raise ValueError("orders must be between 0 and 900000 (the ORD-nnnnnn id space)")
    _fill(conn, random.Random(seed), customers, orders)
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [("seed", str(seed)), ("customers", str(customers)), ("orders", str(orders))],
    )
    _seed_faq(conn)


def refresh_faq(conn: Connection) -> None:
    """Re-seeds the ``faq`` table when the packaged FAQ entries changed since it was seeded."""
    if meta(conn, "faq_digest") != faq.digest():
        _seed_faq(conn)


def _upgrade(conn: sqlite3.Connection, version: int) -> None:
    """Brings an existing file to :data:`SCHEMA_VERSION` and its FAQ up to date."""
    if version > SCHEMA_VERSION:
        return  # written by newer code (a rolling upgrade): that code owns its tables
    if version < SCHEMA_VERSION:
        # 1 -> 2 adds the faq table, which _seed_faq creates; nothing else changed.
        _set_meta(conn, "schema_version", str(SCHEMA_VERSION))
    refresh_faq(conn)


def _seed_faq(conn: Connection) -> None:
    faq.seed(conn)
    _set_meta(conn, "faq_digest", faq.digest())


def meta(conn: Connection, key: str) -> str | None:
    """A value of the ``meta`` table, or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else None


def _set_meta(conn: Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def find_customer(conn: Connection, email: str) -> Customer | None:
    """The customer with this email, compared case-insensitively."""
    row = conn.execute(
        "SELECT id, name, email, city FROM customers WHERE email = ?", (email.strip().lower(),)
    ).fetchone()
    return Customer(**dict(row)) if row else None


def get_order(conn: Connection, order_id: str) -> Order | None:
    """One order, or None if there is no such id."""
    row = conn.execute(f"{_ORDER_SELECT} WHERE o.order_id = ?", (order_id,)).fetchone()
    return Order(**dict(row)) if row else None


def orders_of_customer(conn: Connection, customer_id: int) -> list[Order]:
    """A customer's orders, newest first."""
    rows = conn.execute(
        f"{_ORDER_SELECT} WHERE o.customer_id = ? ORDER BY o.ordered_at DESC, o.order_id",
        (customer_id,),
    ).fetchall()
    return [Order(**dict(row)) for row in rows]


def cancel_order(conn: Connection, order_id: str, reason: str, *, at: str) -> None:
    """Marks an order cancelled; the caller has checked that it may be."""
    conn.execute(
        "UPDATE orders SET status = 'cancelled', cancelled_at = ?, cancel_reason = ? "
        "WHERE order_id = ?",
        (at, reason, order_id),
    )


def add_refund(conn: Connection, order_id: str, amount_cents: int, reason: str, *, at: str) -> int:
    """Records a refund and returns its id; a fully refunded order becomes ``refunded``."""
    refund_id = conn.execute(
        "INSERT INTO refunds (order_id, amount_cents, reason, created_at) VALUES (?, ?, ?, ?) "
        "RETURNING id",
        (order_id, amount_cents, reason, at),
    ).fetchall()[0][0]
    conn.execute(
        "UPDATE orders SET status = 'refunded' WHERE order_id = ? AND amount_cents <= "
        "(SELECT COALESCE(SUM(amount_cents), 0) FROM refunds WHERE order_id = ?)",
        (order_id, order_id),
    )
    return int(refund_id)


def change_shipping_address(conn: Connection, order_id: str, address: str, *, at: str) -> None:
    """Sets a new shipping address, keeping the old one in ``address_changes``."""
    conn.execute(
        "INSERT INTO address_changes (order_id, old_address, new_address, changed_at) "
        "SELECT order_id, shipping_address, ?, ? FROM orders WHERE order_id = ?",
        (address, at, order_id),
    )
    conn.execute("UPDATE orders SET shipping_address = ? WHERE order_id = ?", (address, order_id))


def recorded_call(conn: Connection, idempotency_key: str) -> RecordedCall | None:
    """The first outcome stored under ``idempotency_key``, if any."""
    row = conn.execute(
        "SELECT tool, arguments, result FROM tool_calls WHERE idempotency_key = ?",
        (idempotency_key,),
    ).fetchone()
    if row is None:
        return None
    return RecordedCall(
        tool=row["tool"], arguments=row["arguments"], result=json.loads(row["result"])
    )


def record_call(
    conn: Connection,
    idempotency_key: str,
    tool: str,
    arguments: str,
    result: Mapping[str, Any],
    *,
    at: str,
) -> None:
    """Stores a side-effecting call's outcome so a retry with the same key replays it."""
    conn.execute(
        "INSERT INTO tool_calls (idempotency_key, tool, arguments, result, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (idempotency_key, tool, arguments, json.dumps(result), at),
    )


_ORDER_SELECT = """
    SELECT o.order_id, o.customer_id, c.name AS customer_name, c.email AS customer_email,
           o.product, o.quantity, o.amount_cents, o.currency, o.status, o.ordered_at,
           o.shipping_address, o.carrier, o.tracking_number, o.shipped_at, o.delivered_at,
           o.cancelled_at,
           (SELECT COALESCE(SUM(r.amount_cents), 0) FROM refunds r
             WHERE r.order_id = o.order_id) AS refunded_cents
      FROM orders o JOIN customers c ON c.id = o.customer_id
"""


def _schema_version(conn: sqlite3.Connection) -> int | None:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def _isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _fill(conn: Connection, rng: random.Random, customers: int, orders: int) -> None:
    """Inserts seeded customers, orders and the refunds that refunded orders imply."""
    used_emails: set[str] = set()
    customer_rows = []
    for customer_id in range(1, customers + 1):
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        city = rng.choice(_CITIES)[0]
        local = f"{_ascii_slug(first)}.{_ascii_slug(last)}"
        email = f"{local}@{rng.choice(_EMAIL_DOMAINS)}"
        suffix = 2
        while email in used_emails:
            email = f"{local}{suffix}@{email.split('@')[1]}"
            suffix += 1
        used_emails.add(email)
        customer_rows.append((customer_id, f"{first} {last}", email, city))
    conn.executemany(
        "INSERT INTO customers (id, name, email, city) VALUES (?, ?, ?, ?)", customer_rows
    )

    cities = {city[0]: city for city in _CITIES}
    statuses = [status for status, _ in _STATUS_WEIGHTS]
    weights = [weight for _, weight in _STATUS_WEIGHTS]
    order_numbers = rng.sample(range(100_000, 1_000_000), orders)
    order_rows = []
    refund_rows = []
    for number in order_numbers:
        customer_id, _, _, city_name = rng.choice(customer_rows)
        city, country, currency, postcode = cities[city_name]
        product, unit_cents = rng.choice(_PRODUCTS)
        quantity = rng.choices((1, 2, 3), weights=(80, 15, 5))[0]
        status = rng.choices(statuses, weights=weights)[0]
        ordered = _DEMO_EPOCH + timedelta(seconds=rng.randrange(_DEMO_SPAN_DAYS * 86_400))
        address = f"{rng.randint(1, 240)} {rng.choice(_STREETS)}, {city} {postcode}, {country}"
        carrier = tracking = shipped_at = delivered_at = cancelled_at = cancel_reason = None
        if status in ("shipped", "delivered", "refunded"):
            carrier, prefix = rng.choice(_CARRIERS)
            tracking = f"{prefix}{rng.randrange(10**11, 10**12)}"
            shipped = ordered + timedelta(hours=rng.randint(12, 72))
            shipped_at = _isoformat(shipped)
            if status != "shipped":
                delivered = shipped + timedelta(hours=rng.randint(36, 144))
                delivered_at = _isoformat(delivered)
        elif status == "cancelled":
            cancelled_at = _isoformat(ordered + timedelta(hours=rng.randint(1, 20)))
            cancel_reason = "Customer changed their mind"
        amount_cents = unit_cents * quantity
        order_id = f"ORD-{number:06d}"
        order_rows.append(
            (
                order_id,
                customer_id,
                product,
                quantity,
                amount_cents,
                currency,
                status,
                _isoformat(ordered),
                address,
                carrier,
                tracking,
                shipped_at,
                delivered_at,
                cancelled_at,
                cancel_reason,
            )
        )
        if status == "refunded" and delivered_at is not None:
            refunded = datetime.strptime(delivered_at, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=UTC
            ) + timedelta(days=rng.randint(2, 20))
            refund_rows.append((order_id, amount_cents, "Item returned", _isoformat(refunded)))
    conn.executemany(
        "INSERT INTO orders (order_id, customer_id, product, quantity, amount_cents, currency, "
        "status, ordered_at, shipping_address, carrier, tracking_number, shipped_at, "
        "delivered_at, cancelled_at, cancel_reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        order_rows,
    )
    conn.executemany(
        "INSERT INTO refunds (order_id, amount_cents, reason, created_at) VALUES (?, ?, ?, ?)",
        refund_rows,
    )
