"""The PostgreSQL fast path of ``flask import-orders`` (``pg_import``,
``canonical_csv``): every value it lets through means to PostgreSQL what it
means to the Python validator; it stores the same rows, customers and
summaries as the precise path; files it cannot take get the precise path's
errors; and the keys and indexes it drops come back exactly as they were.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfm_service import ingest, order_csv, order_merge
from rfm_service.canonical_csv import FAST_VALUES, VALUES, line_patterns
from rfm_service.extensions import db
from rfm_service.ingest import ImportFailed, ImportSummary

from .conftest import add_orders, empty_tables

HEADER = "customer_id,ordered_at,total_amount,order_id"
# Plain in every way the fast path allows: quotes, offsets, fractions,
# short amounts, dates without a time, the largest ids and amount.
PLAIN_ROWS = [
    "1,2024-01-05T09:30:00Z,19.99,10",
    '"2",2024-02-29 23:59:59,1250.5,11',
    "3,2024-03-10T12:00:00+02:00,0,12",
    "3,2024-03-10T23:30:00-05:00,.5,13",
    "4,2024-03-10 08:15:30.25+05:30,5.,14",
    '4,2024-03-10,"7.25",15',
    '5,2024-03-10T08:15,0007.10,"16"',
    "2147483647,1999-12-31T23:59:59.999999Z,9999999999.99,9223372036854775807",
    "6,2024-06-01T00:00:00.1,12.3,17",
    "1,2024-01-01T00:00:00-00:00,3.00,18",
]

PG_TYPES = {
    "order_id": "bigint",
    "customer_id": "integer",
    "ordered_at": "timestamptz",
    "total_amount": "numeric(12,2)",
}


def write(tmp_path: Path, text: str, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def run(app: Flask, path: Path, progress: list[int] | None = None) -> ImportSummary:
    with app.app_context(), path.open("rb") as raw:
        return ingest.import_orders(
            db.engine, raw, progress=None if progress is None else progress.append
        )


def snapshot(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    with app.app_context(), db.engine.connect() as conn:
        return {
            "orders": conn.execute(sa.text("SELECT * FROM orders ORDER BY id")).all(),
            "customers": conn.execute(sa.text("SELECT * FROM customers ORDER BY id")).all(),
        }


SCHEMA = """
SELECT 'index', c.relname, pg_get_indexdef(i.indexrelid), NULL
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid IN ('orders'::regclass, 'customers'::regclass)
UNION ALL
SELECT 'constraint', conname, pg_get_constraintdef(oid), convalidated
FROM pg_constraint WHERE conrelid IN ('orders'::regclass, 'customers'::regclass)
ORDER BY 1, 2
"""


def schema(app: Flask) -> list[tuple[Any, ...]]:
    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(sa.text(SCHEMA)).all()


Rows = dict[str, list[tuple[Any, ...]]]


def fast_then_precise(
    app: Flask,
    path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prepare: Callable[[], None] = lambda: None,
) -> tuple[ImportSummary, Rows, ImportSummary, Rows]:
    """Import ``path`` as ``import_orders`` does, then again from the same
    start (empty tables, then ``prepare``) by the precise path alone; the
    summaries and the rows each left. The keys and indexes the fast path
    dropped must be back as they were, and nothing it staged left behind."""
    prepare()
    before = schema(app)
    fast = run(app, path)
    fast_rows = snapshot(app)
    assert schema(app) == before
    with app.app_context(), db.engine.connect() as conn:  # in any session
        left = sa.text(
            "SELECT relname FROM pg_class "
            f"WHERE relname LIKE 'rfm_import%' OR relname = '{order_merge.STAGING}'"
        )
        assert conn.execute(left).all() == []
    empty_tables(app)
    prepare()
    monkeypatch.setattr(ingest, "import_plain", lambda *args: None)
    precise = run(app, path)
    return fast, fast_rows, precise, snapshot(app)


@pytest.fixture
def precise_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "import_plain", lambda *args: None)


@pytest.fixture
def precise_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the precise validator's passes over a file."""
    calls: list[int] = []
    real = ingest.stage_file

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(ingest, "stage_file", counted)
    return calls


# -- the plain form ----------------------------------------------------------


