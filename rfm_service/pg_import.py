"""The PostgreSQL fast path of ``flask import-orders``: when
``canonical_csv`` finds the file plain, its bytes go straight to COPY and
PostgreSQL parses them; Python never touches a row.

Two ways in, each ONE transaction:

- ``copy``, when ``orders`` is empty: COPY ... FREEZE straight into
  ``orders`` with its keys, indexes and foreign keys dropped first and
  rebuilt after (one parallel sort per index instead of millions of index
  insertions and foreign-key lookups, and no VACUUM pass over the rows),
  then the missing customers from the loaded rows, then the foreign keys
  again, validated by PostgreSQL. This holds an ACCESS EXCLUSIVE lock on
  ``orders`` (readers wait) until it commits, and on ``customers`` too:
  dropping the foreign key locks the table it references.
- ``staged copy`` otherwise: COPY into a typed TEMP staging table whose
  identity column numbers the lines, then the merge every path shares
  (``order_merge``), which skips order ids already present.

Whatever goes wrong with the data (a block that is not plain, a value
PostgreSQL rejects, an order id used twice, a header only) rolls the
transaction back and returns None: the caller then runs the precise
validator, which words the error with its line and column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import BinaryIO

from sqlalchemy import Connection, Engine, text

from .bulk import (
    bump_sequence,
    copy_csv,
    drop_keys_and_indexes,
    lock_for_bulk_insert,
)
from .canonical_csv import (
    BLOCK,
    HEADER_LIMIT,
    PlainBlocks,
    ReadAhead,
    line_pattern,
    line_patterns,
    plain_header,
)
from .order_csv import ImportFailed, Progress, StagedFile, check_header
from .order_merge import STAGING, ImportSummary, customer_name_sql, merge_staged

_ORDER_COLUMNS = {"order_id": "id"}  # CSV column -> orders column, where they differ

_SESSION = {
    # Naive timestamps mean UTC (SPEC §5), as in the Python validator.
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    # Compiling the few big statements here costs more than it saves.
    "jit": "off",
}
# Customers for the loaded orders, as the merge names them, created at their
# first order. The first orders are grouped into a TEMP table by CREATE TABLE
# ... AS, which PostgreSQL may run in parallel (never INSERT ... SELECT), then
# inserted: for 10M orders of 950k customers on 2 cores, 2.9-3.4 s against
# 3.2-3.7 s for one INSERT ... SELECT ... GROUP BY (3 rounds each, after a
# CHECKPOINT). With customers present, the missing ones only: the
# lock keeps other writers out, so no ON CONFLICT (a costly speculative
# insertion per row).
_FIRST_ORDERS = "rfm_import_first_orders"
_GROUP_FIRST_ORDERS = f"""
CREATE TEMP TABLE {_FIRST_ORDERS} ON COMMIT DROP AS
SELECT customer_id, MIN(ordered_at) AS first_order FROM orders GROUP BY customer_id
"""
_ALL_CUSTOMERS = f"""
INSERT INTO customers (id, name, created_at)
SELECT customer_id, {customer_name_sql("customer_id")}, first_order FROM {_FIRST_ORDERS}
"""
_NEW_CUSTOMERS = f"""
INSERT INTO customers (id, name, created_at)
SELECT f.customer_id, {customer_name_sql("f.customer_id")}, f.first_order FROM {_FIRST_ORDERS} f
WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = f.customer_id)
"""
_STAGING_TABLE = f"""
CREATE TEMP TABLE {STAGING} (
    line bigint GENERATED ALWAYS AS IDENTITY (START WITH 2),
    order_id bigint,
    customer_id integer NOT NULL,
    ordered_at timestamptz NOT NULL,
    total_amount numeric(12,2) NOT NULL
) ON COMMIT DROP
"""


Load = Callable[[Connection, PlainBlocks, list[str]], ImportSummary | None]


def import_plain(
    engine: Engine,
    raw: BinaryIO,
    progress: Callable[[int], Progress],
    work_mem: str | None = None,
) -> ImportSummary | None:
    """Import ``raw`` (seekable, at its start) if it is plain; None if the
    precise path must take it. ``progress(offset)`` gives the progress
    callback of one pass over the file that starts ``offset`` bytes in;
    ``work_mem`` is PostgreSQL's work_mem and maintenance_work_mem (for the
    index builds) in the transaction, the server's own if None."""
    origin = raw.tell()
    header = raw.readline(HEADER_LIMIT)
    fields = plain_header(header)
    if fields is None:
        return None
    try:
        columns = check_header(fields)
    except ImportFailed:
        return None  # the precise path words header errors
    start = raw.tell()
    if not raw.read(1):
        return None  # a header only: the precise path words that too
    loads: list[Load] = [_load_direct, _load_staged]
    for load in loads:
        raw.seek(start)
        patterns = line_patterns(columns, empty_order_id=load is _load_staged)
        blocks = PlainBlocks(raw, patterns, progress(start - origin))
        try:
            with engine.connect() as conn, conn.begin():
                _prepare(conn, work_mem)
                summary = load(conn, blocks, columns)
        except ImportFailed:
            raise  # a duplicate order id, worded with both lines
        except Exception as exc:
            retry = _retry(exc, blocks, columns)
            if retry is None:
                raise
            if not retry:
                return None
            continue
        if summary is not None:
            return summary
    return None


