"""CSV export: ``GET /api/rfm/export.csv`` and ``flask export-rfm``, on SQLite
and PostgreSQL; streaming checked on PostgreSQL's server-side cursor."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import stat
import threading
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import export
from rfm_service.extensions import db

from .conftest import add_orders
from .reference import reference_scores
from .test_api import all_results, assert_error, calculate, get_json
from .test_insights import AS_OF, EARLY, order_book

HEADER = [
    "customer_id",
    "recency_days",
    "frequency",
    "monetary",
    "recency_score",
    "frequency_score",
    "monetary_score",
    "rfm_score",
    "segment",
    "calculated_at",
]


def scored(app: Flask, n: int = 40) -> list[Any]:
    orders = order_book(n)
    add_orders(app, orders)
    calculate(app, EARLY)  # an older run whose rows must not leak into the export
    assert calculate(app, AS_OF)["status"] == "succeeded"
    return orders


def parse(text: str) -> list[dict[str, str]]:
    assert text.startswith(",".join(HEADER) + "\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert all(list(row) == HEADER for row in rows)
    return rows


def test_export_is_the_current_scores_as_csv(app: Flask) -> None:
    orders = scored(app)
    client = app.test_client()
    response = client.get("/api/rfm/export.csv")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    assert response.is_streamed
    run_id = get_json(client, "/api/rfm/statistics/")["run_id"]
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="rfm-scores-{AS_OF.isoformat()}-run-{run_id}.csv"'
    )
    rows = parse(response.get_data(as_text=True))
    # Independent: the reference computation of SPEC §2-3 from the orders.
    expected = reference_scores(orders, AS_OF)
    assert [
        (
            int(r["customer_id"]),
            int(r["recency_days"]),
            int(r["frequency"]),
            Decimal(r["monetary"]),
            int(r["recency_score"]),
            int(r["frequency_score"]),
            int(r["monetary_score"]),
            r["segment"],
        )
        for r in rows
    ] == [tuple(row) for row in expected]
    assert all(len(r["monetary"].split(".")[1]) == 2 for r in rows)
    # And exactly the API's score objects, field by field, as strings.
    api = all_results(client, "/api/rfm/?page_size=1000")
    assert rows == [{k: str(v) for k, v in obj.items()} for obj in api]


def test_export_filters_by_segment(app: Flask) -> None:
    orders = scored(app)
    client = app.test_client()
    segments = [row[7] for row in reference_scores(orders, AS_OF)]
    name = max(set(segments), key=segments.count)
    slug = name.lower().replace(" ", "-")
    response = client.get(f"/api/rfm/export.csv?segment={slug}")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].endswith(f'-{slug}.csv"')
    rows = parse(response.get_data(as_text=True))
    assert len(rows) == segments.count(name) and {r["segment"] for r in rows} == {name}
    # A valid segment nobody is in: just the header.
    from rfm_service.segments import DEFAULT_RULES

    empty = next(rule.name for rule in DEFAULT_RULES if rule.name not in segments)
    assert parse(client.get(f"/api/rfm/export.csv?segment={empty}").get_data(as_text=True)) == []


def test_export_bad_input_is_4xx_detail(app: Flask) -> None:
    client = app.test_client()
    assert_error(client.get("/api/rfm/export.csv"), 404, "no calculation has succeeded yet")
    scored(app, 5)
    assert_error(client.get("/api/rfm/export.csv?segment=vip"), 400, "segment", "vip", "Champions")
    assert_error(client.get("/api/rfm/export.csv?segment="), 400, "segment")
    assert_error(client.post("/api/rfm/export.csv"), 405)


def test_export_streams_in_chunks(sqlite_app: Flask) -> None:
    scored(sqlite_app, 23)
    with sqlite_app.app_context():
        engine = db.engine
        run_id = db.session.execute(sa.text("SELECT id FROM rfm_runs WHERE is_current")).scalar()
    chunks = list(export.stream_csv(engine, run_id, None, chunk_rows=5))
    assert [c.count("\r\n") for c in chunks] == [1, 5, 5, 5, 5, 3]  # header, then 23 rows


def test_export_reads_a_server_side_cursor_in_constant_memory(pg_app: Flask) -> None:
    """4,000 customers: while the export is paused the server holds a named
    cursor, and Python's peak stays far below what holding the rows takes."""
    at = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    orders = [
        (c, at - dt.timedelta(days=c % 300), f"{c % 997}.{c % 100:02d}") for c in range(1, 4001)
    ]
    add_orders(pg_app, orders)
    run = calculate(pg_app, AS_OF)
    with pg_app.app_context():
        engine = db.engine
    stream = export.stream_csv(engine, run["id"], None, chunk_rows=200)
    try:  # a stream left open would hold its transaction (and block the next test)
        assert next(stream).startswith("customer_id,")
        assert next(stream).count("\r\n") == 200
        with engine.connect() as other:
            fetching = other.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'idle in transaction' AND query LIKE 'FETCH FORWARD %'"
                )
            ).scalar_one()
        assert fetching == 1
    finally:
        stream.close()  # as an abandoned download does: its connection is released

    def peak(chunk_rows: int) -> int:
        for _ in export.stream_csv(engine, run["id"], None, chunk_rows):
            pass  # warm SQLAlchemy's caches, which would count as peak otherwise
        tracemalloc.start()
        try:
            for _ in export.stream_csv(engine, run["id"], None, chunk_rows):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # Memory follows the chunk, not the table: 200-row chunks of 4,000 rows
    # peak at a fraction of what one 4,000-row chunk takes.
    streamed, whole = peak(200), peak(4000)
    assert streamed * 5 < whole, (streamed, whole)


