"""Every read query the API makes, in one place.

Reads follow the *current* run (``rfm_runs.is_current``). A list request
reads that run's row first and then its scores by that run id, so the count,
the pages and the rows all come from one run even when a recalculation
commits in between (the previous run's rows outlive it: ``keep_runs >= 2``).
User input reaches SQL only as bound parameters; ``ordering`` is mapped
through a whitelist of columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, bindparam, func, select
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.exc import SQLAlchemyError

from .. import insights, score_storage
from ..extensions import autocommit
from ..models import SCORE_FIELDS, RFMRun, RFMScore
from ..read_connections import ThreadConnections

runs = RFMRun.__table__
scores = RFMScore.__table__

# The fields a client may order scores by, and the column each one means.
ORDERING_COLUMNS: dict[str, ColumnElement[Any]] = {
    name: scores.c[name] for name in SCORE_FIELDS if name not in ("rfm_score", "calculated_at")
}
Ordering = Sequence[tuple[str, bool]]  # (field, descending)

SCORE_COLUMNS = tuple(scores.c[name] for name in SCORE_FIELDS if name != "rfm_score")


@dataclass(frozen=True)
class CurrentRun:
    id: int
    customers_scored: int | None
    segment_counts: dict[str, int] | None


def current_run(conn: Connection) -> CurrentRun | None:
    row = conn.execute(
        select(runs.c.id, runs.c.customers_scored, runs.c.segment_counts).where(
            runs.c.is_current.is_(True)
        )
    ).first()
    return CurrentRun(row.id, row.customers_scored, row.segment_counts) if row else None


def kept_run(conn: Connection, run_id: int) -> CurrentRun:
    """Run ``run_id`` for paging through its scores: a succeeded run whose
    rows are kept, or ``insights.InsightError`` saying why not."""
    row = insights.kept_run_row(conn, run_id, "run", runs.c.segment_counts)
    return CurrentRun(row.id, row.customers_scored, row.segment_counts)


def score_count(conn: Connection, run: CurrentRun, segment: str | None) -> int:
    """From the counts stored with the run: no COUNT(*) over a million rows
    per request. Falls back to counting for a run without stored counts."""
    if segment is None and run.customers_scored is not None:
        return run.customers_scored
    if segment is not None and run.segment_counts is not None:
        return int(run.segment_counts.get(segment, 0))
    query = select(func.count()).select_from(scores).where(scores.c.run_id == run.id)
    if segment is not None:
        query = query.where(score_storage.segment_is(scores.c.segment, segment))
    return int(conn.execute(query).scalar_one())


def order_by(ordering: Ordering, reverse: bool = False) -> list[ColumnElement[Any]]:
    """The ORDER BY of ``ordering``, customer id last; ``reverse``: the
    opposite order, row for row."""
    clauses = [
        ORDERING_COLUMNS[name].desc() if desc != reverse else ORDERING_COLUMNS[name].asc()
        for name, desc in ordering
    ]
    if "customer_id" not in {name for name, _ in ordering}:
        # A stable order: pages never overlap.
        clauses.append(scores.c.customer_id.desc() if reverse else scores.c.customer_id.asc())
    return clauses


def score_rows(
    conn: Connection,
    run_id: int,
    *,
    segment: str | None,
    ordering: Ordering,
    offset: int,
    limit: int,
    total: int | None = None,
) -> list[dict[str, Any]]:
    """A page of the run's scores; ``total``, the rows the run (or segment)
    has, lets a page in the second half be read from the far end: the
    opposite order skips the rows after the page instead of those before it,
    so no page skips more than half (an index read backwards, or a top-N
    sort of at most half the rows)."""

    def by_marks(order: Ordering) -> bool:
        return segment is None and all(o == ("customer_id", False) for o in order)

    after = None if total is None else total - offset - limit  # rows after the page
    # Page marks serve every depth of ascending customer ids already.
    reverse = after is not None and after < offset and not by_marks(ordering)
    if reverse and total is not None and after is not None:
        offset, limit = max(after, 0), min(limit, total - offset)
    query = select(*SCORE_COLUMNS).where(scores.c.run_id == run_id)
    if segment is not None:
        query = query.where(score_storage.segment_is(scores.c.segment, segment))
    flipped = [(name, desc != reverse) for name, desc in ordering] or [("customer_id", reverse)]
    if offset and by_marks(flipped):
        # Ascending customer ids: seek to the nearest page mark instead of
        # skipping up to a million rows (deep pages cost what the first one does).
        start, offset = score_storage.page_start(run_id, offset)
        query = query.where(scores.c.customer_id >= start)
    query = query.order_by(*order_by(ordering, reverse)).offset(offset).limit(limit)
    rows = [dict(row) for row in conn.execute(query).mappings()]
    return rows[::-1] if reverse else rows


# --- one customer's score: the hot path of GET /api/rfm/{id}/ ----------------

# One statement, the current run found inside it; built once, so a request
# only looks up SQLAlchemy's compiled cache (building it cost as much again).
CUSTOMER_SCORE = select(*SCORE_COLUMNS).where(
    scores.c.run_id == select(runs.c.id).where(runs.c.is_current.is_(True)).scalar_subquery(),
    scores.c.customer_id == bindparam("customer_id"),
)
SCORE_NAMES = tuple(column.name for column in SCORE_COLUMNS)

# On psycopg2 it runs as a server-side prepared statement on the serving
# thread's own connection (read_connections says why): planning it over the
# partitioned rfm_scores cost the server twice what running it does, and
# SQLAlchemy's execution layer cost the worker about as much as the driver.
# The text is CUSTOMER_SCORE's, compiled with a $1 parameter.
PREPARED_NAME = "rfm_customer_score"
PREPARE_CUSTOMER_SCORE = (
    f"PREPARE {PREPARED_NAME} AS "
    f"{CUSTOMER_SCORE.compile(dialect=PGDialect(paramstyle='numeric_dollar'))}"
)
EXECUTE_CUSTOMER_SCORE = f"EXECUTE {PREPARED_NAME}(%s)"


def thread_connections(engine: Engine) -> ThreadConnections | None:
    """The per-thread connections ``customer_score`` reads on (psycopg2 only)."""
    if engine.dialect.driver != "psycopg2":
        return None
    return ThreadConnections(engine, PREPARE_CUSTOMER_SCORE)


def customer_score(
    engine: Engine, own: ThreadConnections | None, customer_id: int
) -> dict[str, Any] | None:
    if own is not None:
        try:
            row = own.fetch_one(EXECUTE_CUSTOMER_SCORE, (customer_id,))
        except (engine.dialect.loaded_dbapi.Error, SQLAlchemyError):
            # That connection is closed now (a restart, a plan a migration
            # made stale, no connection to be had). Asked again through the
            # pool, which answers or maps its error as for any query (503
            # when the database is down); the next request opens a new one.
            pass
        else:
            # Raw driver values: the same as CUSTOMER_SCORE's but for
            # calculated_at, aware in the session's time zone rather than UTC
            # (serialised as UTC).
            return dict(zip(SCORE_NAMES, row, strict=True)) if row else None
    with autocommit(engine) as conn:
        found = conn.execute(CUSTOMER_SCORE, {"customer_id": customer_id}).first()
    return found._asdict() if found else None


def current_statistics(conn: Connection) -> tuple[int, dict[str, Any] | None] | None:
    row = conn.execute(
        select(runs.c.id, runs.c.statistics).where(runs.c.is_current.is_(True))
    ).first()
    return (row.id, row.statistics) if row else None


RUN_COLUMNS = (
    runs.c.id,
    runs.c.status,
    runs.c.trigger,
    runs.c.as_of,
    runs.c.created_at,
    runs.c.started_at,
    runs.c.finished_at,
    runs.c.customers_scored,
    runs.c.segment_counts,
    runs.c.error,
    runs.c.is_current,
)


def run_by_id(conn: Connection, run_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(*RUN_COLUMNS).where(runs.c.id == run_id)).mappings().first()
    return dict(row) if row else None


def run_count(conn: Connection) -> int:
    # Run rows are few (one per calculation), so counting them is cheap.
    return int(conn.execute(select(func.count()).select_from(runs)).scalar_one())


def run_rows(conn: Connection, *, offset: int, limit: int) -> list[dict[str, Any]]:
    query = select(*RUN_COLUMNS).order_by(runs.c.id.desc()).offset(offset).limit(limit)
    return [dict(row) for row in conn.execute(query).mappings()]
