"""CSV import of orders (SPEC §5 ``flask import-orders``), all or nothing.

On PostgreSQL a plain file (``canonical_csv``) goes straight into COPY
(``pg_import``): PostgreSQL parses it, and Python never touches a row.
Everything else, and any file the fast path gives up on, takes the precise
path: the Python validator (``order_csv``) streams the file once, rejects
it at the first bad value with its line and column, and writes normalised
rows to a temporary file; then ONE transaction loads them into a TEMP
staging table (COPY on PostgreSQL, chunked ``executemany`` on SQLite) and
the shared set-based merge (``order_merge``) moves them into ``customers``
and ``orders``.
"""

from __future__ import annotations

import csv
import tempfile
from typing import IO, Any, BinaryIO

from sqlalchemy import Connection, Engine, text

from .bulk import (
    copy_csv,
    create_staging,
    drop_staging,
    insert_chunks,
    lock_for_bulk_insert,
    vacuum_analyze,
)
from .order_csv import CHUNK, ImportFailed, Passes, Progress, StagedFile, stage_file
from .order_merge import STAGING, ImportSummary, merge_staged
from .pg_import import import_plain

__all__ = ["CHUNK", "ImportFailed", "ImportSummary", "import_orders"]

IMPORT_STAGING = (
    STAGING,
    {
        "line": ("bigint NOT NULL", "INTEGER NOT NULL"),
        "order_id": ("bigint", "INTEGER"),
        "customer_id": ("integer NOT NULL", "INTEGER NOT NULL"),
        "ordered_at": ("timestamptz NOT NULL", "TEXT NOT NULL"),
        "total_amount": ("numeric(12,2) NOT NULL", "NUMERIC NOT NULL"),
    },
)


def _sqlite_row(fields: list[str]) -> tuple[Any, ...]:
    line, order_id, customer_id, stamp, amount = fields
    # float, as SQLAlchemy binds Numeric on SQLite (no native decimal there).
    return int(line), int(order_id) if order_id else None, int(customer_id), stamp, float(amount)


def load_staged(conn: Connection, staged_rows: IO[str], staged: StagedFile) -> ImportSummary:
    """Load the normalised rows and merge them, inside the caller's transaction."""
    name, columns = IMPORT_STAGING
    lock_for_bulk_insert(conn)
    create_staging(conn, name, columns)
    staged_rows.seek(0)
    if conn.dialect.name == "postgresql":
        copy_csv(conn, name, list(columns), staged_rows)
        conn.execute(text(f"ANALYZE {name}"))  # temp tables are never auto-analysed
    else:
        rows = (_sqlite_row(fields) for fields in csv.reader(staged_rows))
        insert_chunks(conn, name, list(columns), rows)
    summary = merge_staged(conn, staged, method="validated")
    drop_staging(conn, name)
    return summary


def import_orders(
    engine: Engine,
    raw: BinaryIO,
    progress: Progress | None = None,
    work_mem: str | None = None,
) -> ImportSummary:
    """Validate and import a CSV of orders (a binary file object), all or
    nothing. ``work_mem``: PostgreSQL memory for the load's sorts and index
    builds (the server's setting if None)."""
    passes = Passes(progress)
    summary = None
    if engine.dialect.name == "postgresql" and raw.seekable():
        start = raw.tell()
        summary = import_plain(engine, raw, passes.start, work_mem)
        raw.seek(start)
    if summary is None:
        with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as staged_rows:
            staged = stage_file(raw, staged_rows, engine.dialect.name, passes.start(0))
            with engine.connect() as conn, conn.begin():
                summary = load_staged(conn, staged_rows, staged)
    if summary.method == "copy":  # orders: written frozen and analysed already
        vacuum_analyze(engine, "customers")
    elif summary.orders_inserted:
        vacuum_analyze(engine, "customers", "orders")
    return summary
