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

from sqlalchemy import ColumnElement, Connection, func, select

from .. import score_storage
from ..models import SCORE_FIELDS, RFMRun, RFMScore

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


def score_count(conn: Connection, run: CurrentRun, segment: str | None) -> int:
    """From the counts stored with the run: no COUNT(*) over a million rows
    per request. Falls back to counting for a run without stored counts."""
    if segment is None and run.customers_scored is not None:
        return run.customers_scored
    if segment is not None and run.segment_counts is not None:
        return int(run.segment_counts.get(segment, 0))
    query = select(func.count()).select_from(scores).where(scores.c.run_id == run.id)
    if segment is not None:
        query = query.where(scores.c.segment == segment)
    return int(conn.execute(query).scalar_one())


def order_by(ordering: Ordering) -> list[ColumnElement[Any]]:
    clauses = [
        ORDERING_COLUMNS[name].desc() if desc else ORDERING_COLUMNS[name].asc()
        for name, desc in ordering
    ]
    if "customer_id" not in {name for name, _ in ordering}:
        clauses.append(scores.c.customer_id.asc())  # a stable order: pages never overlap
    return clauses


def score_rows(
    conn: Connection,
    run_id: int,
    *,
    segment: str | None,
    ordering: Ordering,
    offset: int,
    limit: int,
) -> list[dict[str, Any]]:
    query = select(*SCORE_COLUMNS).where(scores.c.run_id == run_id)
    if segment is not None:
        query = query.where(scores.c.segment == segment)
    if segment is None and all(o == ("customer_id", False) for o in ordering) and offset:
        # The default order: seek to the nearest page mark instead of skipping
        # up to a million rows (deep pages cost what the first one does).
        start, offset = score_storage.page_start(run_id, offset)
        query = query.where(scores.c.customer_id >= start)
    query = query.order_by(*order_by(ordering)).offset(offset).limit(limit)
    return [dict(row) for row in conn.execute(query).mappings()]


def customer_score(conn: Connection, customer_id: int) -> dict[str, Any] | None:
    """One statement: the current run is found inside it."""
    current = select(runs.c.id).where(runs.c.is_current.is_(True)).scalar_subquery()
    row = (
        conn.execute(
            select(*SCORE_COLUMNS).where(
                scores.c.run_id == current, scores.c.customer_id == customer_id
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


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
