"""Evidence for explaining a missed target, written to bench/plans/:

- ``floor_<size>.txt``: EXPLAIN (ANALYZE, BUFFERS) of the bare statement;
- ``write_<size>.txt``: the same for the statement that writes the scores in the
  project's write path (``CREATE TABLE rfm_scores_rN AS ...``)
  really runs (captured from it in a transaction that is rolled back);
- ``timeline_<size>.txt``: every SQL statement of one real calculation, timed;
- ``list_first_<size>.txt``, ``list_last_<size>.txt``: every statement that
  serving the list's first / last page runs, replayed under EXPLAIN ANALYZE;
- ``profile_detail_<size>.txt``: where Python spends the time of
  ``GET /api/rfm/{id}/`` (cProfile over in-process requests);
- ``detail_<size>.txt``: the one statement behind ``GET /api/rfm/{id}/``,
  its round trip on a server thread's own connection timed against
  ``SELECT 1``'s, and its plan under EXPLAIN;
- ``import_<size>.txt``: every SQL statement of one ``flask import-orders``
  (``ingest.import_orders`` in-process), timed.
"""

from __future__ import annotations

import contextlib
import cProfile
import datetime as dt
import io
import math
import pstats
import re
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from flask import Flask
from sqlalchemy import Engine, event

from rfm_service import calculation, ingest, pg_import, runs
from rfm_service.api import queries
from rfm_service.api.scores import READS
from rfm_service.extensions import db

from .common import query
from .datasets import AS_OF
from .recalc import scored_select

EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, SETTINGS) "
HEADER = "-- written by `python -m bench.run`; EXPLAIN (ANALYZE, BUFFERS, SETTINGS)\n"


def _write_scores():
    """The function the run service writes a run's scores with."""
    try:
        from rfm_service import score_storage
    except ImportError:  # before per-run partitions
        return calculation.insert_scores
    return score_storage.write_scores


def _plan_text(statement: str, rows) -> str:
    quoted = "\n".join(f"-- {line}" for line in statement.strip().splitlines())
    return quoted + "\n\n" + "\n".join(row[0] for row in rows) + "\n"


def floor_plan(app: Flask, path: Path) -> Path:
    with app.app_context(), db.engine.connect() as conn:
        try:
            sql, params = scored_select(app, conn)
            stmt = calculation._stmt(f"{EXPLAIN}CREATE TEMP TABLE bench_floor AS {sql}")
            rows = conn.execute(stmt, params).all()
        finally:
            conn.rollback()
    path.write_text(HEADER + _plan_text(f"CREATE TEMP TABLE bench_floor AS {sql}", rows))
    return path


# The parent, a run's partition rfm_scores_rN, or (since the partition is made
# from the statement) CREATE TABLE rfm_scores_rN AS.
_WRITE = ("INSERT INTO RFM_SCORES", "CREATE TABLE RFM_SCORES_R")


def write_plan(app: Flask, path: Path) -> Path:
    """EXPLAIN ANALYZE of the statement that writes the scores (the
    ``CREATE TABLE ... AS`` of the run's partition): the statement is
    rewritten on its way to the driver, so whatever the project does around
    it (partitions, DDL) happens as usual; then everything is rolled back."""
    captured: list[str] = []
    with app.app_context(), db.engine.connect() as conn:

        def before(_conn, _cursor, statement, parameters, _context, _many):
            if statement.lstrip().upper().startswith(_WRITE):
                return EXPLAIN + statement, parameters
            return statement, parameters

        def after(_conn, cursor, statement, _parameters, _context, _many):
            if statement.startswith(EXPLAIN):
                captured.append(_plan_text(statement[len(EXPLAIN) :], cursor.fetchall()))

        event.listen(conn, "before_cursor_execute", before, retval=True)
        event.listen(conn, "after_cursor_execute", after)
        try:
            with conn.begin() as tx:
                settings = runs.RunSettings.from_app(app)
                settings.tune(conn)
                # Run id 0 never exists; everything is rolled back.
                write = _write_scores()
                write(
                    conn, 0, settings.rules, dt.date.fromisoformat(AS_OF), dt.datetime.now(dt.UTC)
                )
                tx.rollback()
        finally:
            event.remove(conn, "before_cursor_execute", before)
            event.remove(conn, "after_cursor_execute", after)
    path.write_text(HEADER + "\n".join(captured))
    return path


Timed = list[tuple[float, float, str]]  # (began, ended, statement), perf_counter seconds