def _retry(exc: Exception, blocks: PlainBlocks, columns: list[str]) -> bool | None:
    """For data the fast path could not take: whether the staged copy may
    still take it. None for a real failure (lost connection, lock timeout,
    a bug), which must surface as it is."""
    sqlstate = getattr(getattr(exc, "orig", exc), "pgcode", None) or ""
    if sqlstate.startswith("23"):  # integrity: an order id twice gets its message staged
        return True
    if sqlstate == "42501":  # not the tables' owner: no TRUNCATE or dropping keys
        return True
    if sqlstate.startswith("22"):  # data exception: 30 February, an id out of range
        return False
    if blocks.failure is not None:  # COPY cancelled by the check of a block
        # The patterns differ in empty order ids, which the staging table takes.
        staged = line_pattern(columns, empty_order_id=True)
        return bool(blocks.failed_lines) and staged.fullmatch(blocks.failed_lines) is not None
    return None


def _prepare(conn: Connection, work_mem: str | None) -> None:
    memory = {"work_mem": work_mem, "maintenance_work_mem": work_mem} if work_mem else {}
    for name, value in {**_SESSION, **memory}.items():
        conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
    lock_for_bulk_insert(conn)


def _set(conn: Connection, name: str, value: str) -> str:
    """SET LOCAL ``name``; returns the value it had."""
    old = conn.execute(text("SELECT current_setting(:name)"), {"name": name}).scalar_one()
    conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
    return str(old)


@contextmanager
def _planner(conn: Connection, **settings: str) -> Iterator[None]:
    """Planner settings for the statements inside only."""
    old = {name: _set(conn, name, value) for name, value in settings.items()}
    yield
    for name, value in old.items():
        _set(conn, name, value)


def _run(conn: Connection, statements: list[str]) -> None:
    for sql in statements:
        conn.execute(text(sql))


def _has_rows(conn: Connection, table: str) -> bool:
    return bool(conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {table})")).scalar())


def _load_direct(conn: Connection, blocks: PlainBlocks, columns: list[str]) -> ImportSummary | None:
    if _has_rows(conn, "orders"):
        return None
    # Readers wait from here to the commit; the table is empty anyway.
    conn.execute(text("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"))
    dropped = drop_keys_and_indexes(conn, "orders")
    if dropped is None:
        return None
    conn.execute(text("TRUNCATE orders"))  # empty already; lets COPY write frozen rows
    targets = [_ORDER_COLUMNS.get(column, column) for column in columns]
    with closing(ReadAhead(blocks)) as source:
        rows = copy_csv(conn, "orders", targets, source, freeze=True, block=BLOCK)
    _run(conn, dropped.keys + dropped.indexes)  # a duplicate order id fails here
    # Statistics for the plans below; they also spare an ANALYZE after the commit.
    conn.execute(text("ANALYZE orders"))
    customers = _add_customers(conn)
    conn.execute(text("ANALYZE customers"))
    # RI's check query as a merge of two index scans in customer order, not
    # a hash of the customers probed ten million times.
    with _planner(conn, enable_hashjoin="off", enable_nestloop="off"):
        _run(conn, dropped.foreign)
    bump_sequence(conn, "customers")
    bump_sequence(conn, "orders")
    return ImportSummary(rows, rows, 0, customers, method="copy")


def _add_customers(conn: Connection) -> int:
    """The missing customers of the orders just loaded (all of ``orders``),
    first orders read in customer order from the index just built."""
    with _planner(conn, enable_hashagg="off"):
        conn.execute(text(_GROUP_FIRST_ORDERS))
    if _has_rows(conn, "customers"):
        created = int(conn.execute(text(_NEW_CUSTOMERS)).rowcount)
    else:
        # None there yet: no key to check row by row either, one sort after.
        conn.execute(text("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE"))
        dropped = drop_keys_and_indexes(conn, "customers")
        created = int(conn.execute(text(_ALL_CUSTOMERS)).rowcount)
        if dropped is not None:
            _run(conn, dropped.keys + dropped.indexes + dropped.foreign)
    return created


def _load_staged(conn: Connection, blocks: PlainBlocks, columns: list[str]) -> ImportSummary:
    conn.execute(text(_STAGING_TABLE))
    with closing(ReadAhead(blocks)) as source:
        rows = copy_csv(conn, STAGING, columns, source, block=BLOCK)
    conn.execute(text(f"ANALYZE {STAGING}"))  # temp tables are never auto-analysed
    with_ids = conn.execute(text(f"SELECT COUNT(order_id) FROM {STAGING}")).scalar() or 0
    return merge_staged(conn, StagedFile(rows, with_ids), method="staged copy")
