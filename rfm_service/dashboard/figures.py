"""What the dashboard shows, gathered from ``queries`` and ``insights`` and
shaped for the template (bar widths, shade levels). No SQL here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from .. import insights
from ..api import queries
from ..segments import Rule, resolve_name, run_segment_names, slugify
from ..timeutil import utcnow

SHADES = 5  # CSS classes shade-0 .. shade-5
HISTORY_RUNS = 10
DIMENSION_LABELS = {
    "recency": ("Recency", "days since the last order"),
    "frequency": ("Frequency", "orders"),
    "monetary": ("Monetary", "total spent"),
}


def shade(value: int, largest: int) -> int:
    """0 for nothing, else 1..SHADES in proportion to ``largest``."""
    if value <= 0 or largest <= 0:
        return 0
    return max(1, math.ceil(SHADES * value / largest))


def _width(part: float, largest: float) -> float:
    return round(100 * part / largest, 2) if largest else 0.0


@dataclass
class ScoreTable:
    segment: str | None
    page: int
    pages: int
    count: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    run_id: int | None = None  # the run the rows are from; the pager's links name it
    note: str | None = None  # why the rows are not the current run's, or why a run was ignored
    segment_note: str | None = None  # why the segment asked for was ignored


def segment_bars(stats: dict[str, Any]) -> list[dict[str, Any]]:
    segments = stats["segments"]
    most = max((s["customers"] for s in segments), default=0)
    richest = max((Decimal(s["revenue"]) for s in segments), default=Decimal(0))
    return [
        {
            **s,
            "slug": slugify(s["segment"]) or s["segment"],
            "customers_width": _width(s["customers"], most),
            "revenue_width": _width(float(Decimal(s["revenue"])), float(richest)),
        }
        for s in segments
    ]


def grid_rows(cells: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The 25 cells as 5 rows (R 5..1), each with its shade level."""
    most = max((c["customers"] for c in cells), default=0)
    shaded = [{**c, "shade": shade(c["customers"], most)} for c in cells]
    return [shaded[i : i + 5] for i in range(0, 25, 5)]


def thresholds(stats: dict[str, Any]) -> list[dict[str, Any]]:
    # In R, F, M order: the stored JSON's key order is not kept (JSONB sorts keys).
    return [
        {
            "name": name,
            "title": title,
            "unit": unit,
            "scores": stats["dimensions"][name]["scores"],
            "ties_split": stats["dimensions"][name]["ties_split_across_scores"],
        }
        for name, (title, unit) in DIMENSION_LABELS.items()
    ]


def movement_view(
    conn: Connection, rules: Sequence[Rule]
) -> tuple[dict[str, Any] | None, str | None]:
    """The matrix between the previous and the current run, trimmed to the
    rows and columns that have customers; or ``None`` and the reason."""
    try:
        before, after = insights.resolve_pair(conn, None, None)
    except insights.NothingToCompare:
        # In the UI's words: the API's reason suggests a from_run parameter.
        return None, "There is no earlier succeeded run with kept scores to compare with"
    counts = insights.cached_transition_counts(conn, before, after)
    moved = insights.movement(counts, rules)
    names, matrix = moved["segments"], moved["matrix"]
    rows = [i for i, row in enumerate(matrix) if sum(row)]
    columns = [j for j in range(len(names)) if sum(row[j] for row in matrix)]
    largest = max((matrix[i][j] for i in rows for j in columns if names[i] != names[j]), default=0)
    table = [
        {
            "name": names[i],
            "cells": [
                {
                    "to": names[j],
                    "count": matrix[i][j],
                    "stay": i == j,
                    "shade": 0 if i == j else shade(matrix[i][j], largest),
                }
                for j in columns
            ],
        }
        for i in rows
    ]
    per_segment = [s for s in moved["per_segment"] if s["from_customers"] or s["to_customers"]]
    view = {
        "from_run": before,
        "to_run": after,
        "columns": [names[j] for j in columns],
        "rows": table,
        "per_segment": per_segment,
        "totals": moved["totals"],
    }
    return view, None


