"""The migration history on a blank database of each kind: upgrade to head
matches the models (``flask db check``), downgrade to base removes every
table, and upgrading again works. On PostgreSQL a calculated run (a
partition of ``rfm_scores``) is in place while the history is walked."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from flask_migrate import check, downgrade, upgrade

from rfm_service import runs
from rfm_service.extensions import db

from .conftest import add_orders, blank_pg_database, make_app, partition_indexes


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


def _partition_keys(engine: sa.Engine, partition: str) -> dict[str | None, str]:
    """The keys of each index of a run's partition, by the parent index it is attached to."""
    with engine.connect() as conn:
        return dict(partition_indexes(conn, partition).values())


def test_score_keys_of_kept_runs_follow_the_history() -> None:
    """Migration 4e8d1c2b7f05 rebuilds the keys of every kept run, both ways."""
    new = {
        "pk_rfm_scores": "(customer_id, run_id)",
        "ix_rfm_scores_run_id_segment_customer_id": "(hashtext((segment)::text), customer_id)",
    }
    old = {
        "pk_rfm_scores": "(run_id, customer_id)",
        "ix_rfm_scores_run_id_segment_customer_id": (
            "(run_id, hashtext((segment)::text), customer_id)"
        ),
    }
    with blank_pg_database("rfm_mig") as url:
        app = make_app(url)
        with app.app_context():
            upgrade()
            at = dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)
            add_orders(app, [(1, at, "10.00"), (2, at, "20.00")])
            run = runs.calculate_now(db.engine, runs.RunSettings.from_app(app), "cli")
            assert run["status"] == "succeeded", run["error"]
            partition = f"rfm_scores_r{run['id']}"
            assert _partition_keys(db.engine, partition) == new  # as the run built them
            downgrade(revision="9c4e2f7a1b36")
            assert _partition_keys(db.engine, partition) == old
            upgrade()
            assert _partition_keys(db.engine, partition) == new
            again = runs.calculate_now(db.engine, runs.RunSettings.from_app(app), "cli")
            assert again["status"] == "succeeded", again["error"]
            assert _partition_keys(db.engine, f"rfm_scores_r{again['id']}") == new
            db.engine.dispose()
