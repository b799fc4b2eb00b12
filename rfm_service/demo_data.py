"""Synthetic demo data (SPEC §5 ``flask seed-demo``): reproducible, realistic
enough for benchmarks, streamed in chunks so a million customers fit in a
bounded amount of memory.

Customers sign up over three years, more each month as the shop grows, and
get ids in signup order. Orders span the last two years up to ``end_date``.
Each customer has a profile (loyal heavy buyer, regular, occasional,
churned), an order rate drawn around the profile's rate, and a typical
basket size; order amounts scatter lognormally around it. A small share
never orders. All randomness comes from one ``random.Random(seed)`` consumed
in a fixed order, so the same arguments give byte-identical data.

Orders are written in TIME order (ids ascending with ``ordered_at``), as a
real shop fills its table: generated per customer into a TEMP staging table,
then moved with ``INSERT ... SELECT ... ORDER BY ordered_at`` (DESIGN.md,
"Benchmark on realistic data").
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import math
import random
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text

from .bulk import (
    bump_sequence,
    copy_csv,
    create_staging,
    drop_staging,
    insert_chunks,
    lock_for_bulk_insert,
    vacuum_analyze,
)
from .models import MAX_ID
from .timeutil import UTC, sqlite_timestamp

DAY = 86_400
YEAR = 365 * DAY
ORDER_DAYS = 730  # orders: about two years up to end_date
SIGNUP_DAYS = 1095  # signups: three years, so a customer base exists when orders start
GROWTH = math.log(3)  # daily signups triple over the signup period
NO_ORDER_SHARE = 0.05  # signed up, never bought
RATE_SIGMA = 0.6  # spread of order rates within a profile
BASKET_MEDIAN = 45.0
CUSTOMERS_PER_CHUNK = 5_000


@dataclass(frozen=True)
class Profile:
    name: str
    share: float
    rate: float  # relative to the average order rate
    churns: bool  # stops ordering somewhere in its active span


PROFILES = (
    Profile("loyal", 0.12, 3.5, churns=False),
    Profile("regular", 0.33, 1.0, churns=False),
    Profile("occasional", 0.30, 0.35, churns=False),
    Profile("churned", 0.25, 1.0, churns=True),
)
CHURN_AT = (0.1, 0.9)  # a churned customer stops at this fraction of its span

# fmt: off
FIRST_NAMES = (
    "Alice", "Ben", "Chloé", "Daniel", "Emma", "Farid", "Grace", "Hiroshi", "Ines", "Jonas",
    "Kofi", "Laura", "Mateo", "Nadia", "Oliver", "Priya", "Quentin", "Rosa", "Samir", "Tomás",
    "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zoë", "Anna", "Lucas", "Mia", "Noah",
)
LAST_NAMES = (
    "Andersen", "Brown", "Costa", "Dubois", "Eriksson", "Fischer", "García", "Hansen",
    "Ivanova", "Jensen", "Kim", "López", "Müller", "Nowak", "O'Brien", "Patel", "Quinn",
    "Rossi", "Silva", "Tanaka", "Usman", "Virtanen", "Weber", "Xu", "Yilmaz", "Zhang",
)
# fmt: on
EMAIL_SHARE = 0.7
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")  # reserved, never deliverable


@dataclass(frozen=True)
class DemoSpec:
    customers: int
    seed: int
    orders_per_customer: float
    end_date: dt.date
    first_id: int = 1  # --append continues after the existing ids

    @property
    def end(self) -> int:
        """Exclusive end of the order window (epoch seconds): end_date's UTC midnight + 1 day."""
        midnight = dt.datetime.combine(self.end_date + dt.timedelta(days=1), dt.time(), UTC)
        return int(midnight.timestamp())

    @property
    def orders_start(self) -> int:
        return self.end - ORDER_DAYS * DAY

    @property
    def signups_start(self) -> int:
        return self.end - SIGNUP_DAYS * DAY


CustomerRow = tuple[int, str, str | None, int]  # id, name, email, created_at (epoch s)
OrderRow = tuple[int, int, int]  # customer_id, ordered_at (epoch s), amount in cents