def _duration(run: dict[str, Any]) -> float | None:
    started, finished = run.get("started_at"), run.get("finished_at")
    if started is None:
        return None
    return ((finished or utcnow()) - started).total_seconds()


def history(conn: Connection) -> list[dict[str, Any]]:
    rows = queries.run_rows(conn, offset=0, limit=HISTORY_RUNS)
    return [{**run, "duration": _duration(run)} for run in rows]


def _run_segment(
    rules: Sequence[Rule], counts: dict[str, int] | None, wanted: str | None
) -> tuple[str | None, str | None]:
    """The segment ``wanted`` names among a run's own segments (those of the
    rule file it was calculated with, which its stored counts list), and the
    notice if it names none."""
    if not wanted:
        return None, None
    segment = resolve_name(run_segment_names(rules, counts), wanted)
    if segment is None:
        return None, f"Unknown segment {wanted!r}; showing all segments."
    return segment, None


def score_table(
    conn: Connection,
    run_id: int | None,
    segment: str | None,
    page: int,
    page_size: int,
    pinned: int | None = None,
    rules: Sequence[Rule] = (),
) -> ScoreTable:
    """A page of run ``run_id``'s scores, or of run ``pinned`` (the run the
    pager's links name), so a reader paging through stays on one run even if
    a recalculation finishes meanwhile. ``segment`` is the text asked for,
    resolved among that run's own segments: a run keeps the names of the rule
    file it was calculated with."""
    run, note = None, None
    if pinned is not None and pinned != run_id:
        try:
            run = queries.kept_run(conn, pinned)
            note = (
                f"The scores below are run {pinned}'s, the run this list was opened "
                f"with; run {run_id} is current now."
            )
        except insights.InsightError as exc:
            note = f"Ignored run {pinned} ({exc}); showing the current run's scores."
    if run is None:
        run = queries.current_run(conn)
        if run is None or run.id != run_id:
            segment, segment_note = _run_segment(rules, None, segment)
            return ScoreTable(segment, 1, 1, 0, note=note, segment_note=segment_note)
    segment, segment_note = _run_segment(rules, run.segment_counts, segment)
    count = queries.score_count(conn, run, segment)
    pages = max(1, -(-count // page_size))
    page = min(max(page, 1), pages)
    rows = queries.score_rows(
        conn,
        run.id,
        segment=segment,
        ordering=[("monetary", True)],
        offset=(page - 1) * page_size,
        limit=page_size,
        total=count,
    )
    return ScoreTable(segment, page, pages, count, rows, run.id, note, segment_note)


def collect(
    conn: Connection,
    rules: Sequence[Rule],
    *,
    segment: str | None,
    page: int,
    page_size: int,
    scores_run: int | None = None,
) -> dict[str, Any]:
    """Everything the page shows, read in one connection; the scores table
    of run ``scores_run`` if given (the pager's links name it), of segment
    ``segment`` (the text asked for: a name in any case, or a slug)."""
    runs = history(conn)
    current = queries.current_statistics(conn)
    figures: dict[str, Any] = {"runs": runs, "last_run": runs[0] if runs else None}
    if current is None or current[1] is None:
        figures.update(run_id=None, stats=None, movement=None, movement_note=None)
        segment, segment_note = _run_segment(rules, None, segment)
        figures["scores"] = ScoreTable(segment, 1, 1, 0, segment_note=segment_note)
        return figures
    run_id, stats = current
    run = insights.run_with_scores(conn, run_id)
    movement, note = movement_view(conn, rules)
    figures.update(
        run_id=run_id,
        stats=stats,
        segments=segment_bars(stats),
        grid=grid_rows(insights.cached_rf_grid(conn, run)),
        thresholds=thresholds(stats),
        movement=movement,
        movement_note=note,
        scores=score_table(conn, run_id, segment, page, page_size, scores_run, rules),
    )
    return figures
