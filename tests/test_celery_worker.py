"""A real Celery worker, through real Redis, on the session's PostgreSQL.

No eager mode: tasks are published with ``.delay()`` and executed by the
worker subprocess (``celery -A worker worker``) that ``celery_support``
starts once per session.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.pool import NullPool

from rfm_service import create_app, runs
from rfm_service.extensions import db
from tests.celery_support import (
    WORKER_CONCURRENCY,
    Worker,
    get_run,
    run_settings,
    scalar,
    send_calculate,
    wait_for_run,
)
from tests.conftest import add_orders

pytest_plugins = ["tests.celery_support"]
pytestmark = pytest.mark.celery

AS_OF = dt.date(2026, 3, 1)
CUSTOMERS = 30


def seed(app: Flask) -> None:
    add_orders(
        app,
        [
            (c, dt.datetime(2026, 1, 1 + c % 28, 9, tzinfo=dt.UTC), Decimal(c * 7 % 50) + 1)
            for c in range(1, CUSTOMERS + 1)
            for _ in range(c % 4 + 1)
        ],
    )


def request(app: Flask, trigger: str = "api") -> tuple[runs.RunRecord, bool]:
    with app.app_context():
        return runs.request_run(db.engine, run_settings(app), trigger, AS_OF)


def score_rows(app: Flask) -> int:
    return scalar(app, "SELECT COUNT(*) FROM rfm_scores")


def run_rows(app: Flask) -> int:
    return scalar(app, "SELECT COUNT(*) FROM rfm_runs")


@contextmanager
def scores_table_locked(app: Flask) -> Iterator[None]:
    """Hold a SHARE lock on rfm_scores: a calculation that has taken the run
    blocks at its INSERT, still holding the calculation lock."""
    with app.app_context():
        conn = db.engine.connect()
    try:
        conn.execute(sa.text("LOCK TABLE rfm_scores IN SHARE MODE"))
        yield
    finally:
        conn.rollback()
        conn.close()


def test_worker_calculates_a_queued_run(worker_app: Flask, celery_worker: Worker) -> None:
    seed(worker_app)
    run, created = request(worker_app)
    assert created and run["status"] == "queued"

    send_calculate(worker_app, run["id"])
    done = wait_for_run(worker_app, run["id"])

    assert done["status"] == "succeeded", done["error"]
    assert done["customers_scored"] == CUSTOMERS
    assert sum(done["segment_counts"].values()) == CUSTOMERS
    assert done["is_current"] and done["active_slot"] is None
    assert score_rows(worker_app) == CUSTOMERS
    # Executed in the worker's process, not in this one.
    assert done["worker"] and not done["worker"].endswith(f":{os.getpid()}")


def test_second_delivery_of_a_finished_run_is_a_no_op(
    worker_app: Flask, celery_worker: Worker
) -> None:
    seed(worker_app)
    run, _ = request(worker_app)
    send_calculate(worker_app, run["id"])
    first = wait_for_run(worker_app, run["id"])
    assert first["status"] == "succeeded", first["error"]

    line = celery_worker.wait_for_task(send_calculate(worker_app, run["id"]))

    assert "'status': 'succeeded'" in line
    again = get_run(worker_app, run["id"])
    assert again["finished_at"] == first["finished_at"]  # not calculated a second time
    assert (run_rows(worker_app), score_rows(worker_app)) == (1, CUSTOMERS)


def test_concurrent_duplicate_deliveries_calculate_once(
    worker_app: Flask, celery_worker: Worker
) -> None:
    assert WORKER_CONCURRENCY >= 2, "the two deliveries must be able to overlap"
    seed(worker_app)
    run, _ = request(worker_app)
    log = celery_worker.service

    with scores_table_locked(worker_app):
        task_ids = [send_calculate(worker_app, run["id"]) for _ in range(2)]
        # One delivery takes the run and waits on the table lock; the other
        # finds the calculation lock held and returns while the first waits.
        log.wait_for(
            "one delivery to return early",
            lambda: any(f"[{t}] succeeded" in log.log() for t in task_ids),
            timeout=30,
        )
        early = next(t for t in task_ids if f"[{t}] succeeded" in log.log())
        assert get_run(worker_app, run["id"])["status"] in ("queued", "running")

    late = next(t for t in task_ids if t != early)
    assert "'status': 'succeeded'" in celery_worker.wait_for_task(late)
    done = wait_for_run(worker_app, run["id"])
    assert done["status"] == "succeeded", done["error"]
    assert (run_rows(worker_app), score_rows(worker_app)) == (1, CUSTOMERS)
    assert scalar(worker_app, "SELECT COUNT(DISTINCT run_id) FROM rfm_scores") == 1


def test_twenty_concurrent_requests_create_one_run(
    worker_app: Flask, celery_worker: Worker, pg_url: str
) -> None:
    seed(worker_app)
    settings = run_settings(worker_app)
    # One connection per thread (no pool to queue on), so the 20 inserts race.
    engine = sa.create_engine(pg_url, poolclass=NullPool)
    barrier = threading.Barrier(20)
    results: list[tuple[runs.RunRecord, bool]] = []
    errors: list[BaseException] = []

    def request_one() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(runs.request_run(engine, settings, "api", AS_OF))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request_one, daemon=True) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    engine.dispose()

    assert not errors, errors
    assert len(results) == 20
    assert sum(created for _, created in results) == 1
    assert len({run["id"] for run, _ in results}) == 1
    run_id = results[0][0]["id"]
    send_calculate(worker_app, run_id)
    assert wait_for_run(worker_app, run_id)["status"] == "succeeded"
    assert run_rows(worker_app) == 1


def test_task_for_a_missing_run_is_logged_and_dropped(
    worker_app: Flask, celery_worker: Worker
) -> None:
    line = celery_worker.wait_for_task(send_calculate(worker_app, 424242))

    assert "'status': 'missing'" in line
    assert "run 424242 does not exist" in celery_worker.service.log()
    assert celery_worker.service.running() and celery_worker.ping()
    # The worker goes on with the next task.
    seed(worker_app)
    run, _ = request(worker_app)
    send_calculate(worker_app, run["id"])
    assert wait_for_run(worker_app, run["id"])["status"] == "succeeded"


def test_app_celery_settings_follow_the_design(pg_url: str) -> None:
    app = create_app(
        env={
            "RFM_PROFILE": "production",
            "SECRET_KEY": "test",
            "DATABASE_URL": pg_url,
            "RFM_TIME_LIMIT": "120",
        }
    )
    conf = app.extensions["celery"].conf

    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (120, 180)
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.task_ignore_result is True
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_default_queue == "rfm"
    assert conf.broker_connection_timeout <= 2  # publishing fails fast when Redis is down
    with app.app_context():
        db.engine.dispose()


def test_running_worker_has_the_designed_settings(celery_worker: Worker) -> None:
    inspect = celery_worker.control.control.inspect(destination=[celery_worker.node], timeout=3)
    conf = (inspect.conf(with_defaults=True) or {})[celery_worker.node]
    stats = (inspect.stats() or {})[celery_worker.node]
    queues = (inspect.active_queues() or {})[celery_worker.node]

    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_time_limit"] > conf["task_soft_time_limit"]
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]
    assert conf["task_ignore_result"] is True
    assert conf["accept_content"] == ["json"]
    # One message reserved per process: the multiplier of 1 in effect.
    assert stats["prefetch_count"] == WORKER_CONCURRENCY
    # It consumes its session's queue only.
    assert [q["name"] for q in queues] == [celery_worker.queue]
