"""The beat schedule: read from RFM_SCHEDULE, validated at start, ticks that
never stack, and a real ``celery -A worker beat`` feeding the real worker."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from celery.beat import PersistentScheduler
from celery.schedules import crontab
from celery.utils.imports import symbol_by_name
from flask import Flask

from rfm_service import ConfigError, create_app, runs
from rfm_service.celery_app import (
    SCHEDULE_ENTRY,
    TickScheduler,
    schedule_from_crontab,
    tick_expiry,
)
from rfm_service.extensions import db
from tests.celery_support import (
    TEST_REDIS_URL,
    Worker,
    run_settings,
    scalar,
    send_calculate,
    service_env,
    start_service,
    wait_for_run,
)
from tests.conftest import add_orders, make_app

pytest_plugins = ["tests.celery_support"]

# Dated well before any "today" the scheduled task (which uses today) sees.
ORDERS = [
    (c, dt.datetime(2025, 6, 1 + c % 28, 12, tzinfo=dt.UTC), Decimal(c % 9) + 1)
    for c in range(1, 13)
]


def schedule_of(env: dict[str, str]) -> dict[str, object]:
    app = create_app(env={"RFM_PROFILE": "embedded", **env})
    return dict(app.extensions["celery"].conf.beat_schedule)


# --- the schedule comes from configuration -----------------------------------


def test_default_schedule_is_daily_at_two_utc() -> None:
    app = create_app(env={})
    conf = app.extensions["celery"].conf
    entry = conf.beat_schedule[SCHEDULE_ENTRY]

    assert entry["task"] == "rfm.scheduled"
    assert entry["schedule"] == crontab(minute="0", hour="2")
    assert (conf.timezone, conf.enable_utc) == ("UTC", True)


@pytest.mark.parametrize(
    ("expression", "minutes", "hours", "weekdays"),
    [
        ("*/15 * * * *", {0, 15, 30, 45}, set(range(24)), set(range(7))),
        ("30 1 * * 1-5", {30}, {1}, {1, 2, 3, 4, 5}),
        ("0 2 * * *", {0}, {2}, set(range(7))),
    ],
)
def test_schedule_follows_rfm_schedule(
    expression: str, minutes: set[int], hours: set[int], weekdays: set[int]
) -> None:
    schedule = schedule_of({"RFM_SCHEDULE": expression})

    assert list(schedule) == [SCHEDULE_ENTRY]  # one entry, nothing else scheduled
    cron = schedule[SCHEDULE_ENTRY]["schedule"]  # type: ignore[index]
    assert (cron.minute, cron.hour, cron.day_of_week) == (minutes, hours, weekdays)


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("61 * * * *", "minute field"),
        ("0 25 * * *", "hour field"),
        ("0 2 * * 8", "day-of-week field"),
        ("0 2 31 2 *", "never occurs"),
        ("* * * *", "needs 5 crontab fields"),
        ("daily", "needs 5 crontab fields"),
        ("*/0 * * * *", "minute field"),
    ],
)
def test_malformed_schedule_stops_the_app_at_start(expression: str, names: str) -> None:
    with pytest.raises(ConfigError, match="RFM_SCHEDULE") as caught:
        create_app(env={"RFM_SCHEDULE": expression})
    assert names in str(caught.value)


def test_beat_refuses_to_start_with_a_malformed_schedule(
    pg_url: str, task_queue: str, service_logs: Path
) -> None:
    env = service_env(pg_url, task_queue, RFM_SCHEDULE="0 25 * * *")
    beat = start_service("beat-bad-schedule", ["celery", "-A", "worker", "beat"], env, service_logs)
    with beat:
        code = beat.wait_for_exit(timeout=20)

    assert code != 0
    assert "configuration error" in beat.log() and "RFM_SCHEDULE" in beat.log()
    assert "Traceback" not in beat.log()


# --- scheduled ticks -----------------------------------------------------------


def apply_scheduled(app: Flask) -> dict[str, object]:
    """Run the beat task here with ``.apply()``: the worker's code path."""
    result = app.extensions["celery"].tasks["rfm.scheduled"].apply()
    assert result.successful(), result.traceback
    return dict(result.get())


