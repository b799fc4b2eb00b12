"""What a correct answer is, and the checks that find wrong ones.

The soak alternates two ``as_of`` dates over unchanging data, so each date
has one true result. ``Truth`` holds it, read from the database after the
first run of each date: every customer's row, the counts and the stored
statistics. ``Oracle`` knows which run each ``calculated_at`` belongs to
(from ``rfm_runs``, refreshed when an unknown one turns up) and checks an
answer against its run's truth.

A wrong answer is one that does not belong to one complete run: rows of a
page from different runs, a count that is not its run's, a row or a
statistic that differs from its run's, totals that do not add up.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

ROW_FIELDS = (
    "recency_days",
    "frequency",
    "monetary",
    "recency_score",
    "frequency_score",
    "monetary_score",
    "segment",
)
# Keys of a statistics answer that differ run by run even on the same date.
RUN_KEYS = ("run_id", "calculated_at")


def cents(value: str | Decimal) -> int:
    return int(Decimal(str(value)) * 100)


def timestamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Truth:
    """One date's true result."""

    as_of: str
    rows: dict[int, tuple[Any, ...]]  # customer_id -> ROW_FIELDS values, as the API renders them
    ids: list[int]  # customer ids in order
    segment_ids: dict[str, list[int]]
    statistics: dict[str, Any]  # without RUN_KEYS

    @property
    def count(self) -> int:
        return len(self.ids)


def load_truth(engine: sa.Engine, run_id: int) -> Truth:
    with engine.connect() as conn:
        as_of, stats = conn.execute(
            sa.text("SELECT as_of, statistics FROM rfm_runs WHERE id = :i"), {"i": run_id}
        ).one()
        result = conn.execute(
            sa.text(
                f"SELECT customer_id, {', '.join(ROW_FIELDS)} FROM rfm_scores "
                "WHERE run_id = :i ORDER BY customer_id"
            ),
            {"i": run_id},
        )
        rows: dict[int, tuple[Any, ...]] = {}
        segment_ids: dict[str, list[int]] = {}
        for customer_id, recency, frequency, monetary, r, f, m, segment in result:
            money = str(Decimal(monetary).quantize(Decimal("0.01")))
            rows[customer_id] = (recency, frequency, money, r, f, m, segment)
            segment_ids.setdefault(segment, []).append(customer_id)
    statistics = {k: v for k, v in stats.items() if k not in RUN_KEYS}
    return Truth(as_of.isoformat(), rows, list(rows), segment_ids, statistics)


@dataclass(frozen=True)
class RunInfo:
    id: int
    as_of: str
    customers_scored: int
    calculated_at: dt.datetime


class Oracle:
    """Checks answers; every method returns a reason when one is wrong, else None."""

    def __init__(self, engine: sa.Engine, truths: dict[str, Truth], customers: int) -> None:
        self.engine = engine
        self.truths = truths
        self.customers = customers
        self._lock = threading.Lock()
        self._by_time: dict[dt.datetime, RunInfo] = {}
        self._by_id: dict[int, RunInfo] = {}
        self.runs_seen: set[int] = set()

    def _refresh(self) -> None:
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT id, as_of, customers_scored, statistics->>'calculated_at' "
                    "FROM rfm_runs WHERE status = 'succeeded'"
                )
            ).all()
        for run_id, as_of, scored, at in found:
            info = RunInfo(run_id, as_of.isoformat(), scored, timestamp(at))
            self._by_time[info.calculated_at] = info
            self._by_id[run_id] = info

    def run_at(self, calculated_at: str) -> RunInfo | None:
        """The succeeded run whose rows carry ``calculated_at``."""
        at = timestamp(calculated_at)
        with self._lock:
            if at not in self._by_time:
                self._refresh()  # a run that committed since we last looked
            info = self._by_time.get(at)
            if info:
                self.runs_seen.add(info.id)
            return info

    def run_by_id(self, run_id: int) -> RunInfo | None:
        with self._lock:
            if run_id not in self._by_id:
                self._refresh()
            return self._by_id.get(run_id)

    # -- the checks ----------------------------------------------------------------

    def _rows(self, rows: list[dict[str, Any]], truth: Truth) -> str | None:
        for row in rows:
            expected = truth.rows.get(row["customer_id"])
            got = tuple(row[f] for f in ROW_FIELDS)
            if expected != got:
                return (
                    f"customer {row['customer_id']}: {got} is not {expected} (as_of {truth.as_of})"
                )
            if row["rfm_score"] != f"{got[3]}{got[4]}{got[5]}":
                return f"customer {row['customer_id']}: rfm_score {row['rfm_score']!r}"
        return None

    def page(
        self, body: dict[str, Any], page: int, size: int, segment: str | None = None
    ) -> str | None:
        rows = body["results"]
        if not rows:
            return f"page {page} is empty (count {body['count']})"
        stamps = {row["calculated_at"] for row in rows}
        if len(stamps) != 1:
            return f"rows from {len(stamps)} calculations on one page"
        run = self.run_at(stamps.pop())
        if run is None:
            return "rows with a calculated_at of no succeeded run"
        truth = self.truths[run.as_of]
        ids = truth.ids if segment is None else truth.segment_ids.get(segment, [])
        if body["count"] != len(ids):
            return f"count {body['count']}, but run {run.id} has {len(ids)} such rows"
        if segment is None and body["count"] != run.customers_scored:
            return f"count {body['count']} != customers_scored {run.customers_scored}"
        expected_ids = ids[(page - 1) * size : page * size]
        if [row["customer_id"] for row in rows] != expected_ids:
            return f"page {page} holds other customers than run {run.id}'s page"
        if segment is not None and any(row["segment"] != segment for row in rows):
            return f"a row of another segment than {segment}"
        return self._rows(rows, truth)

    def customer(self, body: dict[str, Any]) -> str | None:
        run = self.run_at(body["calculated_at"])
        if run is None:
            return "a calculated_at of no succeeded run"
        return self._rows([body], self.truths[run.as_of])

    def statistics(self, body: dict[str, Any]) -> str | None:
        run = self.run_by_id(body["run_id"])
        if run is None:
            return f"statistics of run {body['run_id']}, which has not succeeded"
        self.runs_seen.add(run.id)
        if timestamp(body["calculated_at"]) != run.calculated_at:
            return "calculated_at is not its run's"
        segments = body["segments"]
        scored = body["customers_scored"]
        if scored != run.customers_scored:
            return f"customers_scored {scored} != run's {run.customers_scored}"
        if sum(s["customers"] for s in segments) != scored:
            return "segment customers do not add up to customers_scored"
        if sum(s["orders"] for s in segments) != body["orders"]:
            return "segment orders do not add up"
        if sum(cents(s["revenue"]) for s in segments) != cents(body["revenue"]):
            return "segment revenue does not add up"
        for name, dimension in body["dimensions"].items():
            if sum(s["customers"] for s in dimension["scores"]) != scored:
                return f"{name} score counts do not add up"
        if scored + body["customers_without_orders"] != self.customers:
            return "scored + without orders != customers"
        rest = {k: v for k, v in body.items() if k not in RUN_KEYS}
        if rest != self.truths[run.as_of].statistics:
            return f"statistics differ from as_of {run.as_of}'s"
        return None
