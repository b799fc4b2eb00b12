"""Bulk-load helpers shared by CSV import and demo seeding: staging tables,
COPY on PostgreSQL, chunked executemany on SQLite, sequence bumps."""

from __future__ import annotations

import itertools
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, text

CHUNK = 10_000  # rows per executemany


class Readable(Protocol):
    """What COPY reads from: a text or binary file, or anything alike."""

    def read(self, size: int = -1, /) -> str | bytes: ...


def lock_for_bulk_insert(conn: Connection) -> None:
    """Serialise bulk writers (explicit ids, sequence bumps) on PostgreSQL;
    readers, the RFM calculation included, are not blocked. SQLite has a
    single writer anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE customers, orders IN SHARE ROW EXCLUSIVE MODE"))


def create_staging(conn: Connection, name: str, columns: dict[str, tuple[str, str]]) -> None:
    """A TEMP table; ``columns`` maps names to (PostgreSQL type, SQLite type)."""
    pick = 0 if conn.dialect.name == "postgresql" else 1
    # On SQLite the DDL runs outside the transaction, so a failed run may leave it.
    drop_staging(conn, name)
    body = ", ".join(f"{column} {types[pick]}" for column, types in columns.items())
    conn.execute(text(f"CREATE TEMP TABLE {name} ({body})"))


def drop_staging(conn: Connection, name: str) -> None:
    schema = "pg_temp" if conn.dialect.name == "postgresql" else "temp"
    conn.execute(text(f"DROP TABLE IF EXISTS {schema}.{name}"))


def copy_csv(
    conn: Connection,
    table: str,
    columns: list[str],
    source: Readable,
    freeze: bool = False,
    block: int = 8192,
) -> int:
    """PostgreSQL COPY of CSV text, on the same connection and transaction;
    returns the rows copied. ``freeze`` writes the rows frozen and their
    pages all-visible (the table must be created or truncated in this
    transaction), so no VACUUM pass over them is needed afterwards."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    options = "FORMAT csv, FREEZE" if freeze else "FORMAT csv"
    with dbapi.cursor() as cursor, _sigint_noted() as interrupted:
        try:
            cursor.copy_expert(
                f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH ({options})", source, block
            )
        except Exception:
            # psycopg2 turns an exception raised in ``source.read`` (Ctrl-C
            # arrives while COPY waits for the next block) into QueryCanceled,
            # "error in .read() call": abort as on any other Ctrl-C instead.
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        return int(cursor.rowcount)


@contextmanager
def _sigint_noted() -> Iterator[list[int]]:
    """Note SIGINT (Ctrl-C) in the list yielded, while Python's handler still
    raises KeyboardInterrupt as usual. Main thread only (where Python runs
    signal handlers); elsewhere the list stays empty."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # SIG_IGN or SIG_DFL: nothing raises, nothing to note
        yield noted
        return

    def note(signum: int, frame: FrameType | None) -> None:
        noted.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


def insert_chunks(
    conn: Connection, table: str, columns: list[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    """SQLite bulk insert: executemany a chunk at a time (bounded memory)."""
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, CHUNK)):
        conn.exec_driver_sql(sql, chunk)


def bump_sequence(conn: Connection, table: str) -> None:
    """Move ``table``'s id sequence past MAX(id) (PostgreSQL): explicit ids do
    not advance it, and later inserts would collide. Never moves it back."""
    if conn.dialect.name != "postgresql":
        return  # SQLite's rowid picks MAX(rowid) + 1 by itself
    conn.execute(
        text(
            "SELECT setval(seq, GREATEST(max_id, COALESCE(pg_sequence_last_value(seq), 0))) "
            "FROM (SELECT CAST(pg_get_serial_sequence(:table, 'id') AS regclass) AS seq, "
            f"MAX(id) AS max_id FROM {table}) AS current "
            "WHERE max_id IS NOT NULL AND seq IS NOT NULL"
        ),
        {"table": table},
    )


def vacuum_analyze(engine: Engine, *tables: str) -> None:
    """After a bulk load (PostgreSQL): mark pages all-visible so the engine's
    aggregate can run as an index-only scan, and refresh planner statistics.
    VACUUM cannot run inside a transaction, hence autocommit."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.execute(text(f"VACUUM (ANALYZE) {table}"))


@dataclass(frozen=True)
class DroppedKeys:
    """The statements that re-create what ``drop_keys_and_indexes`` dropped,
    in three groups so the caller can order the work around them."""

    keys: list[str]  # primary key, unique and exclusion constraints
    indexes: list[str]  # plain indexes
    foreign: list[str]  # this table's foreign keys (validated when re-added)


_CONSTRAINTS = """
SELECT c.contype = 'f',
       format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname),
       format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname,
              pg_get_constraintdef(c.oid))
FROM pg_constraint c
WHERE c.conrelid = CAST(:table AS regclass) AND c.contype IN ('p', 'u', 'x', 'f')
ORDER BY c.contype = 'f', c.conname
"""
_INDEXES = """
SELECT format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid)
FROM pg_index i
WHERE i.indrelid = CAST(:table AS regclass)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                  WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid)
ORDER BY i.indexrelid
"""
_REFERENCED = """
SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE confrelid = CAST(:table AS regclass))
"""


def drop_keys_and_indexes(conn: Connection, table: str) -> DroppedKeys | None:
    """Drop ``table``'s indexes, key constraints and foreign keys (PostgreSQL,
    inside the caller's transaction, which must hold an ACCESS EXCLUSIVE
    lock): before a bulk load into an empty table, one sort per index
    afterwards beats maintaining it row by row. NOT NULL and CHECK
    constraints stay. None, and nothing dropped, if a foreign key (another
    table's or its own) references this table's keys."""
    params = {"table": table}
    if conn.execute(text(_REFERENCED), params).scalar():
        return None
    dropped = DroppedKeys([], [], [])
    drops = []
    for is_foreign, drop, create in conn.execute(text(_CONSTRAINTS), params):
        (dropped.foreign if is_foreign else dropped.keys).append(create)
        drops.append(drop)
    for drop, create in conn.execute(text(_INDEXES), params):
        dropped.indexes.append(create)
        drops.append(drop)
    for sql in drops:
        conn.execute(text(sql))
    return dropped
