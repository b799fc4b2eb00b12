"""Ctrl-C during `flask calculate-rfm`: the run is recorded failed at once,
not left "running" (with a growing duration) until another run is requested."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import runs
from rfm_service.extensions import db
from tests.conftest import add_orders


def test_ctrl_c_mid_statement_records_the_run_failed(pg_app: Flask) -> None:
    add_orders(pg_app, [(c, dt.datetime(2026, 2, 1, tzinfo=dt.UTC), Decimal(c)) for c in (1, 2)])
    settings = runs.RunSettings.from_app(pg_app)

    def interrupt(_conn, _cursor, statement, *_args) -> None:  # as SIGINT does, inside execute
        if statement.startswith("CREATE TABLE rfm_scores_r"):
            raise KeyboardInterrupt

    with pg_app.app_context():
        engine = db.engine
        sa.event.listen(engine, "before_cursor_execute", interrupt)
        try:
            with pytest.raises(KeyboardInterrupt):
                runs.calculate_now(engine, settings, "cli", dt.date(2026, 3, 1))
        finally:
            sa.event.remove(engine, "before_cursor_execute", interrupt)
        run = runs.active_run_by_engine(engine)
        assert run is None
        last = max(
            (runs.get_run_by_id(engine, i) for i in range(1, 50)),
            key=lambda r: r["id"] if r else 0,
        )
    assert last["status"] == "failed"
    assert last["error"] == "the calculation was interrupted (Ctrl-C)"
    assert last["finished_at"] is not None
