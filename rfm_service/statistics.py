"""Run statistics (SPEC §4), computed once when a run finishes and stored
with it, so reading them costs the same at any size.

Only grouped aggregates come back from the database: at most 125 rows, one
per (R, F, M) cell, read in one pass.
Sums are exact integers on both dialects; means are derived from them in
Python, so PostgreSQL and SQLite give identical numbers.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Connection, cast, func, select

from .calculation import cents, money
from .models import Customer, RFMScore
from .segments import Rule, cell_map, segment_names

# dimension -> (its score's key in a cell, its raw value's key prefix)
DIMENSIONS = {
    "recency": ("r", "recency_days"),
    "frequency": ("f", "frequency"),
    "monetary": ("m", "monetary"),
}
_CELL_COLUMNS = (
    "r", "f", "m", "customers", "orders", "revenue", "recency_sum",
    "recency_days_min", "recency_days_max", "frequency_min", "frequency_max",
    "monetary_min", "monetary_max",
)  # fmt: skip
_MONEY = ("revenue", "monetary_min", "monetary_max")  # cents once read


def _monetary_aggregates(dialect: str) -> list[Any]:
    """Sum, min and max of the amounts, in integer cents once in Python.
    PostgreSQL's numeric is exact as it is (and cheaper unconverted); SQLite
    holds binary floats, so each amount is rounded to cents before summing."""
    if dialect == "postgresql":
        amount: Any = RFMScore.monetary
    else:
        amount = cast(func.round(RFMScore.monetary * 100), BigInteger)
    return [func.sum(amount), func.min(amount), func.max(amount)]


def _cells(conn: Connection, run_id: int, rules: Sequence[Rule]) -> list[dict[str, Any]]:
    """One pass over the run's rows, grouped by the three scores: at most 125
    groups, from which every figure below is derived. A cell's segment
    follows from the rule table, as it did in the calculation."""
    score = RFMScore
    revenue, monetary_min, monetary_max = _monetary_aggregates(conn.dialect.name)
    rows = conn.execute(
        select(
            score.recency_score,
            score.frequency_score,
            score.monetary_score,
            func.count(),
            func.sum(score.frequency),
            revenue,
            func.sum(score.recency_days),
            func.min(score.recency_days),
            func.max(score.recency_days),
            func.min(score.frequency),
            func.max(score.frequency),
            monetary_min,
            monetary_max,
        )
        .where(score.run_id == run_id)
        .group_by(score.recency_score, score.frequency_score, score.monetary_score)
    ).all()
    to_cents = cents if conn.dialect.name == "postgresql" else int
    segment_of = cell_map(rules)
    cells = []
    for row in rows:
        cell: dict[str, Any] = {
            key: (to_cents if key in _MONEY else int)(value)
            for key, value in zip(_CELL_COLUMNS, row, strict=True)
        }
        cell["segment"] = segment_of[(cell["r"], cell["f"], cell["m"])]
        cells.append(cell)
    return cells


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _mean(total: int, count: int) -> float | None:
    return round(total / count, 2) if count else None


def _segments(cells: list[dict[str, Any]], rules: Sequence[Rule]) -> list[dict[str, Any]]:
    by_name: dict[str, list[int]] = {}
    for cell in cells:
        totals = by_name.setdefault(cell["segment"], [0, 0, 0, 0])
        for i, key in enumerate(("customers", "orders", "revenue", "recency_sum")):
            totals[i] += cell[key]
    customers_total = sum(v[0] for v in by_name.values())
    revenue_total = sum(v[2] for v in by_name.values())
    result = []
    for name in segment_names(rules):
        n, orders, revenue, recency = by_name.get(name, (0, 0, 0, 0))
        result.append(
            {
                "segment": name,
                "customers": n,
                "customer_share": _share(n, customers_total),
                "orders": orders,
                "revenue": money(revenue),
                "revenue_share": _share(revenue, revenue_total),
                "average_order_value": money(round(revenue / orders)) if orders else None,
                "mean_recency_days": _mean(recency, n),
                "mean_frequency": _mean(orders, n),
                "mean_monetary": money(round(revenue / n)) if n else None,
            }
        )
    return result


def _dimension(cells: list[dict[str, Any]], name: str) -> dict[str, Any]:
    score_key, raw = DIMENSIONS[name]
    found: dict[int, tuple[int, int, int]] = {}
    for cell in cells:
        score = cell[score_key]
        count, low, high = found.get(score, (0, cell[f"{raw}_min"], cell[f"{raw}_max"]))
        found[score] = (
            count + cell["customers"],
            min(low, cell[f"{raw}_min"]),
            max(high, cell[f"{raw}_max"]),
        )
    render = money if name == "monetary" else int
    scores = []
    for score in range(1, 6):
        count, low, high = found.get(score, (0, None, None))
        scores.append(
            {
                "score": score,
                "customers": count,
                "min": None if low is None else render(low),
                "max": None if high is None else render(high),
            }
        )
    # The id tie-break can put equal raw values into two neighbouring scores.
    bounds = [found[s][1:] for s in sorted(found)]
    if name == "recency":  # scored by descending days: score k+1 holds fewer days
        split = any(a[0] == b[1] for a, b in itertools.pairwise(bounds))
    else:
        split = any(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    return {"scores": scores, "ties_split_across_scores": split}


def compute_statistics(
    conn: Connection,
    run_id: int,
    rules: Sequence[Rule],
    as_of: dt.date,
    calculated_at: dt.datetime,
) -> dict[str, Any]:
    cells = _cells(conn, run_id, rules)
    segments = _segments(cells, rules)
    scored = sum(s["customers"] for s in segments)
    customers = int(conn.execute(select(func.count()).select_from(Customer)).scalar_one())
    return {
        "as_of": as_of.isoformat(),
        "calculated_at": calculated_at.isoformat().replace("+00:00", "Z"),
        "customers_scored": scored,
        "customers_without_orders": max(customers - scored, 0),
        "orders": sum(s["orders"] for s in segments),
        "revenue": money(sum(cell["revenue"] for cell in cells)),
        "segments": segments,
        "dimensions": {name: _dimension(cells, name) for name in DIMENSIONS},
    }