# --- flask export-rfm -------------------------------------------------------------------


def test_cli_export_writes_the_same_bytes_as_the_api(app: Flask, tmp_path: Path) -> None:
    scored(app)
    target = tmp_path / "scores.csv"
    result = app.test_cli_runner().invoke(args=["export-rfm", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == app.test_client().get("/api/rfm/export.csv").get_data()
    rows = len(parse(target.read_bytes().decode("utf-8")))
    assert f"exported {rows} customers of run 2 (as of {AS_OF.isoformat()})" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]  # no temporary left

    result = app.test_cli_runner().invoke(args=["export-rfm", "-", "--segment", "OTHERS"])
    assert result.exit_code == 0, result.output
    body = app.test_client().get("/api/rfm/export.csv?segment=others").get_data()
    assert result.stdout_bytes == body  # (.stdout would turn CRLF into LF)


def test_cli_export_errors(app: Flask, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["export-rfm", str(tmp_path / "x.csv")])
    assert result.exit_code == 1 and "no calculation has succeeded yet" in result.output
    assert not (tmp_path / "x.csv").exists()
    scored(app, 5)
    result = runner.invoke(args=["export-rfm", str(tmp_path / "x.csv"), "--segment", "vip"])
    assert result.exit_code == 2 and "unknown segment 'vip'" in result.output
    result = runner.invoke(args=["export-rfm", str(tmp_path / "missing" / "x.csv")])
    assert result.exit_code == 1 and "cannot write" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "out").mkdir()
    result = runner.invoke(args=["export-rfm", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: cannot write {tmp_path / 'out'}: it is a directory"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary file left


def test_export_during_a_recalculation_stays_on_its_run(pg_app: Flask) -> None:
    """A download under way is neither blocked by a new run committing nor
    switched to it: it reads its own run's rows to the end."""
    orders = scored(pg_app, 30)
    with pg_app.app_context():
        engine = db.engine
    stream = export.stream_csv(engine, 2, None, chunk_rows=10)
    try:
        first = [next(stream), next(stream)]
        finished: list[dict[str, Any]] = []
        worker = threading.Thread(
            target=lambda: finished.append(calculate(pg_app, AS_OF + dt.timedelta(days=1)))
        )
        worker.start()
        worker.join(timeout=30)
        assert finished and finished[0]["status"] == "succeeded"
        rows = parse("".join(first) + "".join(stream))
    finally:
        stream.close()
    expected = reference_scores(orders, AS_OF)
    assert [(int(r["customer_id"]), int(r["recency_days"])) for r in rows] == [
        (row[0], row[1]) for row in expected
    ]


@pytest.mark.parametrize(
    "segment, name",
    [
        ("At Risk", "rfm-scores-2026-03-01-run-7-at-risk.csv"),
        # Each character outside letters and digits made a dash of its own.
        ("At Risk/VIP", "rfm-scores-2026-03-01-run-7-at-risk-vip.csv"),
        ("a&b %#? 名前", "rfm-scores-2026-03-01-run-7-a-b-名前.csv"),
        ("%%%", "rfm-scores-2026-03-01-run-7.csv"),
        (None, "rfm-scores-2026-03-01-run-7.csv"),
    ],
)
def test_download_names_carry_the_segment_slug(segment: str | None, name: str) -> None:
    assert export.filename(7, dt.date(2026, 3, 1), segment) == name


@pytest.mark.parametrize(
    "name, header",
    [
        (
            "rfm-scores-2026-03-01-run-7-at-risk.csv",
            'attachment; filename="rfm-scores-2026-03-01-run-7-at-risk.csv"',
        ),
        (
            "rfm-scores-2026-03-01-run-7-потерянные.csv",
            'attachment; filename="rfm-scores-2026-03-01-run-7-__________.csv"; '
            "filename*=UTF-8''rfm-scores-2026-03-01-run-7-"
            "%D0%BF%D0%BE%D1%82%D0%B5%D1%80%D1%8F%D0%BD%D0%BD%D1%8B%D0%B5.csv",
        ),
    ],
)
def test_download_names_beyond_ascii_fit_a_latin_1_header(name: str, header: str) -> None:
    """gunicorn refused a Cyrillic segment's file name in the header (a 500)."""
    assert export.content_disposition(name) == header
    header.encode("latin-1")  # what a WSGI server sends


def test_cli_export_writes_through_links_and_into_pipes(app: Flask, tmp_path: Path) -> None:
    """`flask export-rfm /dev/stdout` and a link to a file: the link and the
    device stay (os.replace put a private regular file in their place)."""
    scored(app, 5)
    body = app.test_client().get("/api/rfm/export.csv").get_data()
    runner = app.test_cli_runner()
    (tmp_path / "real").mkdir()
    link = tmp_path / "scores.csv"
    link.symlink_to(tmp_path / "real" / "scores.csv")
    result = runner.invoke(args=["export-rfm", str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and (tmp_path / "real" / "scores.csv").read_bytes() == body
    assert (tmp_path / "real" / "scores.csv").stat().st_mode & 0o777 == 0o666 & ~_umask()

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = runner.invoke(args=["export-rfm", str(fifo)])
    # The reader may still be reading what the command wrote: let it finish.
    # Opening the pipe for writing once it has would wait for a reader that
    # never comes (the test hung here in CI).
    reader.join(timeout=10)
    if reader.is_alive():  # nothing opened the pipe: unblock the reader
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert received == [body]
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
