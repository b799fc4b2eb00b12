"""The engine against an independent computation, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfm_service import runs
from rfm_service.calculation import cents, scored_rows
from rfm_service.extensions import db
from rfm_service.models import RFMRun, RFMScore
from rfm_service.segments import DEFAULT_RULES
from tests.conftest import add_orders, empty_tables
from tests.reference import reference_scores

UTC = dt.UTC
AS_OF = dt.date(2026, 3, 1)


def normalised(rows: list[tuple]) -> list[tuple]:
    """Engine rows with monetary as exact cents (a float on SQLite)."""
    return [
        (int(c), int(rd), int(f), cents(m), int(r), int(fs), int(ms), seg)
        for c, rd, f, m, r, fs, ms, seg in rows
    ]


def expected(orders: list[tuple], as_of: dt.date) -> list[tuple]:
    return normalised(reference_scores(orders, as_of))


def engine_rows(app: Flask, as_of: dt.date) -> list[tuple]:
    with app.app_context(), db.engine.connect() as conn:
        return normalised(scored_rows(conn, DEFAULT_RULES, as_of))


def calculate(app: Flask, as_of: dt.date) -> runs.RunRecord:
    with app.app_context():
        return runs.calculate_now(db.engine, runs.RunSettings.from_app(app), "cli", as_of)


def stored_rows(app: Flask, run_id: int) -> list[tuple]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(
                RFMScore.customer_id,
                RFMScore.recency_days,
                RFMScore.frequency,
                RFMScore.monetary,
                RFMScore.recency_score,
                RFMScore.frequency_score,
                RFMScore.monetary_score,
                RFMScore.segment,
            )
            .where(RFMScore.run_id == run_id)
            .order_by(RFMScore.customer_id)
        ).all()
        return normalised([tuple(r) for r in rows])


def at(day: dt.date, hour: int = 12, minute: int = 0, tz: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz)


# Few distinct values so that ties are the rule, not the exception; amounts
# that a float sum gets wrong (0.10 + 0.20 != 0.30) and the largest allowed.
AMOUNTS = [Decimal(v) for v in ("0.00", "0.10", "0.20", "0.30", "5.00", "9999999999.99")]
TZS = [UTC, dt.timezone(dt.timedelta(hours=5)), dt.timezone(dt.timedelta(hours=-8))]
order_strategy = st.tuples(
    st.integers(1, 25),
    st.builds(
        lambda days, seconds, tz: (
            dt.datetime.combine(AS_OF, dt.time(), tzinfo=UTC)
            + dt.timedelta(days=days, seconds=seconds)
        ).astimezone(tz),
        st.integers(-6, 1),
        st.sampled_from([0, 1, 3600 * 12, 86399, 86400 - 1]),
        st.sampled_from(TZS),
    ),
    st.sampled_from(AMOUNTS),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(orders=st.lists(order_strategy, max_size=60))
def test_engine_rows_equal_independent_computation_with_heavy_ties(
    app: Flask, orders: list[tuple]
) -> None:
    empty_tables(app)
    add_orders(app, orders)
    assert engine_rows(app, AS_OF) == expected(orders, AS_OF)


@pytest.mark.parametrize("customers", [0, 1, 4, 5, 6])
def test_tiny_inputs_score_like_ntile(app: Flask, customers: int) -> None:
    orders = [
        (c, at(AS_OF - dt.timedelta(days=c)), Decimal(10 * (customers - c) + 1))
        for c in range(1, customers + 1)
    ]
    add_orders(app, orders)
    run = calculate(app, AS_OF)
    assert run["status"] == "succeeded"
    assert run["customers_scored"] == customers
    rows = stored_rows(app, run["id"])
    assert rows == expected(orders, AS_OF)
    # With n < 5 customers NTILE(5) gives buckets 1..n, one customer each.
    if customers and customers <= 5:
        assert sorted(r[6] for r in rows) == list(range(1, customers + 1))


def test_orders_after_as_of_are_ignored_and_recency_counts_whole_utc_days(app: Flask) -> None:
    end_of_day = dt.datetime.combine(AS_OF, dt.time(23, 59, 59, 999999), tzinfo=UTC)
    next_midnight = dt.datetime.combine(AS_OF + dt.timedelta(days=1), dt.time(), tzinfo=UTC)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    orders = [
        (1, end_of_day, Decimal("10.00")),  # last instant of as_of: counts, recency 0
        (2, next_midnight, Decimal("99.00")),  # first instant after: ignored
        (2, at(AS_OF - dt.timedelta(days=3), 0, 0), Decimal("1.00")),
        # 01:30 on as_of+1 at UTC+2 is 23:30 UTC on as_of: counts, recency 0
        (3, at(AS_OF + dt.timedelta(days=1), 1, 30, plus_two), Decimal("2.00")),
        # 2024-02-29 (leap day) to 2026-03-01: 731 days
        (4, at(dt.date(2024, 2, 29), 23, 59), Decimal("3.00")),
        (5, next_midnight + dt.timedelta(days=30), Decimal("5.00")),  # only future orders
    ]
    add_orders(app, orders, extra_customers=[6])  # 6 has no orders at all
    run = calculate(app, AS_OF)
    rows = {r[0]: r for r in stored_rows(app, run["id"])}
    assert sorted(rows) == [1, 2, 3, 4]
    assert {c: rows[c][1] for c in rows} == {1: 0, 2: 3, 3: 0, 4: 731}
    assert rows[2][2:4] == (1, 100)  # the future order neither counted nor summed
    assert stored_rows(app, run["id"]) == expected(orders, AS_OF)
    assert run["statistics"]["customers_without_orders"] == 2  # 5 and 6


def test_monetary_sums_are_exact_decimals(app: Flask) -> None:
    # 0.10 + 0.20 must tie with 0.30 exactly; a float sum would not.
    orders = [
        (1, at(AS_OF), Decimal("0.10")),
        (1, at(AS_OF), Decimal("0.20")),
        (2, at(AS_OF), Decimal("0.30")),
        (3, at(AS_OF), Decimal("0.31")),
    ]
    add_orders(app, orders)
    run = calculate(app, AS_OF)
    with app.app_context():
        monetary = dict(
            db.session.execute(
                sa.select(RFMScore.customer_id, RFMScore.monetary).where(
                    RFMScore.run_id == run["id"]
                )
            ).all()
        )
    assert monetary == {1: Decimal("0.30"), 2: Decimal("0.30"), 3: Decimal("0.31")}
    assert stored_rows(app, run["id"]) == expected(orders, AS_OF)


def test_recalculation_is_reproducible(app: Flask) -> None:
    orders = [(c % 17 + 1, at(AS_OF - dt.timedelta(days=c % 4)), AMOUNTS[c % 5]) for c in range(90)]
    add_orders(app, orders)
    first = calculate(app, AS_OF)
    second = calculate(app, AS_OF)
    assert stored_rows(app, first["id"]) == stored_rows(app, second["id"])
    assert first["statistics"]["segments"] == second["statistics"]["segments"]


def test_postgresql_and_sqlite_give_identical_rows_and_statistics(
    pg_app: Flask, sqlite_app: Flask
) -> None:
    orders = [
        (c % 40 + 1, at(AS_OF - dt.timedelta(days=(c * 7) % 50), c % 24), AMOUNTS[c % 6])
        for c in range(300)
    ]
    results = []
    for app in (pg_app, sqlite_app):
        add_orders(app, orders)
        run = calculate(app, AS_OF)
        stats = dict(run["statistics"])
        stats.pop("calculated_at")
        results.append((stored_rows(app, run["id"]), stats))
    assert results[0] == results[1]
    assert results[0][0] == expected(orders, AS_OF)


def test_statistics_match_an_independent_computation(app: Flask) -> None:
    orders = [
        (c % 12 + 1, at(AS_OF - dt.timedelta(days=c % 9)), Decimal(c % 7) + Decimal("0.25"))
        for c in range(60)
    ]
    add_orders(app, orders, extra_customers=[100, 101])
    run = calculate(app, AS_OF)
    stats = run["statistics"]
    rows = expected(orders, AS_OF)
    assert stats["as_of"] == AS_OF.isoformat()
    assert stats["customers_scored"] == len(rows) == 12
    assert stats["customers_without_orders"] == 2
    total_cents = sum(r[3] for r in rows)
    for seg in stats["segments"]:
        mine = [r for r in rows if r[7] == seg["segment"]]
        revenue = sum(r[3] for r in mine)
        orders_n = sum(r[2] for r in mine)
        assert seg["customers"] == len(mine)
        assert seg["orders"] == orders_n
        assert cents(seg["revenue"]) == revenue
        assert seg["revenue_share"] == round(revenue / total_cents, 4)
        assert seg["customer_share"] == round(len(mine) / len(rows), 4)
        if mine:
            assert seg["mean_recency_days"] == round(sum(r[1] for r in mine) / len(mine), 2)
            assert cents(seg["average_order_value"]) == round(revenue / orders_n)
    for name, index in (("recency", 1), ("frequency", 2), ("monetary", 3)):
        score_index = {"recency": 4, "frequency": 5, "monetary": 6}[name]
        for entry in stats["dimensions"][name]["scores"]:
            mine = [r[index] for r in rows if r[score_index] == entry["score"]]
            assert entry["customers"] == len(mine)
            low, high = (min(mine), max(mine)) if mine else (None, None)
            if name == "monetary" and mine:
                assert (cents(entry["min"]), cents(entry["max"])) == (low, high)
            else:
                assert (entry["min"], entry["max"]) == (low, high)


def test_frequency_ties_split_across_scores_are_flagged(app: Flask) -> None:
    # Ten customers with one order each: equal frequency spread over five scores.
    orders = [(c, at(AS_OF - dt.timedelta(days=c)), Decimal(c)) for c in range(1, 11)]
    add_orders(app, orders)
    dims = calculate(app, AS_OF)["statistics"]["dimensions"]
    assert dims["frequency"]["ties_split_across_scores"] is True
    assert dims["recency"]["ties_split_across_scores"] is False
    assert dims["monetary"]["ties_split_across_scores"] is False


def test_old_runs_keep_history_within_retention(app: Flask) -> None:
    app.config["RFM_KEEP_RUNS"] = 2
    add_orders(app, [(1, at(AS_OF), Decimal("1.00")), (2, at(AS_OF), Decimal("2.00"))])
    ids = [calculate(app, AS_OF)["id"] for _ in range(4)]
    with app.app_context():
        kept = db.session.execute(sa.select(RFMScore.run_id).distinct()).scalars().all()
        current = (
            db.session.execute(sa.select(RFMRun.id).where(RFMRun.is_current.is_(True)))
            .scalars()
            .all()
        )
        statuses = db.session.execute(sa.select(RFMRun.status)).scalars().all()
    assert sorted(kept) == ids[-2:]
    assert current == [ids[-1]]
    assert statuses == ["succeeded"] * 4  # run rows stay as history


def test_customer_ids_at_both_ends_of_the_int4_range_keep_spec_order(app: Flask) -> None:
    """PostgreSQL packs (value, customer id) into one sort key (calculation.py);
    ids at -2**31, around 0 and 2**31 - 1, in tie groups of recency and of
    frequency, must still order exactly like SPEC's two-key ORDER BY."""
    ids = [-(2**31), -(2**31) + 1, -7, -1, 0, 1, 2, 2**31 - 2, 2**31 - 1, 12345, -12345]
    orders = [
        (c, dt.datetime(2026, 2, 1 + i % 2, 23, 59, 59, tzinfo=UTC), Decimal(5 + i % 3))
        for i, c in enumerate(ids)
        for _ in range(1 + i % 2)
    ]
    add_orders(app, orders)
    assert engine_rows(app, AS_OF) == expected(orders, AS_OF)
    run = calculate(app, AS_OF)
    assert stored_rows(app, run["id"]) == expected(orders, AS_OF)


