"""The recalculation three ways, on the same database:

- the project: ``flask calculate-rfm`` end to end, as a subprocess (app start,
  run bookkeeping, the partition's CREATE TABLE ... AS, keys and indexes,
  statistics, purge), with its peak RSS;
- the floor: the bare scoring SELECT materialised into a TEMP table with
  ``CREATE TEMP TABLE ... AS`` under ``tune_session`` (every column is
  computed and written, so nothing can be pruned), then rolled back;
- the pandas round trip (``bench.pandas_peer``), as a subprocess, with its peak RSS.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

from flask import Flask
from sqlalchemy import text

from rfm_service import calculation, create_app, runs
from rfm_service.extensions import db
from rfm_service.score_storage import PRIMARY_KEY_COLUMNS, SEGMENT_INDEX_KEYS
from rfm_service.segments import cell_map

from .common import DATA, Measured, query, run_flask, run_measured, service_env
from .datasets import AS_OF

PEER_TABLE = "bench_pandas_scores"
PEER_DDL = f"""
CREATE TABLE {PEER_TABLE} (
    run_id integer NOT NULL,
    customer_id integer NOT NULL,
    recency_days integer NOT NULL,
    frequency integer NOT NULL,
    monetary numeric(14, 2) NOT NULL,
    recency_score smallint NOT NULL CHECK (recency_score BETWEEN 1 AND 5),
    frequency_score smallint NOT NULL CHECK (frequency_score BETWEEN 1 AND 5),
    monetary_score smallint NOT NULL CHECK (monetary_score BETWEEN 1 AND 5),
    segment varchar(64) COLLATE "C" NOT NULL,
    calculated_at timestamptz NOT NULL,
    PRIMARY KEY ({PRIMARY_KEY_COLUMNS})
);
CREATE INDEX ON {PEER_TABLE} ({SEGMENT_INDEX_KEYS})
"""  # the keys and indexes of a run's partition of rfm_scores


def make_app(database: str) -> Flask:
    return create_app(env=service_env(database))


def project(database: str, timeout: float) -> dict:
    measured = run_flask(database, "calculate-rfm", "--as-of", AS_OF, timeout=timeout)
    ((run_id, status, scored, in_db),) = query(
        database,
        "SELECT id, status, customers_scored, "
        "EXTRACT(EPOCH FROM finished_at - started_at)::float FROM rfm_runs "
        "ORDER BY id DESC LIMIT 1",
    )
    if status != "succeeded":
        raise RuntimeError(f"run {run_id} {status}")
    return {
        "seconds": measured.seconds,
        "max_rss_kb": measured.max_rss_kb,
        "run_seconds": in_db,
        "customers_scored": scored,
    }


def scored_select(app: Flask, conn) -> tuple[str, dict]:
    settings = runs.RunSettings.from_app(app)
    settings.tune(conn)  # as a run's transaction is set
    return calculation.scored_select(
        conn.dialect.name, settings.rules, dt.date.fromisoformat(AS_OF)
    )


def floor(app: Flask) -> dict:
    with app.app_context(), db.engine.connect() as conn:
        try:
            sql, params = scored_select(app, conn)
            started = time.perf_counter()
            conn.execute(calculation._stmt(f"CREATE TEMP TABLE bench_floor AS {sql}"), params)
            seconds = time.perf_counter() - started
            rows = conn.execute(text("SELECT count(*) FROM bench_floor")).scalar_one()
        finally:
            conn.rollback()
    return {"seconds": seconds, "rows": rows}


def prepare_peer(app: Flask, database: str) -> Path:
    """The peer's output table (SPEC §1's score columns, with the keys and
    index the project gives its scores) and the rule table as its 125 cells,
    so the peer needs none of the project's code."""
    query(database, f"DROP TABLE IF EXISTS {PEER_TABLE}")
    query(database, PEER_DDL)
    cells = cell_map(app.extensions["rfm_rules"])
    path = DATA / f"cells_{database}.json"
    DATA.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({f"{r}{f}{m}": seg for (r, f, m), seg in cells.items()}))
    return path


def pandas(database: str, cells: Path, timeout: float) -> dict:
    measured: Measured = run_measured(
        [
            sys.executable, "-m", "bench.pandas_peer",
            "--database", database, "--as-of", AS_OF,
            "--cells", str(cells), "--table", PEER_TABLE,
        ],
        service_env(database),
        timeout,
        "bench.pandas_peer",
    )  # fmt: skip
    inside = json.loads(measured.stdout.strip().splitlines()[-1])
    return {"seconds": measured.seconds, "max_rss_kb": measured.max_rss_kb, **inside}


def peer_mismatches(database: str) -> int:
    """Rows where the pandas peer and the project's current run disagree."""
    (count,) = query(
        database,
        f"""
        SELECT count(*) FROM {PEER_TABLE} p
        FULL JOIN (SELECT s.* FROM rfm_scores s JOIN rfm_runs r
                   ON r.id = s.run_id AND r.is_current) s USING (customer_id)
        WHERE p.customer_id IS NULL OR s.customer_id IS NULL
           OR (p.recency_days, p.frequency, p.monetary, p.recency_score,
               p.frequency_score, p.monetary_score, p.segment)
              IS DISTINCT FROM
              (s.recency_days, s.frequency, s.monetary, s.recency_score,
               s.frequency_score, s.monetary_score, s.segment)
        """,
    )[0]
    return int(count)