@contextlib.contextmanager
def _timed_statements(engine: Engine) -> Iterator[Timed]:
    """Every statement ``engine`` runs meanwhile, timed."""
    timed: Timed = []

    def before(conn, _cursor, _statement, _parameters, _context, _many):
        conn.info["bench_started"] = time.perf_counter()

    def after(conn, _cursor, statement, _parameters, _context, _many):
        now = time.perf_counter()
        timed.append((conn.info.pop("bench_started", now), now, statement))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield timed
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def _write_timeline(
    path: Path, heading: list[str], timed: Timed, started: float, total: float
) -> dict:
    timed = sorted(timed)
    in_sql = sum(end - begin for begin, end, _ in timed)
    lines = [
        *(f"-- {line}" for line in heading),
        f"-- total {total * 1000:,.1f} ms; in statements {in_sql * 1000:,.1f} ms; "
        f"the rest (commits, Python) {(total - in_sql) * 1000:,.1f} ms",
        "",
        f"{'start ms':>10} {'took ms':>10}  statement",
    ]
    for begin, end, statement in timed:
        flat = " ".join(statement.split())
        lines.append(f"{(begin - started) * 1000:10.1f} {(end - begin) * 1000:10.1f}  {flat[:150]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    slowest = sorted(timed, key=lambda t: t[0] - t[1])[:6]
    return {
        "path": str(path),
        "total_ms": total * 1000,
        "statements_ms": in_sql * 1000,
        "slowest": [((end - begin) * 1000, " ".join(s.split())[:110]) for begin, end, s in slowest],
    }


def timeline(app: Flask, path: Path) -> dict:
    """One calculation through the run service in this process (the code the
    CLI's task runs), every SQL statement timed; a real run, left current."""
    with app.app_context(), _timed_statements(db.engine) as timed:
        started = time.perf_counter()
        settings = runs.RunSettings.from_app(app)
        run = runs.calculate_now(db.engine, settings, "cli", dt.date.fromisoformat(AS_OF))
        total = time.perf_counter() - started
    heading = [
        "Every SQL statement of one calculation (runs.calculate_now, as the CLI's task),",
        f"run {run['id']} {run['status']}, {run['customers_scored']} customers; "
        "written by `python -m bench.run`",
    ]
    return _write_timeline(path, heading, timed, started, total)


@contextlib.contextmanager
def _timed_copies(timed: Timed) -> Iterator[None]:
    """Also time the import's COPY, which psycopg2 runs on SQLAlchemy's
    connection out of SQLAlchemy's sight (no cursor events): the real
    ``copy_csv`` runs, wrapped in a timer, until the block exits."""
    original: Callable[..., int] = pg_import.copy_csv

    def copy_csv(conn, table, columns, source, **options) -> int:
        began = time.perf_counter()
        try:
            return original(conn, table, columns, source, **options)
        finally:
            freeze = ", FREEZE" if options.get("freeze") else ""
            statement = (
                f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv{freeze}) "
                "-- the file streamed from Python, each block checked on the way"
            )
            timed.append((began, time.perf_counter(), statement))

    pg_import.copy_csv = copy_csv
    try:
        yield
    finally:
        pg_import.copy_csv = original


def import_timeline(app: Flask, csv_path: Path, path: Path) -> dict:
    """One ``flask import-orders`` of ``csv_path`` (the function the command
    runs, in this process, with the command's ``work_mem``) into the app's
    database, every SQL statement timed, the COPY included."""
    with app.app_context(), _timed_statements(db.engine) as timed, _timed_copies(timed):
        started = time.perf_counter()
        with csv_path.open("rb") as raw:
            summary = ingest.import_orders(db.engine, raw, work_mem=app.config.get("RFM_WORK_MEM"))
        total = time.perf_counter() - started
        db.engine.dispose()
    heading = [
        f"Every SQL statement of one import (ingest.import_orders, as `flask import-orders "
        f"{csv_path.name}` runs it), method {summary.method!r},",
        f"{summary.orders_inserted:,} orders and {summary.customers_created:,} customers "
        "written into an empty database; written by `python -m bench.run`",
    ]
    return _write_timeline(path, heading, timed, started, total)


def request_plans(app: Flask, url: str, path: Path) -> Path:
    """Serve ``url`` in-process, then replay each statement it ran under
    EXPLAIN ANALYZE (reads only, so replaying changes nothing)."""
    seen: list[tuple[str, object]] = []

    def after(_conn, _cursor, statement, parameters, _context, _many):
        seen.append((statement, parameters))

    with app.app_context():
        engine = db.engine
        event.listen(engine, "after_cursor_execute", after)
        try:
            started = time.perf_counter()
            response = app.test_client().get(url)
            took = time.perf_counter() - started
        finally:
            event.remove(engine, "after_cursor_execute", after)
        parts = [
            f"{HEADER}-- GET {url}: HTTP {response.status_code} in {took * 1000:,.1f} ms "
            f"in-process; {len(seen)} statement(s), each replayed below\n"
        ]
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            for statement, parameters in seen:
                if not statement.lstrip().upper().startswith("SELECT"):
                    continue
                cursor.execute(EXPLAIN + statement, parameters)
                parts.append(_plan_text(cursor.mogrify(statement, parameters).decode(), cursor))
            raw.rollback()
        finally:
            raw.close()
    path.write_text("\n".join(parts))
    return path


