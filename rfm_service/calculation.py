"""The RFM engine: the only module that knows the RFM SQL (SPEC §2-3).

One statement (CTEs ``customer_orders`` and ``rfm_with_scores``, ``NTILE(5)``
with customer-id tie-breaks, a ``CASE`` generated from the rule table) runs
inside the database. Results are written by the database itself (``CREATE
TABLE ... AS`` on PostgreSQL, ``INSERT ... SELECT`` on SQLite) and only small
aggregates ever come back to Python.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, text

from .models import RFMScore
from .segments import Rule, case_sql, segment_names
from .timeutil import UTC, UTCDateTime

# Per dialect: the latest counted order's UTC calendar date subtracted from
# as_of in whole days, and the exact sum of amounts in cents. SQLite stores
# NUMERIC as binary floats, so amounts are rounded to integer cents per row
# before summing; PostgreSQL's numeric sum is exact already.
#
# The NTILE orders are SPEC §2's. On PostgreSQL the recency and frequency
# orders are each packed into one bigint, value in the high 32 bits and
# customer id (shifted to be non-negative) in the low 32: the same order as
# ``(recency_days DESC, customer_id ASC)`` and ``(frequency ASC, customer_id
# ASC)`` for every int4 customer id and every value below 2**31 (a larger one
# raises "bigint out of range", never misorders). A single integer key sorts
# on PostgreSQL's fast path, where the two-key sort compared customer ids in
# the generic comparator for each of the many ties: 0.47 s less for the bare
# statement at 1M customers (4.46 s against 4.93 s, identical rows).
# Monetary values are mostly distinct, so its sort rarely reaches the
# tie-break, and cents can exceed 32 bits: it keeps the two keys. SQLite keeps
# all three as written (its integers do not enforce 32-bit ids).
_ID_BITS = "(customer_id + 2147483648)"  # int4 range -> 0 .. 2**32 - 1
_DIALECT_SQL = {
    "postgresql": {
        "recency": "CAST(:as_of AS DATE) - CAST(MAX(o.ordered_at) AT TIME ZONE 'UTC' AS DATE)",
        "monetary_cents": "CAST(SUM(o.total_amount) * 100 AS BIGINT)",
        "recency_order": f"{_ID_BITS} - recency_days * 4294967296",
        "frequency_order": f"frequency * 4294967296 + {_ID_BITS}",
    },
    "sqlite": {
        "recency": "CAST(julianday(:as_of) - julianday(date(MAX(o.ordered_at))) AS INTEGER)",
        "monetary_cents": "SUM(CAST(ROUND(o.total_amount * 100) AS INTEGER))",
        "recency_order": "recency_days DESC, customer_id ASC",
        "frequency_order": "frequency ASC, customer_id ASC",
    },
}

_SCORED_SQL = """
WITH customer_orders AS (
    SELECT o.customer_id AS customer_id,
           {recency} AS recency_days,
           COUNT(*) AS frequency,
           {monetary_cents} AS monetary_cents,
           -- Numbered here, where the groups come out in customer order: no sort.
           ROW_NUMBER() OVER (ORDER BY o.customer_id) AS position
    FROM orders o
    WHERE o.ordered_at < :cutoff
    GROUP BY o.customer_id
),
rfm_with_scores AS (
    SELECT customer_id, recency_days, frequency, monetary_cents, position,
           NTILE(5) OVER (ORDER BY {recency_order}) AS recency_score,
           NTILE(5) OVER (ORDER BY {frequency_order}) AS frequency_score,
           NTILE(5) OVER (ORDER BY monetary_cents ASC, customer_id ASC) AS monetary_score
    FROM customer_orders
)
SELECT customer_id, recency_days, frequency, monetary_cents / 100.0 AS monetary,
       recency_score, frequency_score, monetary_score,
       {segment_case} AS segment, position
FROM rfm_with_scores
"""

SCORE_COLUMNS = (
    "customer_id, recency_days, frequency, monetary, "
    "recency_score, frequency_score, monetary_score, segment"
)
# Stored too: the row's rank by customer id, from which page marks are taken.
STORED_COLUMNS = f"{SCORE_COLUMNS}, position"


# The largest monetary a score row holds: rfm_scores.monetary is NUMERIC(14,2)
# (on SQLite a float, which keeps those 14 digits exactly). Orders go up to
# 9,999,999,999.99 each, so about a hundred of them can exceed it.
_MONETARY = RFMScore.__table__.c.monetary.type
MONETARY_LIMIT_CENTS = 10**_MONETARY.precision - 1  # type: ignore[attr-defined]
assert _MONETARY.scale == 2  # type: ignore[attr-defined]


class MonetaryOverflow(ValueError):
    """A customer's counted orders total more than a score row can hold."""


_OVERFLOW_SQL = """
SELECT o.customer_id, {monetary_cents} AS cents
FROM orders o
WHERE o.ordered_at < :cutoff
GROUP BY o.customer_id
HAVING {monetary_cents} > :limit
ORDER BY o.customer_id
LIMIT 1
"""


