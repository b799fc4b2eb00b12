"""`flask calculate-rfm` through the CLI runner, on both databases."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from flask import Flask

from rfm_service import runs
from rfm_service.extensions import db
from rfm_service.models import RFMRun, RFMScore
from tests.conftest import add_orders
from tests.reference import reference_scores

AS_OF = dt.date(2026, 3, 1)
ORDERS = [
    (c % 9 + 1, dt.datetime(2026, 2, 1 + c % 27, 10, tzinfo=dt.UTC), Decimal(c % 13) + 1)
    for c in range(40)
]


def counts(app: Flask) -> tuple[int, int]:
    with app.app_context():
        return tuple(  # type: ignore[return-value]
            db.session.execute(sa.select(sa.func.count()).select_from(model)).scalar()
            for model in (RFMRun, RFMScore)
        )


def expected_segment_counts() -> dict[str, int]:
    found: dict[str, int] = {}
    for row in reference_scores(ORDERS, AS_OF):
        found[row[-1]] = found.get(row[-1], 0) + 1
    return found


def segment_lines(output: str) -> dict[str, int]:
    names = {
        "Loyal Customers",
        "Champions",
        "Others",
        "Hibernating",
        "At Risk",
        "Lost",
        "New Customers",
        "Promising",
        "Potential Loyalists",
        "Need Attention",
        "About to Sleep",
        "Cannot Lose Them",
    }
    found = {}
    for line in output.splitlines():
        name = line.strip().rsplit(None, 2)[0] if line.strip() else ""
        if name in names:
            found[name] = int(line.split()[-2].replace(",", ""))
    return {k: v for k, v in found.items() if v}


def test_calculate_verbose_prints_segments_and_timings(app: Flask) -> None:
    add_orders(app, ORDERS)
    result = app.test_cli_runner().invoke(
        args=["calculate-rfm", "--as-of", "2026-03-01", "--verbose"]
    )
    assert result.exit_code == 0, result.output
    assert "run 1 succeeded: 9 customers scored as of 2026-03-01" in result.output
    assert segment_lines(result.output) == expected_segment_counts()
    assert "calculation " in result.output and " s, total " in result.output
    assert counts(app) == (1, 9)


def test_dry_run_prints_counts_and_writes_nothing(app: Flask) -> None:
    add_orders(app, ORDERS)
    before = counts(app)
    result = app.test_cli_runner().invoke(
        args=["calculate-rfm", "--as-of", "2026-03-01", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "dry run: 9 customers would be scored; nothing written" in result.output
    assert segment_lines(result.output) == expected_segment_counts()
    assert counts(app) == before == (0, 0)


def test_bad_as_of_is_a_clear_error(app: Flask) -> None:
    for bad in ("2026-02-30", "yesterday", "2026-3-1"):
        result = app.test_cli_runner().invoke(args=["calculate-rfm", "--as-of", bad])
        assert result.exit_code == 2
        assert f"'{bad}' is not a valid date (expected YYYY-MM-DD)" in result.output
        assert "Traceback" not in result.output
    assert counts(app) == (0, 0)


def test_calculation_refused_while_another_is_active(app: Flask) -> None:
    add_orders(app, ORDERS)
    with app.app_context():
        queued, _ = runs.request_run(db.engine, runs.RunSettings.from_app(app), "api", AS_OF)
    result = app.test_cli_runner().invoke(args=["calculate-rfm", "--as-of", "2026-03-01"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: a calculation is already running (run {queued['id']})"


def test_failed_calculation_exits_non_zero_with_the_reason(pg_app: Flask) -> None:
    add_orders(pg_app, ORDERS)
    pg_app.config["RFM_TIME_LIMIT"] = 1
    with pg_app.app_context(), db.engine.connect() as blocker:
        blocker.execute(sa.text("LOCK TABLE rfm_scores IN SHARE MODE"))  # a real stall
        result = pg_app.test_cli_runner().invoke(args=["calculate-rfm", "--as-of", "2026-03-01"])
        blocker.rollback()
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: run 1 failed: the calculation exceeded its time limit of 1 s"
    )


# 100 orders of the largest amount and one more: one cent above the
# 999,999,999,999.99 that a score's NUMERIC(14,2) monetary holds.
OVERSIZED = [(50, dt.datetime(2026, 2, 2, tzinfo=dt.UTC), Decimal("9999999999.99"))] * 100 + [
    (50, dt.datetime(2026, 2, 3, tzinfo=dt.UTC), Decimal("1.00"))
]
OVERSIZED_REASON = (
    "customer 50's orders up to 2026-03-01 total 1000000000000.00, more than a score's "
    "monetary holds (999999999999.99); correct or remove those orders"
)


def test_a_total_too_large_for_a_score_fails_both_commands_with_the_customer(
    app: Flask,
) -> None:
    add_orders(app, ORDERS + OVERSIZED)
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["calculate-rfm", "--as-of", "2026-03-01", "--dry-run"])
    assert (dry.exit_code, dry.output.strip()) == (1, f"Error: {OVERSIZED_REASON}")
    result = runner.invoke(args=["calculate-rfm", "--as-of", "2026-03-01"])
    assert (result.exit_code, result.output.strip()) == (
        1,
        f"Error: run 1 failed: {OVERSIZED_REASON}",
    )
    assert counts(app) == (1, 0)  # the failed run's row, and no score
