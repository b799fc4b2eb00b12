"""Run statistics (SPEC §4), computed once when a run finishes and stored
with it, so reading them costs the same at any size.

Only grouped aggregates come back from the database: a few dozen rows.
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
from .segments import Rule, segment_names

DIMENSIONS = {
    "recency": (RFMScore.recency_score, RFMScore.recency_days),
    "frequency": (RFMScore.frequency_score, RFMScore.frequency),
    "monetary": (RFMScore.monetary_score, RFMScore.monetary),
}
_monetary_cents = cast(func.round(RFMScore.monetary * 100), BigInteger)


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _mean(total: int, count: int) -> float | None:
    return round(total / count, 2) if count else None


def _segments(conn: Connection, run_id: int, rules: Sequence[Rule]) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            RFMScore.segment,
            func.count(),
            func.sum(RFMScore.frequency),
            func.sum(_monetary_cents),
            func.sum(RFMScore.recency_days),
        )
        .where(RFMScore.run_id == run_id)
        .group_by(RFMScore.segment)
    ).all()
    by_name = {row[0]: tuple(int(v) for v in row[1:]) for row in rows}
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


def _dimension(conn: Connection, run_id: int, name: str) -> dict[str, Any]:
    score_col, raw_col = DIMENSIONS[name]
    rows = conn.execute(
        select(score_col, func.count(), func.min(raw_col), func.max(raw_col))
        .where(RFMScore.run_id == run_id)
        .group_by(score_col)
    ).all()
    found = {int(row[0]): row[1:] for row in rows}
    render = (lambda v: money(cents(v))) if name == "monetary" else int
    scores = []
    for score in range(1, 6):
        count, low, high = found.get(score, (0, None, None))
        scores.append(
            {
                "score": score,
                "customers": int(count),
                "min": None if low is None else render(low),
                "max": None if high is None else render(high),
            }
        )
    # The id tie-break can put equal raw values into two neighbouring scores.
    bounds = [
        (cents(lo), cents(hi)) if name == "monetary" else (lo, hi)
        for _, lo, hi in (found[s] for s in sorted(found))
    ]
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
    segments = _segments(conn, run_id, rules)
    scored = sum(s["customers"] for s in segments)
    customers = int(conn.execute(select(func.count()).select_from(Customer)).scalar_one())
    return {
        "as_of": as_of.isoformat(),
        "calculated_at": calculated_at.isoformat().replace("+00:00", "Z"),
        "customers_scored": scored,
        "customers_without_orders": max(customers - scored, 0),
        "orders": sum(s["orders"] for s in segments),
        "revenue": money(sum(cents(s["revenue"]) for s in segments)),
        "segments": segments,
        "dimensions": {name: _dimension(conn, run_id, name) for name in DIMENSIONS},
    }