@pytest.mark.celery
def test_tick_while_a_run_is_queued_does_not_stack(worker_app: Flask) -> None:
    with worker_app.app_context():
        queued, _ = runs.request_run(db.engine, run_settings(worker_app), "api")

    outcome = apply_scheduled(worker_app)

    assert outcome == {"run_id": queued["id"], "status": "queued", "skipped": True}
    assert scalar(worker_app, "SELECT COUNT(*) FROM rfm_runs") == 1


@pytest.mark.celery
def test_tick_while_a_run_is_running_does_not_stack(
    worker_app: Flask, celery_worker: Worker
) -> None:
    add_orders(worker_app, ORDERS)
    with worker_app.app_context():
        run, _ = runs.request_run(db.engine, run_settings(worker_app), "api")
        blocker = db.engine.connect()
    try:
        # The worker takes the run, then waits at its INSERT behind this lock.
        blocker.execute(sa.text("LOCK TABLE rfm_scores IN SHARE MODE"))
        send_calculate(worker_app, run["id"])
        wait_for_run(worker_app, run["id"], statuses=("running",))

        outcome = apply_scheduled(worker_app)
    finally:
        blocker.rollback()
        blocker.close()

    assert outcome == {"run_id": run["id"], "status": "running", "skipped": True}
    assert wait_for_run(worker_app, run["id"])["status"] == "succeeded"
    assert scalar(worker_app, "SELECT COUNT(*) FROM rfm_runs") == 1


@pytest.mark.celery
def test_tick_when_idle_sends_a_scheduled_run_to_the_worker(
    worker_app: Flask, celery_worker: Worker
) -> None:
    """The tick queues the run and hands it to ``rfm.calculate``, whose
    redelivery takes a run over when its worker is killed (a redelivered
    tick used to queue a new run each time, never reaching the limit of
    attempts)."""
    add_orders(worker_app, ORDERS)

    outcome = apply_scheduled(worker_app)

    assert outcome["status"] == "queued"
    run = wait_for_run(worker_app, int(outcome["run_id"]))  # type: ignore[call-overload]
    assert run["status"] == "succeeded", run["error"]
    assert run["trigger"] == "schedule" and run["attempts"] == 1
    assert run["customers_scored"] == len(ORDERS)


@pytest.mark.parametrize(
    "expression, sent_at, expires",
    [
        ("* * * * *", dt.datetime(2026, 11, 25, 2, 0, 0, tzinfo=dt.UTC), 60),
        ("* * * * *", dt.datetime(2026, 11, 25, 2, 0, 7, tzinfo=dt.UTC), 53),
        ("*/15 * * * *", dt.datetime(2026, 11, 25, 10, 15, 0, tzinfo=dt.UTC), 900),
        ("0 2 * * *", dt.datetime(2026, 11, 25, 2, 0, 0, tzinfo=dt.UTC), 86_400),
        ("0 2,3 * * *", dt.datetime(2026, 11, 25, 2, 0, 0, tzinfo=dt.UTC), 3_600),
    ],
)
def test_a_tick_expires_when_the_next_one_is_due(
    expression: str, sent_at: dt.datetime, expires: float
) -> None:
    """A tick waiting behind a long run (or a worker that is down) is dropped
    once the next is due, so ticks never stack into runs back to back."""
    schedule = schedule_from_crontab(expression)
    schedule.nowfun = lambda: sent_at
    assert tick_expiry(schedule, sent_at) == expires


def test_beat_uses_the_scheduler_that_sets_the_expiry() -> None:
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, env={})
    scheduler = app.extensions["celery"].conf.beat_scheduler
    assert symbol_by_name(scheduler) is TickScheduler


