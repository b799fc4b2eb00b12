"""A purge drops old runs' tables with a session-wide lock_timeout (autocommit
has no transaction to scope it to); the pooled connection must not keep it,
or the next calculation on it gives up on any lock after 5 s."""

from __future__ import annotations

import datetime as dt
from contextlib import ExitStack
from decimal import Decimal

from flask import Flask

from rfm_service import runs, score_storage
from rfm_service.extensions import db
from tests.conftest import add_orders


def _pooled_lock_timeouts(app: Flask) -> set[str]:
    with app.app_context(), ExitStack() as stack:
        conns = [stack.enter_context(db.engine.connect()) for _ in range(db.engine.pool.size())]
        return {c.exec_driver_sql("SHOW lock_timeout").scalar() for c in conns}


def test_dropping_partitions_leaves_no_lock_timeout_on_the_pooled_connection(
    pg_app: Flask,
) -> None:
    with pg_app.app_context():
        score_storage._drop_partitions(db.engine, [987654])  # no such table: warned, not raised
    assert _pooled_lock_timeouts(pg_app) == {"0"}


def test_a_purge_leaves_no_lock_timeout_for_the_next_run(pg_app: Flask) -> None:
    add_orders(pg_app, [(c, dt.datetime(2026, 2, 1, tzinfo=dt.UTC), Decimal(c)) for c in (1, 2)])
    settings = runs.RunSettings.from_app(pg_app)
    settings = runs.RunSettings(**{**settings.__dict__, "keep_runs": 2})
    with pg_app.app_context():
        for day in (1, 2, 3):  # the third run's purge drops the first run's table
            run = runs.calculate_now(db.engine, settings, "cli", dt.date(2026, 3, day))
            assert run["status"] == "succeeded"
    assert _pooled_lock_timeouts(pg_app) == {"0"}
