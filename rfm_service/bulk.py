"""Bulk-load helpers shared by CSV import and demo seeding: staging tables,
COPY on PostgreSQL, chunked executemany on SQLite, sequence bumps."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import IO, Any

from sqlalchemy import Connection, Engine, text

CHUNK = 10_000  # rows per executemany


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


def copy_csv(conn: Connection, table: str, columns: list[str], source: IO[str]) -> None:
    """PostgreSQL COPY of CSV text, on the same connection and transaction."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    with dbapi.cursor() as cursor:
        cursor.copy_expert(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", source
        )


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