def signups_per_day(customers: int) -> list[int]:
    """Customers per signup day: growing with weekend peaks, summing exactly to ``customers``.
    Deterministic, no randomness: cumulative rounding of the weights."""
    weights = [
        math.exp(GROWTH * day / SIGNUP_DAYS) * (1.25 if day % 7 in (5, 6) else 1.0)
        for day in range(SIGNUP_DAYS)
    ]
    total, running, placed, counts = sum(weights), 0.0, 0, []
    for weight in weights:
        running += weight
        upto = round(customers * running / total)
        counts.append(upto - placed)
        placed = upto
    return counts


def yearly_rate(spec: DemoSpec, counts: list[int]) -> float:
    """Orders per year of the average profile, chosen so that the expected
    total is ``customers * orders_per_customer``: a buying customer places
    one first order plus a Poisson number over its active span."""
    spans = sum(
        n * (spec.end - max(spec.signups_start + day * DAY + DAY // 2, spec.orders_start))
        for day, n in enumerate(counts)
    )
    mean_span_years = spans / spec.customers / YEAR
    churn_fraction = sum(CHURN_AT) / 2
    profile_mean = sum(p.share * p.rate * (churn_fraction if p.churns else 1) for p in PROFILES)
    extra = spec.orders_per_customer / (1 - NO_ORDER_SHARE) - 1
    return max(extra, 0.0) / (profile_mean * mean_span_years)


def _profile(rng: random.Random) -> Profile:
    pick = rng.random()
    for profile in PROFILES:
        pick -= profile.share
        if pick < 0:
            return profile
    return PROFILES[-1]


def _email(rng: random.Random, customer_id: int, first: str, last: str) -> str:
    local = f"{first}.{last}{customer_id}".replace("'", "").lower()
    ascii_local = unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode()
    return f"{ascii_local}@{rng.choice(EMAIL_DOMAINS)}"


def _customer(rng: random.Random, customer_id: int, created: int) -> CustomerRow:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    email = _email(rng, customer_id, first, last) if rng.random() < EMAIL_SHARE else None
    return customer_id, f"{first} {last}", email, created


def _order_times(
    rng: random.Random, spec: DemoSpec, profile: Profile, created: int, rate: float
) -> list[int]:
    """A first order soon after signup (or anywhere, for customers older than
    the window), then a Poisson process over the active span."""
    start = max(created, spec.orders_start)
    stop = spec.end
    if profile.churns:
        stop = start + int((stop - start) * rng.uniform(*CHURN_AT))
    if created >= spec.orders_start:
        first = start + min(rng.expovariate(1 / (3 * DAY)), max(stop - start - 1, 0))
    else:
        first = rng.uniform(start, stop - 1)
    times = [first]
    per_second = rate * profile.rate * rng.lognormvariate(-(RATE_SIGMA**2) / 2, RATE_SIGMA) / YEAR
    moment = float(start)
    while per_second > 0:
        moment += rng.expovariate(per_second)
        if moment >= stop:
            break
        times.append(moment)
    return sorted(int(t) for t in times)


def _orders(rng: random.Random, spec: DemoSpec, row: CustomerRow, rate: float) -> list[OrderRow]:
    if rng.random() < NO_ORDER_SHARE:
        return []
    times = _order_times(rng, spec, _profile(rng), row[3], rate)
    basket = rng.lognormvariate(math.log(BASKET_MEDIAN), 0.5)
    return [
        (row[0], at, max(100, round(basket * rng.lognormvariate(-0.1, 0.45) * 100))) for at in times
    ]


def generate(spec: DemoSpec) -> Iterator[tuple[list[CustomerRow], list[OrderRow]]]:
    """Customers in signup order with their orders, a chunk at a time."""
    rng = random.Random(spec.seed)
    counts = signups_per_day(spec.customers)
    rate = yearly_rate(spec, counts)
    customers: list[CustomerRow] = []
    orders: list[OrderRow] = []
    next_id = spec.first_id
    for day, n in enumerate(counts):
        day_start = spec.signups_start + day * DAY
        for offset in sorted(rng.randrange(DAY) for _ in range(n)):
            row = _customer(rng, next_id, day_start + offset)
            customers.append(row)
            orders.extend(_orders(rng, spec, row, rate))
            next_id += 1
            if len(customers) == CUSTOMERS_PER_CHUNK:
                yield customers, orders
                customers, orders = [], []
    if customers:
        yield customers, orders


# -- writing ------------------------------------------------------------------

SEED_STAGING = (
    "seed_orders",
    {
        "n": ("bigint NOT NULL", "INTEGER NOT NULL"),  # generation order: the final tie-break
        "customer_id": ("integer NOT NULL", "INTEGER NOT NULL"),
        "ordered_at": ("bigint NOT NULL", "TEXT NOT NULL"),  # epoch s on PostgreSQL
        "total_amount": ("numeric(12,2) NOT NULL", "NUMERIC NOT NULL"),
    },
)
_MOVE_ORDERS = {
    "postgresql": "INSERT INTO orders (customer_id, ordered_at, total_amount) "
    "SELECT customer_id, to_timestamp(ordered_at), total_amount FROM seed_orders "
    "ORDER BY ordered_at, n",
    "sqlite": "INSERT INTO orders (customer_id, ordered_at, total_amount) "
    "SELECT customer_id, ordered_at, total_amount FROM seed_orders ORDER BY ordered_at, n",
}


def _cents_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _utc(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, UTC)


def _csv_text(rows: Iterable[tuple[Any, ...]]) -> io.StringIO:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)  # quotes names like O'Brien
    buffer.seek(0)
    return buffer


def _copy_chunk(
    conn: Connection, customers: list[CustomerRow], orders: list[OrderRow], n: int
) -> None:
    customer_rows = ((i, name, email, _utc(at).isoformat()) for i, name, email, at in customers)
    copy_csv(conn, "customers", ["id", "name", "email", "created_at"], _csv_text(customer_rows))
    # The staging table takes epoch seconds; to_timestamp() converts them set-based.
    order_rows = ((n + k, c, at, _cents_text(cents)) for k, (c, at, cents) in enumerate(orders))
    copy_csv(conn, "seed_orders", list(SEED_STAGING[1]), _csv_text(order_rows))


def _insert_chunk(
    conn: Connection, customers: list[CustomerRow], orders: list[OrderRow], n: int
) -> None:
    # Exactly what the ORM would store on SQLite: its timestamp text, amounts as float.
    insert_chunks(
        conn,
        "customers",
        ["id", "name", "email", "created_at"],
        ((i, name, email, sqlite_timestamp(_utc(at))) for i, name, email, at in customers),
    )
    insert_chunks(
        conn,
        "seed_orders",
        list(SEED_STAGING[1]),
        (
            (n + k, c, sqlite_timestamp(_utc(at)), cents / 100)
            for k, (c, at, cents) in enumerate(orders)
        ),
    )


class DatabaseNotEmpty(Exception):
    """Seeding refused: the database has customers and appending was not asked for."""


class IdsExhausted(Exception):
    """Seeding refused: the new customers' ids would pass the largest id."""


@dataclass(frozen=True)
class SeedSummary:
    customers: int
    orders: int
    first_id: int


def _first_id(conn: Connection, append: bool, customers: int) -> int:
    count, max_id = conn.execute(text("SELECT COUNT(*), MAX(id) FROM customers")).one()
    if count and not append:
        raise DatabaseNotEmpty(
            f"the database already has customers ({count:,}); seed-demo fills an empty "
            "database (pass --append to add demo customers after the existing ones)"
        )
    first = (max_id or 0) + 1
    if first + customers - 1 > MAX_ID:  # SQLite would store them; import refuses them
        raise IdsExhausted(
            f"{customers:,} customers after id {max_id:,} would pass the largest customer "
            f"id, {MAX_ID:,}"
        )
    return first


def seed(
    engine: Engine,
    spec: DemoSpec,
    append: bool = False,
    work_mem: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> SeedSummary:
    """Generate and write the demo data in ONE transaction (all or nothing)."""
    name, columns = SEED_STAGING
    with engine.connect() as conn, conn.begin():
        lock_for_bulk_insert(conn)
        spec = dataclasses.replace(spec, first_id=_first_id(conn, append, spec.customers))
        postgres = conn.dialect.name == "postgresql"
        if postgres and work_mem:  # room for the final sort by ordered_at
            conn.execute(text("SELECT set_config('work_mem', :v, true)"), {"v": work_mem})
        create_staging(conn, name, columns)
        write = _copy_chunk if postgres else _insert_chunk
        written = 0
        for customers, orders in generate(spec):
            write(conn, customers, orders, written)
            written += len(orders)
            if progress:
                progress(len(customers))
        conn.execute(text(_MOVE_ORDERS[conn.dialect.name]))
        drop_staging(conn, name)
        bump_sequence(conn, "customers")
    vacuum_analyze(engine, "customers", "orders")
    return SeedSummary(spec.customers, written, spec.first_id)
