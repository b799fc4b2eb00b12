"""One PostgreSQL database per dataset size, filled by the project's own
``flask seed-demo`` and reused while it still holds the same data.

A database is reused when its COMMENT (written only after seeding and
VACUUM succeeded) names the same size, seed, order rate, end date and
generator source, its row counts are intact, and after ``flask db upgrade``
its schema is the one the migrations build in an empty database today
(``pg_dump --schema-only`` of both; a migration edited in place changes it). Otherwise it is dropped
and rebuilt: ``flask db upgrade``, ``flask seed-demo``, ``VACUUM (ANALYZE)``
(a shop's tables have been vacuumed by autovacuum long before anyone runs a
report; a freshly seeded table has not, and index-only scans would then visit
the heap for every row).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import shutil
import subprocess

from .common import (
    ROOT,
    connect,
    database_exists,
    db_url,
    execute,
    log,
    query,
    recreate_database,
    run_flask,
)

SEED = 42
ORDERS_PER_CUSTOMER = 10
END_DATE = "2026-06-30"  # fixed: the data and every score are the same on every rerun
AS_OF = END_DATE  # the calculation date of every measurement
GENERATOR = ROOT / "rfm_service" / "demo_data.py"
REFERENCE_DB = "rfm_bench_schema"


@dataclasses.dataclass(frozen=True)
class Size:
    label: str  # "10k", "100k", "1M"
    customers: int

    @property
    def database(self) -> str:
        return f"rfm_bench_{self.label.lower()}"


def parse_size(text: str) -> Size:
    match = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", text)
    if not match:
        raise ValueError(f"not a size: {text!r} (expected e.g. 10k, 100k, 1M or 5000)")
    number, unit = int(match[1]), match[2].lower()
    customers = number * {"": 1, "k": 1_000, "m": 1_000_000}[unit]
    if customers < 100:
        raise ValueError(f"size {text!r} is too small (at least 100 customers)")
    if customers % 1_000_000 == 0:
        label = f"{customers // 1_000_000}M"
    elif customers % 1_000 == 0:
        label = f"{customers // 1_000}k"
    else:
        label = str(customers)
    return Size(label, customers)


def marker(size: Size) -> str:
    source = hashlib.sha256(GENERATOR.read_bytes()).hexdigest()[:16]
    return (
        f"rfm-bench customers={size.customers} seed={SEED} "
        f"orders_per_customer={ORDERS_PER_CUSTOMER} end_date={END_DATE} generator={source}"
    )


def schema(database: str) -> str | None:
    """The schema as pg_dump writes it, without per-run score tables, the
    benchmark's own tables and pg_dump's random session keys; None without pg_dump."""
    if shutil.which("pg_dump") is None:
        return None
    out = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--no-privileges",
         "-T", "rfm_scores_r*", "-T", "bench_*", "-d", db_url(database)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    skip = ("--", "\\restrict", "\\unrestrict")
    return "\n".join(x for x in out.splitlines() if x.strip() and not x.startswith(skip))


@functools.cache
def reference_schema() -> str | None:
    """What the migrations build today, in an empty database."""
    recreate_database(REFERENCE_DB)
    try:
        run_flask(REFERENCE_DB, "db", "upgrade", timeout=600)
        return schema(REFERENCE_DB)
    finally:
        execute("postgres", f'DROP DATABASE IF EXISTS "{REFERENCE_DB}" WITH (FORCE)')


def _comment(database: str) -> str | None:
    rows = query(
        database,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        [database],
    )
    return rows[0][0] if rows else None


def _counts(database: str) -> tuple[int, int]:
    ((customers, orders),) = query(
        database, "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders)"
    )
    return int(customers), int(orders)


def ensure(size: Size, seed_timeout: float) -> dict:
    """The dataset's database, seeded unless an identical one exists."""
    wanted = marker(size)
    if database_exists(size.database) and _comment(size.database) == wanted:
        customers, orders = _counts(size.database)
        if customers == size.customers and orders > 0:
            run_flask(size.database, "db", "upgrade", timeout=600)  # a newer migration, if any
            reset_runs(size.database)
            expected = reference_schema()
            if expected is not None and schema(size.database) == expected:
                found = f"{customers:,} customers, {orders:,} orders"
                log(f"{size.label}: reusing {size.database} ({found})")
                return {
                    "reused": True,
                    "seed_seconds": None,
                    "customers": customers,
                    "orders": orders,
                }
            log(f"{size.label}: {size.database} has an outdated schema")
    log(f"{size.label}: seeding {size.database} with {size.customers:,} customers")
    recreate_database(size.database)
    run_flask(size.database, "db", "upgrade", timeout=600)
    seeded = run_flask(
        size.database,
        "seed-demo",
        "--customers", str(size.customers),
        "--seed", str(SEED),
        "--orders-per-customer", str(ORDERS_PER_CUSTOMER),
        "--end-date", END_DATE,
        timeout=seed_timeout,
    )  # fmt: skip
    log(f"{size.label}: {seeded.stdout.strip()}")
    execute(size.database, "VACUUM (ANALYZE)")
    with connect(size.database) as conn, conn.cursor() as cur:
        cur.execute(f'COMMENT ON DATABASE "{size.database}" IS %s', [wanted])
    customers, orders = _counts(size.database)
    return {
        "reused": False,
        "seed_seconds": seeded.seconds,
        "customers": customers,
        "orders": orders,
    }


# Score tables of single runs (rfm_scores partitions), attached or not; then
# every other table keyed by run, and the runs.
_CLEAR_RUNS = """
DO $$
DECLARE t text;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables
             WHERE schemaname = 'public' AND tablename ~ '^rfm_scores_r[0-9]+$'
    LOOP
        EXECUTE format('DROP TABLE %I', t);
    END LOOP;
    FOR t IN SELECT DISTINCT c.table_name FROM information_schema.columns c
             JOIN information_schema.tables USING (table_schema, table_name)
             WHERE c.table_schema = 'public' AND c.column_name = 'run_id'
               AND c.table_name NOT LIKE 'bench%'
    LOOP
        EXECUTE format('TRUNCATE %I CASCADE', t);
    END LOOP;
    TRUNCATE rfm_runs CASCADE;
END $$
"""


def reset_runs(database: str) -> None:
    """Start every measurement from the same state: no runs, no scores."""
    execute(database, _CLEAR_RUNS, "VACUUM (ANALYZE) rfm_scores, rfm_runs")


def table_sizes(database: str) -> dict[str, str]:
    rows = query(
        database,
        "SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class "
        "WHERE relname IN ('orders', 'customers', 'rfm_scores') AND relkind = 'r'",
    )
    return dict(rows)