def test_totals_up_to_the_largest_monetary_score_alike_and_beyond_it_fail_alike(
    app: Flask,
) -> None:
    """A score's monetary is NUMERIC(14,2): PostgreSQL refuses a larger total
    and SQLite, which would keep it, must refuse it too, naming the customer;
    a total at the limit is stored exactly on both."""
    largest = Decimal("9999999999.99")  # the largest order amount
    at_limit = [(1, at(AS_OF), largest)] * 100 + [(1, at(AS_OF), Decimal("0.99"))]
    orders = [*at_limit, (2, at(AS_OF), Decimal("1.00")), (3, at(AS_OF, 9), Decimal("0.01"))]
    add_orders(app, orders)
    first = calculate(app, AS_OF)
    assert first["status"] == "succeeded"
    assert stored_rows(app, first["id"]) == expected(orders, AS_OF)
    assert stored_rows(app, first["id"])[0][3] == 99_999_999_999_999  # cents

    add_orders(app, [(4, at(AS_OF), largest)] * 100 + [(4, at(AS_OF), Decimal("1.00"))])
    failed = calculate(app, AS_OF)
    assert failed["status"] == "failed"
    assert failed["error"] == (
        "customer 4's orders up to 2026-03-01 total 1000000000000.00, more than a score's "
        "monetary holds (999999999999.99); correct or remove those orders"
    )
    assert stored_rows(app, failed["id"]) == []
    with app.app_context():
        current = db.session.execute(sa.select(RFMRun.id).where(RFMRun.is_current)).scalars()
        assert list(current) == [first["id"]]