def monetary_overflow(conn: Connection, as_of: dt.date) -> MonetaryOverflow | None:
    """The error for the first customer (by id) whose counted orders total
    more than ``MONETARY_LIMIT_CENTS``, or None if there is none. A whole
    aggregation: for explaining a failure, never on the way to success."""
    sql = _OVERFLOW_SQL.format(**dialect_sql(conn.dialect.name))
    row = conn.execute(
        _stmt(sql), {"cutoff": cutoff_for(as_of), "limit": MONETARY_LIMIT_CENTS}
    ).first()
    if row is None:
        return None
    customer_id, total = row
    return MonetaryOverflow(
        f"customer {customer_id}'s orders up to {as_of.isoformat()} total {money(total)}, "
        f"more than a score's monetary holds ({money(MONETARY_LIMIT_CENTS)}); "
        "correct or remove those orders"
    )


def dialect_sql(dialect: str) -> dict[str, str]:
    try:
        return _DIALECT_SQL[dialect]
    except KeyError:
        raise ValueError(f"unsupported database dialect {dialect!r}") from None


def cutoff_for(as_of: dt.date) -> dt.datetime:
    """Orders strictly before the next UTC midnight count (SPEC §2)."""
    return dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=UTC)


def scored_select(
    dialect: str, rules: Sequence[Rule], as_of: dt.date
) -> tuple[str, dict[str, Any]]:
    """The scoring statement (SELECT) and its bound parameters."""
    segment_case, params = case_sql(rules, "recency_score", "frequency_score", "monetary_score")
    sql = _SCORED_SQL.format(segment_case=segment_case, **dialect_sql(dialect))
    params.update(as_of=as_of.isoformat(), cutoff=cutoff_for(as_of))
    return sql, params


def _stmt(sql: str):
    # The cutoff must be rendered exactly as stored timestamps are (text on SQLite).
    return text(sql).bindparams(bindparam("cutoff", type_=UTCDateTime()))


def tune_session(
    conn: Connection,
    work_mem: str,
    timeout_s: int,
    index_workers: int = 0,
    query_workers: int = 0,
) -> None:
    """Transaction-local settings for the big statement (PostgreSQL only):
    - work_mem large enough for the three NTILE sorts to stay in memory;
    - no hash aggregation: grouping 10M orders into 1M customers by hashing
      costs 5x more than streaming them in customer order off the covering
      index, but the planner's cost model prefers the hash;
    - no JIT: compiling the statement took ~0.6 s at 1M customers and won
      nothing back (its time goes to sorting and aggregation, not expressions);
    - ``query_workers`` parallel workers for the statement and the statistics
      queries after it (RFM_QUERY_WORKERS): they share the index-only scan
      and the per-customer aggregation, the leader merges their groups and
      does the NTILE sorts. At 1M customers on
      2 cores the bare statement took 8.3-8.8 s with one or two workers
      against 10.0-10.3 s serial. PostgreSQL plans parallel query for a
      ``CREATE TABLE ... AS`` but never for an ``INSERT ... SELECT``, which
      is why a run's partition is created from the statement;
    - maintenance_work_mem as large, for the index builds after the statement;
    - ``index_workers`` parallel workers for those builds (RFM_INDEX_WORKERS,
      default 0): on 2 cores a parallel build took both, and reads served
      meanwhile waited up to a second (p99 104-620 ms against 20 ms idle; a
      serial build: 28-31 ms), for 0.3 s saved at 1M customers;
    - a statement timeout, so the database itself enforces the time limit."""
    if conn.dialect.name != "postgresql":
        return
    settings = {
        "work_mem": work_mem,
        "maintenance_work_mem": work_mem,
        "max_parallel_maintenance_workers": str(index_workers),
        "enable_hashagg": "off",
        "jit": "off",
        "max_parallel_workers_per_gather": str(query_workers),
        "statement_timeout": str(timeout_s * 1000),
    }
    for name, value in settings.items():
        conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})


# SQLite runs the progress handler every this many virtual machine steps
# (some microseconds each): often enough to stop within a second, and rare
# enough to cost nothing measurable.
_PROGRESS_STEPS = 10_000


def is_time_limit(exc: BaseException) -> bool:
    """Whether the database stopped a statement at the time limit:
    PostgreSQL's statement_timeout, or ``sqlite_deadline``'s interrupt."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "pgcode", None) == "57014":  # query_canceled
        return True
    return type(orig).__module__.startswith("sqlite3") and str(orig) == "interrupted"


@contextmanager
def sqlite_deadline(conn: Connection, timeout_s: int) -> Iterator[None]:
    """SQLite has no statement_timeout: interrupt whatever statement runs
    past ``timeout_s`` from now (it fails with "interrupted"), as
    PostgreSQL's statement timeout stops a calculation there. The handler
    goes with the block, before the connection returns to the pool."""
    raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
    if raw is None:
        yield
        return
    deadline = time.monotonic() + timeout_s
    raw.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    try:
        yield
    finally:
        raw.set_progress_handler(None, 0)


def end_of_big_statement(conn: Connection) -> None:
    """Undo the hash-aggregation override of ``tune_session`` for the grouped
    queries that follow (statistics): over at most 125 groups hashing wins.
    They keep ``tune_session``'s parallel workers: the statistics pass over
    a run of 1M customers took 0.34 s with one worker against 0.63-0.67 s
    serial (0.69 s with two, on 2 cores)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL enable_hashagg TO DEFAULT"))


