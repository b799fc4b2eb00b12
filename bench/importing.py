"""``flask import-orders`` throughput against a bare COPY of the same file.

The CSV is the dataset's own orders (``order_id,customer_id,ordered_at,
total_amount``, ISO 8601 UTC timestamps, in id order, as a shop would export
them). Each measurement starts from an empty database built with the
migrations. The floor is a client-side ``COPY ... FROM STDIN`` of the same
file through psycopg2 into an empty table with the same columns and types
and no index or constraint; a COPY into a table with the indexes and checks
of ``orders`` is shown beside it for context. One more import, in-process
and unmeasured, times each of its statements (``explain.import_timeline``).
"""

from __future__ import annotations

import time
from pathlib import Path

from . import explain
from .common import DATA, connect, log, median, query, recreate_database, run_flask, settle
from .datasets import Size
from .recalc import make_app

IMPORT_DB = "rfm_bench_import"
COLUMNS = "order_id, customer_id, ordered_at, total_amount"
PLAIN_TABLE = (
    "CREATE TABLE bare_orders (order_id bigint, customer_id integer, "
    "ordered_at timestamptz, total_amount numeric(12,2))"
)


def export_csv(size: Size) -> tuple[Path, int]:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"orders_{size.label}.csv"
    with connect(size.database) as conn, conn.cursor() as cur, open(path, "w") as out:
        cur.copy_expert(
            "COPY (SELECT id AS order_id, customer_id, "
            "to_char(ordered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
            "AS ordered_at, total_amount FROM orders ORDER BY id) "
            "TO STDOUT WITH (FORMAT csv, HEADER)",
            out,
        )
    (rows,) = query(size.database, "SELECT count(*) FROM orders")[0]
    return path, int(rows)


def _fresh() -> None:
    recreate_database(IMPORT_DB)
    run_flask(IMPORT_DB, "db", "upgrade", timeout=600)


def project_import(path: Path, rows: int, timeout: float) -> float:
    _fresh()
    settle()
    measured = run_flask(IMPORT_DB, "import-orders", str(path), timeout=timeout)
    (imported,) = query(IMPORT_DB, "SELECT count(*) FROM orders")[0]
    if imported != rows:
        raise RuntimeError(f"import-orders wrote {imported:,} orders, expected {rows:,}")
    return measured.seconds


def bare_copy(path: Path, rows: int, create: str, table: str, columns: str) -> float:
    _fresh()
    with connect(IMPORT_DB, autocommit=False) as conn:
        with conn.cursor() as cur:
            cur.execute(create)
        conn.commit()
        settle()
        started = time.perf_counter()
        with conn.cursor() as cur, open(path) as source:
            cur.copy_expert(
                f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER)", source
            )
        conn.commit()
        seconds = time.perf_counter() - started
    (copied,) = query(IMPORT_DB, f"SELECT count(*) FROM {table}")[0]
    if copied != rows:
        raise RuntimeError(f"COPY wrote {copied:,} rows, expected {rows:,}")
    return seconds


def statement_timeline(size: Size, path: Path, rows: int, plans: Path) -> dict:
    _fresh()
    found = explain.import_timeline(make_app(IMPORT_DB), path, plans / f"import_{size.label}.txt")
    (imported,) = query(IMPORT_DB, "SELECT count(*) FROM orders")[0]
    if imported != rows:
        raise RuntimeError(f"the timed import wrote {imported:,} orders, expected {rows:,}")
    return found


def run(size: Size, repeats: int, timeout: float, plans: Path) -> dict:
    path, rows = export_csv(size)
    log(f"import: {rows:,} orders of the {size.label} dataset in {path.name}")
    project, plain = [], []
    for _ in range(repeats):
        project.append(project_import(path, rows, timeout))
        log(f"  flask import-orders: {project[-1]:.1f} s ({rows / project[-1]:,.0f} rows/s)")
        plain.append(bare_copy(path, rows, PLAIN_TABLE, "bare_orders", COLUMNS))
        log(f"  bare COPY: {plain[-1]:.1f} s ({rows / plain[-1]:,.0f} rows/s)")
    # Context only, and the slowest by far: once.
    indexed = bare_copy(
        path,
        rows,
        "CREATE TABLE indexed_orders (LIKE orders INCLUDING ALL)",
        "indexed_orders",
        "id, customer_id, ordered_at, total_amount",
    )
    log(f"  COPY into an indexed copy of orders: {indexed:.1f} s")
    log("  one more import, in-process, each statement timed")
    timeline = statement_timeline(size, path, rows, plans)
    query("postgres", f'DROP DATABASE IF EXISTS "{IMPORT_DB}" WITH (FORCE)')
    return {
        "size": size.label,
        "rows": rows,
        "repeats": repeats,
        "file_mb": path.stat().st_size / 1e6,
        "project_seconds": median(project),
        "copy_seconds": median(plain),
        "indexed_copy_seconds": indexed,
        "project_rows_per_s": rows / median(project),
        "copy_rows_per_s": rows / median(plain),
        "indexed_copy_rows_per_s": rows / indexed,
        "timeline": timeline,
    }