@pytest.fixture(scope="module")
def pg(pg_url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("SET TimeZone = 'UTC'"))
        conn.execute(sa.text("SET DateStyle = 'ISO, YMD'"))
        yield conn
    engine.dispose()


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    form=st.sampled_from([VALUES, FAST_VALUES]),
    column=st.sampled_from(sorted(VALUES)),
    data=st.data(),
)
def test_a_plain_value_postgresql_takes_means_the_same_to_python(
    pg: sa.Connection, form: dict[str, bytes], column: str, data: st.DataObject
) -> None:
    pattern = re.compile(form[column])
    raw = data.draw(st.from_regex(pattern, fullmatch=True)).decode("ascii")
    try:
        stored = pg.execute(sa.text(f"SELECT CAST(:v AS {PG_TYPES[column]})"), {"v": raw}).scalar()
    except sa.exc.DBAPIError:
        return  # rejected: the fast path falls back to the precise validator
    assert order_csv._PARSERS[column](raw) == stored, raw


@pytest.mark.parametrize(
    "column,value",
    [
        ("total_amount", "1e3"),
        ("total_amount", "NaN"),
        ("total_amount", "Infinity"),
        ("total_amount", "1.234"),
        ("total_amount", "-5"),
        ("total_amount", "+5"),
        ("total_amount", " 5"),
        ("total_amount", "10000000000"),
        ("customer_id", "0"),
        ("customer_id", "-7"),
        ("customer_id", "07"),
        ("customer_id", "1.0"),
        ("order_id", '""'),
        ("ordered_at", "2024-01-01T24:00:00"),
        ("ordered_at", "2024-01-01T23:59:60"),
        ("ordered_at", "2024-01-01T10:00:00+14:00"),
        ("ordered_at", "2024-01-01T10:00:00+0200"),
        ("ordered_at", "2024-01-01T10:00:00.1234567"),
        ("ordered_at", "0999-12-31"),
        ("ordered_at", "2024-1-1"),
        ("ordered_at", "20240101"),
        ("ordered_at", "yesterday"),
        ("ordered_at", "Jan 5 2024"),
        ("ordered_at", "2024-01-05Z"),
    ],
)
def test_values_the_parsers_may_read_differently_are_not_plain(column: str, value: str) -> None:
    columns = ["customer_id", "ordered_at", "total_amount", "order_id"]
    good = {"customer_id": "1", "ordered_at": "2024-01-01", "total_amount": "5", "order_id": "1"}
    line = ",".join(value if c == column else good[c] for c in columns) + "\n"
    for pattern in line_patterns(columns, empty_order_id=True):
        assert pattern.fullmatch(line.encode()) is None, pattern


# -- the same result as the precise path --------------------------------------


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "no final line end"])
def test_copy_into_empty_orders_stores_what_the_precise_path_stores(
    pg_app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line_end: str
) -> None:
    end = "\n" if line_end == "no final line end" else line_end
    text = end.join([HEADER, *PLAIN_ROWS]) + ("" if line_end == "no final line end" else end)
    path = write(tmp_path, text)

    fast, fast_rows, precise, precise_rows = fast_then_precise(pg_app, path, monkeypatch)

    assert fast.method == "copy"
    assert precise.method == "validated"
    assert fast_rows == precise_rows
    assert (fast.rows_read, fast.orders_inserted, fast.customers_created) == (10, 10, 7)
    assert fast == ImportSummary(**{**precise.__dict__, "method": "copy"})


def test_copy_beside_existing_customers_adds_only_the_missing_ones(
    pg_app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def existing() -> None:  # customers only: orders stay empty, so the copy path runs
        with pg_app.app_context(), db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO customers (id, name, created_at) VALUES "
                    "(1, 'Ada', '2022-01-01T00:00:00Z'), (99, 'Grace', '2022-02-01T00:00:00Z')"
                )
            )

    path = write(tmp_path, "\n".join([HEADER, *PLAIN_ROWS]) + "\n")

    fast, fast_rows, precise, precise_rows = fast_then_precise(pg_app, path, monkeypatch, existing)

    assert fast.method == "copy"
    assert fast_rows == precise_rows
    assert fast == ImportSummary(**{**precise.__dict__, "method": "copy"})
    assert fast.customers_created == 6  # 7 customers in the file, Ada among them
    ada = [row for row in fast_rows["customers"] if row[0] == 1]
    assert [row[1] for row in ada] == ["Ada"]


