"""PostgreSQL sessions whose TimeZone is not UTC.

initdb sets a server's TimeZone from the machine's, so a deployment's
database often is not UTC; the test server is. SPEC §2 counts in UTC
calendar days whatever the session says, and §5 reads naive timestamps as
UTC. Each test here runs with the session TimeZone far from UTC on both
sides, so a date cast or a timestamp parse that follows the session shows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import ingest, runs
from rfm_service.extensions import db
from rfm_service.models import Order
from tests.conftest import add_orders, close_app, empty_tables, make_app
from tests.reference import reference_scores
from tests.test_engine import normalised, stored_rows

UTC = dt.UTC
AS_OF = dt.date(2026, 3, 1)


@pytest.fixture(params=["Pacific/Kiritimati", "Etc/GMT+12"])  # UTC+14, UTC-12
def tz_app(request: pytest.FixtureRequest, pg_url: str) -> Iterator[Flask]:
    url = sa.make_url(pg_url).update_query_dict({"options": f"-c TimeZone={request.param}"})
    app = make_app(url.render_as_string(hide_password=False))
    with app.app_context(), db.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW TimeZone").scalar() == request.param
    empty_tables(app)
    yield app
    close_app(app)


def test_recency_counts_utc_days_whatever_the_session_time_zone(tz_app: Flask) -> None:
    orders = [
        # Late on a UTC day: a session east of UTC sees the next day.
        (1, dt.datetime(2026, 2, 28, 23, 30, tzinfo=UTC), Decimal("1.00")),
        # Early on a UTC day: a session west of UTC sees the day before.
        (2, dt.datetime(2026, 3, 1, 0, 30, tzinfo=UTC), Decimal("2.00")),
        (3, dt.datetime(2026, 2, 27, 12, 0, tzinfo=UTC), Decimal("3.00")),
        (4, dt.datetime(2026, 2, 20, 23, 59, tzinfo=UTC), Decimal("4.00")),
        (5, dt.datetime(2026, 2, 26, 0, 1, tzinfo=UTC), Decimal("5.00")),
        (6, dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC), Decimal("6.00")),  # after as_of
    ]
    add_orders(tz_app, orders)
    with tz_app.app_context():
        run = runs.calculate_now(db.engine, runs.RunSettings.from_app(tz_app), "cli", AS_OF)
    assert run["status"] == "succeeded", run["error"]
    rows = stored_rows(tz_app, run["id"])
    assert {r[0]: r[1] for r in rows} == {1: 1, 2: 0, 3: 2, 4: 9, 5: 3}
    assert rows == normalised(reference_scores(orders, AS_OF))


def test_naive_timestamps_import_as_utc_whatever_the_session_time_zone(
    tz_app: Flask, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "customer_id,ordered_at,total_amount,order_id\n"
        "1,2024-01-01,1.00,1\n"
        "2,2024-01-01T23:30:00,2.00,2\n"
        "3,2024-01-01T23:30:00+02:00,3.00,3\n"
    )
    with tz_app.app_context(), path.open("rb") as raw:
        ingest.import_orders(db.engine, raw)
    with tz_app.app_context():
        stored = dict(db.session.execute(sa.select(Order.id, Order.ordered_at)).all())
    assert stored == {
        1: dt.datetime(2024, 1, 1, tzinfo=UTC),
        2: dt.datetime(2024, 1, 1, 23, 30, tzinfo=UTC),
        3: dt.datetime(2024, 1, 1, 21, 30, tzinfo=UTC),
    }
