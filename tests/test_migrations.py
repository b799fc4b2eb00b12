"""The migration history on a blank database of each kind: upgrade to head
matches the models (``flask db check``), downgrade to base removes every
table, and upgrading again works. On PostgreSQL a calculated run (a
partition of ``rfm_scores``) is in place while the history is walked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask_migrate import check, downgrade, upgrade

from rfm_service import runs
from rfm_service.extensions import db

from .conftest import add_orders, blank_pg_database, make_app


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.sqlite3'}"
        return
    with blank_pg_database("rfm_mig") as url:
        yield url


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_history_round_trips_and_matches_the_models(blank_url: str) -> None:
    app = make_app(blank_url)
    with app.app_context():
        upgrade()
        check()  # raises (and fails the test) when the models and migrations differ
        assert {"customers", "orders", "rfm_runs", "rfm_scores"} <= _tables(db.engine)
        at = dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)
        add_orders(app, [(1, at, "10.00"), (2, at, "20.00"), (2, at, "5.00")])
        run = runs.calculate_now(db.engine, runs.RunSettings.from_app(app), "cli")
        assert run["status"] == "succeeded", run["error"]
        downgrade(revision="base")
        assert _tables(db.engine) == set()
        upgrade()
        check()
        db.engine.dispose()