def test_staged_copy_into_orders_with_rows_stores_what_the_precise_path_stores(
    pg_app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def existing() -> None:  # with fixed creation times, to compare whole rows
        with pg_app.app_context(), db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO customers (id, name, created_at) VALUES "
                    "(1, 'Ada', '2022-01-01T00:00:00Z'), (7, 'Grace', '2022-02-01T00:00:00Z')"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO orders (customer_id, ordered_at, total_amount) "
                    "VALUES (1, '2023-01-01T00:00:00Z', 9.99)"
                )
            )

    # Existing order id 1 is skipped; customer 7 exists already.
    # Not the largest order id here: generated ids follow the largest one.
    plain = [row.replace("9223372036854775807", "19") for row in PLAIN_ROWS]
    rows = ["7,2024-01-01,1,1", *plain, "7,2024-05-01T10:00:00Z,2,", "8,2024-05-02,3,"]
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")

    fast, fast_rows, precise, precise_rows = fast_then_precise(pg_app, path, monkeypatch, existing)

    assert fast.method == "staged copy"
    assert fast_rows == precise_rows
    assert fast == ImportSummary(**{**precise.__dict__, "method": "staged copy"})
    assert (fast.orders_inserted, fast.orders_skipped, fast.customers_created) == (12, 1, 7)


def test_reimporting_a_plain_file_adds_nothing(pg_app: Flask, tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([HEADER, *PLAIN_ROWS]) + "\n")
    assert run(pg_app, path).method == "copy"
    before = snapshot(pg_app)

    again = run(pg_app, path)

    assert again.method == "staged copy"
    assert (again.orders_inserted, again.orders_skipped, again.customers_created) == (0, 10, 0)
    assert snapshot(pg_app) == before


def test_rows_without_ids_into_empty_orders_follow_the_explicit_ones(
    pg_app: Flask, tmp_path: Path
) -> None:
    rows = ["2,2024-01-01,10,", "2,2024-01-02,20,50", "3,2024-01-03,30,", "2,2024-01-04,40,"]
    summary = run(pg_app, write(tmp_path, "\n".join([HEADER, *rows]) + "\n"))

    assert summary.method == "staged copy"  # COPY straight into orders needs every id
    ids = [(row[0], row[3]) for row in snapshot(pg_app)["orders"]]
    assert ids == [
        (50, Decimal("20")),
        (51, Decimal("10")),
        (52, Decimal("30")),
        (53, Decimal("40")),
    ]


def test_a_file_without_order_ids_is_copied_in_file_order(pg_app: Flask, tmp_path: Path) -> None:
    rows = ["5,2024-01-03,3", "4,2024-01-01,1", "5,2024-01-02,2"]
    path = write(tmp_path, "customer_id,ordered_at,total_amount\n" + "\n".join(rows) + "\n")

    summary = run(pg_app, path)

    assert summary.method == "copy"
    orders = snapshot(pg_app)["orders"]
    assert [(o[0], o[1], o[3]) for o in orders] == [
        (1, 5, Decimal("3.00")),
        (2, 4, Decimal("1.00")),
        (3, 5, Decimal("2.00")),
    ]
    with pg_app.app_context(), db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (customer_id, ordered_at, total_amount) VALUES (4, now(), 1)"
            )
        )
        assert conn.execute(sa.text("SELECT MAX(id) FROM orders")).scalar() == 4


def test_copied_orders_need_no_vacuum(pg_app: Flask, tmp_path: Path) -> None:
    lines = [
        f"{n % 97 + 1},2024-01-01T00:00:{n % 60:02d}Z,{n % 500}.25,{n}" for n in range(1, 5001)
    ]
    assert run(pg_app, write(tmp_path, "\n".join([HEADER, *lines]) + "\n")).method == "copy"

    with pg_app.app_context(), db.engine.connect() as conn:
        pages, visible, tuples = conn.execute(
            sa.text(
                "SELECT relpages, relallvisible, reltuples FROM pg_class "
                "WHERE oid = 'orders'::regclass"
            )
        ).one()
    assert pages > 0 and visible == pages and tuples == 5000


# -- what the fast path cannot take -------------------------------------------


def test_a_duplicate_order_id_is_named_without_the_precise_path(
    pg_app: Flask, tmp_path: Path, precise_calls: list[int]
) -> None:
    rows = ["1,2024-01-01,1,7", "1,2024-01-02,2,8", "2,2024-01-03,3,9", "2,2024-01-04,4,7"]
    before = schema(pg_app)

    with pytest.raises(
        ImportFailed, match=r"^line 5, column order_id: 7 is already used on line 2$"
    ):
        run(pg_app, write(tmp_path, "\n".join([HEADER, *rows]) + "\n"))

    assert precise_calls == []
    assert snapshot(pg_app) == {"orders": [], "customers": []}
    assert schema(pg_app) == before