def profile_requests(app: Flask, urls: list[str], path: Path, top: int = 30) -> Path:
    """cProfile over in-process requests (no server, no network)."""
    client = app.test_client()
    with app.app_context():
        for url in urls[:20]:  # warm: connections, caches
            client.get(url)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for url in urls:
            client.get(url)
        profiler.disable()
        took = time.perf_counter() - started
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    per = took / len(urls) * 1000
    path.write_text(
        f"# cProfile of {len(urls)} in-process requests like {urls[0]} "
        f"({per:.2f} ms each under the profiler); written by `python -m bench.run`\n"
        + re.sub(r"[ \t]+\n", "\n", out.getvalue())
    )
    return path


def _median_us(call: Callable[[], object], times: int) -> float:
    took = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        took.append(time.perf_counter() - began)
    return statistics.median(took) * 1e6


def detail_plan(app: Flask, ids: list[int], path: Path) -> Path:
    """The statement behind ``GET /api/rfm/{id}/`` as the server runs it.
    Round trips on this thread's own connection (``read_connections``, as a
    server thread reads), against ``SELECT 1``'s on it: what the database
    adds to a request. Then the plan: on a connection of its own, prepared
    the same way and executed for every id (after five executions PostgreSQL
    may settle on a generic plan), EXPLAIN of one more EXECUTE."""
    own = app.extensions[READS]
    if own is None:
        raise RuntimeError("GET /api/rfm/{id}/ reads on its thread's connection only on psycopg2")
    calls = iter([(i,) for i in ids])
    own.fetch_one(queries.EXECUTE_CUSTOMER_SCORE, (ids[0],))  # opened and prepared
    execute_us = _median_us(
        lambda: own.fetch_one(queries.EXECUTE_CUSTOMER_SCORE, next(calls)), len(ids)
    )
    select_us = _median_us(lambda: own.fetch_one("SELECT 1"), len(ids))
    with app.app_context():
        raw = db.engine.raw_connection()
        raw.detach()  # closed below, never back in the pool
        try:
            raw.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            with raw.cursor() as cursor:
                cursor.execute(queries.PREPARE_CUSTOMER_SCORE)
                for i in ids:
                    cursor.execute(queries.EXECUTE_CUSTOMER_SCORE, (i,))
                    cursor.fetchall()
                cursor.execute(EXPLAIN + queries.EXECUTE_CUSTOMER_SCORE, (ids[0],))
                plan = _plan_text(queries.PREPARE_CUSTOMER_SCORE, cursor.fetchall())
        finally:
            raw.close()
    path.write_text(
        f"{HEADER}-- GET /api/rfm/{{id}}/ runs one statement, prepared once on each server "
        "thread's own connection and executed by id;\n"
        f"-- from Python on that connection, median round trip over {len(ids)} ids: "
        f"EXECUTE {execute_us:,.0f} µs, SELECT 1 {select_us:,.0f} µs\n"
        f"-- below: EXECUTE {queries.PREPARED_NAME}({ids[0]}) after an execution for each id\n"
        + plan
    )
    return path


def clear(directory: Path) -> None:
    """Empty the evidence folder: it holds the evidence of the last run only."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.txt"):
        stale.unlink()


def capture(app: Flask, database: str, label: str, directory: Path) -> dict:
    files = {
        "floor": floor_plan(app, directory / f"floor_{label}.txt"),
        "write": write_plan(app, directory / f"write_{label}.txt"),
    }
    found = {"size": label, "timeline": timeline(app, directory / f"timeline_{label}.txt")}
    (count,) = query(database, "SELECT customers_scored FROM rfm_runs WHERE is_current")[0]
    last = max(1, math.ceil(count / 50))
    files["list_first"] = request_plans(app, "/api/rfm/", directory / f"list_first_{label}.txt")
    files["list_last"] = request_plans(
        app, f"/api/rfm/?page={last}", directory / f"list_last_{label}.txt"
    )
    ids = [
        row[0]
        for row in query(
            database,
            "SELECT s.customer_id FROM rfm_scores s JOIN rfm_runs r "
            "ON r.id = s.run_id AND r.is_current ORDER BY md5(s.customer_id::text) LIMIT 500",
        )
    ]
    files["profile_detail"] = profile_requests(
        app, [f"/api/rfm/{i}/" for i in ids], directory / f"profile_detail_{label}.txt"
    )
    files["detail"] = detail_plan(app, ids, directory / f"detail_{label}.txt")
    found["files"] = {k: str(v) for k, v in files.items()}
    found["floor_workers"] = _workers(files["floor"])
    found["write_workers"] = _workers(files["write"])
    return found


def _workers(path: Path) -> int:
    return sum(int(n) for n in re.findall(r"Workers Launched: (\d+)", path.read_text()))