def _stored_rows(dialect: str, rules: Sequence[Rule], as_of: dt.date) -> tuple[str, dict[str, Any]]:
    """The scoring statement with the columns a stored row adds (``:run_id``,
    ``:calculated_at``), in the order of ``rfm_scores``' columns."""
    select_sql, params = scored_select(dialect, rules, as_of)
    sql = (
        f"SELECT :run_id AS run_id, {STORED_COLUMNS}, :calculated_at AS calculated_at "
        f"FROM ({select_sql}) AS scored"
    )
    return sql, params


def _stored_stmt(sql: str):
    return _stmt(sql).bindparams(bindparam("calculated_at", type_=UTCDateTime()))


def insert_scores(
    conn: Connection,
    run_id: int,
    rules: Sequence[Rule],
    as_of: dt.date,
    calculated_at: dt.datetime,
) -> int:
    """Score every customer with counted orders into ``rfm_scores`` under
    ``run_id`` (SQLite's plain table); returns the number of rows written."""
    rows_sql, params = _stored_rows(conn.dialect.name, rules, as_of)
    sql = f"INSERT INTO rfm_scores (run_id, {STORED_COLUMNS}, calculated_at) {rows_sql}"
    result = conn.execute(
        _stored_stmt(sql), {**params, "run_id": run_id, "calculated_at": calculated_at}
    )
    return result.rowcount


def _cast(name: str, type_sql: str, collation: str | None) -> str:
    collate = f" COLLATE {collation}" if collation else ""
    return f"CAST({name} AS {type_sql}){collate} AS {name}"


def create_scores_table(
    conn: Connection,
    table: str,
    columns: Sequence[tuple[str, str, str | None]],
    run_id: int,
    rules: Sequence[Rule],
    as_of: dt.date,
    calculated_at: dt.datetime,
) -> int:
    """``CREATE TABLE table AS`` every customer's scored row under ``run_id``
    (PostgreSQL), each column cast to the type ``columns`` gives it, as
    ``(name, SQL type, collation or None)`` in table order (identifiers
    quoted); returns the number of rows.
    ``table`` and the types come from ``score_storage`` and the catalog,
    never from a user. Unlike ``INSERT ... SELECT``, this statement may run
    its query in parallel (``tune_session``)."""
    rows_sql, params = _stored_rows(conn.dialect.name, rules, as_of)
    typed = ", ".join(_cast(*column) for column in columns)
    sql = f"CREATE TABLE {table} AS SELECT {typed} FROM ({rows_sql}) AS stored"
    result = conn.execute(
        _stored_stmt(sql), {**params, "run_id": run_id, "calculated_at": calculated_at}
    )
    return result.rowcount


def preview_counts(conn: Connection, rules: Sequence[Rule], as_of: dt.date) -> dict[str, int]:
    """Per-segment counts the calculation would write (``--dry-run``);
    ``MonetaryOverflow`` where the calculation would fail on it."""
    select_sql, params = scored_select(conn.dialect.name, rules, as_of)
    rows = conn.execute(
        _stmt(
            f"SELECT segment, COUNT(*), MAX(monetary) FROM ({select_sql}) AS scored "
            "GROUP BY segment"
        ),
        params,
    ).all()
    if any(cents(largest) > MONETARY_LIMIT_CENTS for *_, largest in rows):
        overflow = monetary_overflow(conn, as_of)
        if overflow is not None:
            raise overflow
    found = {segment: count for segment, count, _ in rows}
    return {name: int(found.get(name, 0)) for name in segment_names(rules)}


def scored_rows(conn: Connection, rules: Sequence[Rule], as_of: dt.date) -> list[tuple]:
    """All scored rows without writing them. For tests and small previews only:
    it loads every customer into Python."""
    select_sql, params = scored_select(conn.dialect.name, rules, as_of)
    rows = conn.execute(
        _stmt(f"SELECT {SCORE_COLUMNS} FROM ({select_sql}) AS scored ORDER BY customer_id"),
        params,
    )
    return [tuple(row) for row in rows]


def cents(value: Any) -> int:
    return int((Decimal(str(value)) * 100).to_integral_value())


def money(cents_value: int) -> str:
    """Two-decimal string, as Django REST framework renders decimals."""
    return str((Decimal(cents_value) / 100).quantize(Decimal("0.01")))