@pytest.mark.parametrize(
    "bad,message",
    [
        ("1,2026-02-30,5,2", "line 3, column ordered_at: '2026-02-30' is not an ISO 8601 date"),
        ("2147483648,2024-01-01,5,2", "line 3, column customer_id: '2147483648' is too large"),
        ("1,2024-01-01,5,9223372036854775808", "line 3, column order_id:"),
        ("1,2024-01-01,-5,2", "line 3, column total_amount: '-5' is negative"),
        ("1,2024-01-01,1.234,2", "line 3, column total_amount: '1.234' has more than 2"),
        ("1,2024-01-01T24:00:00,5,2", "line 3, column ordered_at: '2024-01-01T24:00:00'"),
    ],
)
@pytest.mark.parametrize("orders_present", [False, True], ids=["empty", "with orders"])
def test_a_bad_value_in_a_plain_file_gets_the_precise_message(
    pg_app: Flask, tmp_path: Path, bad: str, message: str, orders_present: bool
) -> None:
    if orders_present:
        add_orders(pg_app, [(1, dt.datetime(2023, 1, 1, tzinfo=dt.UTC), "9.99")])
    before, before_schema = snapshot(pg_app), schema(pg_app)
    # Enough good rows before the bad one for COPY to have written some.
    good = [f"{n % 7 + 1},2024-01-01T10:00:00Z,1.50,{n + 100}" for n in range(3000)]
    text = "\n".join([HEADER, "1,2024-01-01,5,1", bad, *good]) + "\n"

    with pytest.raises(ImportFailed) as failed:
        run(pg_app, write(tmp_path, text))

    assert str(failed.value).startswith(message), failed.value
    assert snapshot(pg_app) == before
    assert schema(pg_app) == before_schema


def test_progress_adds_up_to_the_file_size_on_every_path(pg_app: Flask, tmp_path: Path) -> None:
    rows = [f"{n % 50 + 1},2024-01-01T00:00:00Z,1.00,{n}" for n in range(1, 30_000)]
    plain = write(tmp_path, "\n".join([HEADER, *rows]) + "\n", "plain.csv")
    # Plain up to its last line, which only the precise validator accepts.
    late = write(tmp_path, "\n".join([HEADER, *rows, " 1 ,2024-01-01,1,99999"]) + "\n", "late.csv")

    for path, method in ((plain, "copy"), (late, "validated")):
        empty_tables(pg_app)
        reported: list[int] = []
        assert run(pg_app, path, reported).method == method
        assert sum(reported) == path.stat().st_size


@pytest.mark.parametrize("orders_present", [False, True], ids=["copy", "staged copy"])
def test_ctrl_c_during_a_copy_is_one_line_and_writes_nothing(
    pg_app: Flask, tmp_path: Path, orders_present: bool
) -> None:
    """A real `flask import-orders` gets SIGINT while its COPY runs. psycopg2
    turned the KeyboardInterrupt raised in the file's read() into its own
    QueryCanceled, and the command ended in a traceback; now it ends as any
    Ctrl-C does ("Aborted!"), and the rollback leaves nothing behind."""
    if orders_present:
        add_orders(pg_app, [(99, dt.datetime(2024, 1, 1, tzinfo=dt.UTC), Decimal("1.00"))])
    path = tmp_path / "orders.csv"
    with path.open("w") as out:
        out.write(HEADER + "\n")
        out.writelines(
            f"{c % 5000 + 1},2024-01-05T09:30:00Z,19.99,{c + 100}\n" for c in range(2_000_000)
        )
    url = pg_app.config["SQLALCHEMY_DATABASE_URI"]
    env = {**os.environ, "DATABASE_URL": url, "FLASK_APP": "wsgi"}
    command = [str(Path(sys.executable).parent / "flask"), "import-orders", str(path)]
    # SIGINT as an interactive shell leaves it (a background job may inherit it ignored).
    with subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as proc:
        engine = sa.create_engine(url)
        try:
            deadline = time.monotonic() + 60
            while not _copying(engine) and proc.poll() is None:
                assert time.monotonic() < deadline, "the import never reached its COPY"
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
            with engine.connect() as conn:
                orders = conn.execute(sa.text("SELECT COUNT(*) FROM orders")).scalar()
                keys = conn.execute(
                    sa.text(
                        "SELECT COUNT(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass"
                    )
                ).scalar()
        finally:
            engine.dispose()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "Aborted!"
    assert orders == (1 if orders_present else 0)
    assert keys == 3  # primary key, check, foreign key: back after the rollback


def _copying(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = "
                    "current_database() AND query LIKE 'COPY %' AND state = 'active')"
                )
            ).scalar()
        )