# --- a real beat process ---------------------------------------------------------


@pytest.mark.celery
def test_beat_sends_a_missed_tick_to_the_worker(
    worker_app: Flask, celery_worker: Worker, service_logs: Path, tmp_path: Path
) -> None:
    """Waiting for a real crontab minute would take up to 60 s. Instead the
    schedule file says the last tick was two days ago, as after an outage
    over 02:00: beat sends the missed tick once, at start."""
    add_orders(worker_app, ORDERS)
    schedule_file = str(tmp_path / "celerybeat-schedule")
    scheduler = PersistentScheduler(
        app=worker_app.extensions["celery"], schedule_filename=schedule_file
    )
    scheduler.schedule[SCHEDULE_ENTRY].last_run_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    scheduler.sync()
    scheduler.close()

    argv = ["celery", "-A", "worker", "beat", "--loglevel", "DEBUG", "--schedule", schedule_file]
    with start_service("celery-beat", argv, celery_worker.env, service_logs) as beat:
        beat.wait_for_log(f"Sending due task {SCHEDULE_ENTRY} (rfm.scheduled)", timeout=20)
        log = beat.log()
        # The worker records the run (trigger "schedule") and calculates it.
        beat.wait_for(
            "the scheduled run",
            lambda: scalar(worker_app, "SELECT COUNT(*) FROM rfm_runs") == 1,
            timeout=20,
        )
        run_id = scalar(worker_app, "SELECT id FROM rfm_runs")
        run = wait_for_run(worker_app, run_id)

    assert "beat: Starting..." in log
    # The schedule it loaded lists the entry with the configured crontab.
    assert f"<ScheduleEntry: {SCHEDULE_ENTRY} rfm.scheduled()" in log
    assert "<crontab: 0 2 * * *" in log
    assert "backend_cleanup" not in log  # no results stored, so nothing else is scheduled
    assert run["trigger"] == "schedule" and run["status"] == "succeeded", run["error"]
    assert run["customers_scored"] == len(ORDERS)


@pytest.mark.celery
def test_beat_sends_each_tick_with_its_expiry(
    pg_url: str, service_logs: Path, tmp_path: Path
) -> None:
    """The tick beat really sends, read back from Redis on a queue no worker
    consumes: it expires when the next 02:00 UTC tick is due."""
    queue = f"rfm-test-tick-{uuid.uuid4().hex[:8]}"
    env = service_env(pg_url, queue)
    app = make_app(pg_url, REDIS_URL=TEST_REDIS_URL, RFM_TASK_QUEUE=queue)
    schedule_file = str(tmp_path / "celerybeat-schedule")
    scheduler = PersistentScheduler(app=app.extensions["celery"], schedule_filename=schedule_file)
    scheduler.schedule[SCHEDULE_ENTRY].last_run_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    scheduler.sync()
    scheduler.close()
    client = redis.Redis.from_url(TEST_REDIS_URL)
    argv = ["celery", "-A", "worker", "beat", "--loglevel", "DEBUG", "--schedule", schedule_file]
    try:
        with start_service("celery-beat-expiry", argv, env, service_logs) as beat:
            beat.wait_for("the tick in Redis", lambda: client.llen(queue) == 1, timeout=20)
            sent = dt.datetime.now(dt.UTC)
        message = json.loads(client.lindex(queue, 0))
    finally:
        client.delete(queue)
        client.close()
        app.extensions["celery"].close()
    assert message["headers"]["task"] == "rfm.scheduled"
    expires = dt.datetime.fromisoformat(message["headers"]["expires"])
    next_tick = dt.datetime.combine(sent.date(), dt.time(2), tzinfo=dt.UTC)
    if next_tick <= sent:
        next_tick += dt.timedelta(days=1)
    assert abs((expires - next_tick).total_seconds()) < 30