@pytest.mark.parametrize(
    "days, amounts",
    [
        # Recency 5 falls into scores 3 and 4, monetary 5.00 into 3 and 4.
        ([9, 9, 8, 8, 5, 5, 5, 3, 1, 0], [1, 2, 3, 4, 5, 5, 5, 8, 9, 10]),
        # All distinct: nothing split.
        ([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        # One value each: split wherever there is more than one score.
        ([4] * 7, [3] * 7),
    ],
)
def test_ties_split_across_scores_agree_with_the_reference_in_every_dimension(
    app: Flask, days: list[int], amounts: list[int]
) -> None:
    """A dimension is flagged when one raw value sits in two different scores,
    computed here from the independent reference."""
    orders = [
        (c, at(AS_OF - dt.timedelta(days=d)), Decimal(a))
        for c, (d, a) in enumerate(zip(days, amounts, strict=True), start=1)
    ]
    add_orders(app, orders)
    dims = calculate(app, AS_OF)["statistics"]["dimensions"]
    rows = expected(orders, AS_OF)
    for name, value, score in (("recency", 1, 4), ("frequency", 2, 5), ("monetary", 3, 6)):
        scores_of: dict[object, set[int]] = {}
        for row in rows:
            scores_of.setdefault(row[value], set()).add(row[score])
        split = any(len(s) > 1 for s in scores_of.values())
        assert dims[name]["ties_split_across_scores"] is split, name


@pytest.mark.parametrize("as_of", [dt.date(1900, 1, 1), dt.date(9999, 12, 30)])
def test_as_of_at_both_ends_of_the_accepted_range_calculates(app: Flask, as_of: dt.date) -> None:
    """The first and the last as_of check_as_of accepts: the cutoff (next
    UTC midnight) and the recency arithmetic still work there."""
    orders = [
        (1, at(as_of, 23, 59), Decimal("1.00")),
        (2, at(as_of - dt.timedelta(days=1)) if as_of.year > 1900 else at(as_of, 0), "2.00"),
        (3, at(dt.date(2026, 3, 1)), Decimal("3.00")),
    ]
    add_orders(app, orders)
    run = calculate(app, as_of)
    assert run["status"] == "succeeded", run["error"]
    assert stored_rows(app, run["id"]) == expected(orders, as_of)
