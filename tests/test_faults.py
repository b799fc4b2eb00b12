"""Faults caused for real, no mocks: a worker SIGKILLed mid-calculation
(and a takeover racing the dead process's database session), a calculation
past its time limit, a request while the pool is nearly used up, Redis
stopped and frozen, PostgreSQL restarted under a serving API.

Each test owns what it breaks: its own Celery worker (on the test Redis, a
queue of its own), a private ``redis-server``, a private PostgreSQL cluster
(``fault_support``). The machine's shared servers are never stopped.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade

from rfm_service import executor, runs
from rfm_service.extensions import db
from tests.celery_support import (
    Service,
    empty_tables_bounded,
    get_run,
    service_env,
    start_service,
    wait_for_run,
)
from tests.conftest import add_orders, make_app
from tests.fault_support import (
    TEST_REDIS_URL,
    blocked_statements,
    calculation_lock_holders,
    kill_process,
    own_worker,
    private_postgres,
    private_redis,
    process_gone,
    redis_queue_length,
    table_locked,
    wait_until,
    worker_child_pid,
)

OLD_AS_OF = dt.date(2026, 3, 1)
NEW_AS_OF = "2026-03-20"  # later: other recency days, so a mix would show
CUSTOMERS = 60
READ_PATHS = (
    "/api/rfm/?page_size=1000",
    "/api/rfm/7/",
    "/api/rfm/statistics/",
    "/api/rfm/by-segment/?segment=others&page_size=1000",
    "/api/rfm/jobs/",
)


def seed(app: Flask) -> None:
    add_orders(
        app,
        [
            (c, dt.datetime(2026, 2, 1 + c % 27, 10, tzinfo=dt.UTC), Decimal(c * 13 % 90) + 1)
            for c in range(1, CUSTOMERS + 1)
            for _ in range(c % 3 + 1)
        ],
    )


def calculate_in_process(app: Flask) -> runs.RunRecord:
    """The scores every test starts from (the CLI's path, no broker)."""
    with app.app_context():
        run = runs.calculate_now(db.engine, runs.RunSettings.from_app(app), "cli", OLD_AS_OF)
    assert run["status"] == "succeeded", run["error"]
    return run


def served(client: FlaskClient) -> dict[str, Any]:
    """What the score endpoints serve now: the full list and the statistics."""
    listing = client.get("/api/rfm/?page_size=1000")
    stats = client.get("/api/rfm/statistics/")
    assert listing.status_code == stats.status_code == 200
    return {"list": listing.get_json(), "statistics": stats.get_json()}


def assert_complete(snapshot: dict[str, Any], run: runs.RunRecord) -> None:
    """Every row from ``run``, all of them, one calculated_at."""
    rows = snapshot["list"]["results"]
    assert snapshot["statistics"]["run_id"] == run["id"]
    assert snapshot["list"]["count"] == len(rows) == run["customers_scored"] == CUSTOMERS
    assert len({row["calculated_at"] for row in rows}) == 1
    assert [row["customer_id"] for row in rows] == list(range(1, CUSTOMERS + 1))


def post_a_stalled_run(app: Flask, client: FlaskClient) -> int:
    """POST a calculation and wait until it waits at ATTACH PARTITION, in its
    transaction, holding the calculation lock (the caller holds a SHARE lock
    on ``rfm_scores``: ``table_locked``); readers are not blocked."""
    posted = client.post("/api/rfm/calculate/", json={"as_of": NEW_AS_OF})
    assert posted.status_code == 202
    run_id = int(posted.get_json()["id"])
    wait_until(
        "the run to wait at ATTACH PARTITION",
        lambda: any("ATTACH PARTITION" in q for q in blocked_statements(app)),
    )
    return run_id


@contextmanager
def app_on(url: str, **config: Any) -> Iterator[Flask]:
    """An app on ``url`` with empty tables; its pool is closed afterwards.
    An unhandled error becomes a real 500, as in production, instead of
    being raised into the test."""
    empty_tables_bounded(url)
    app = make_app(url, **{"PROPAGATE_EXCEPTIONS": False, **config})
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()
        app.extensions["celery"].close()


class Background(threading.Thread):
    """Runs ``target`` in a thread; keeps its result or exception."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.target_fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.target_fn()
        except BaseException as exc:
            self.error = exc


class Hammer(threading.Thread):
    """GETs the read endpoints in a loop and tallies the answers."""

    def __init__(self, app: Flask) -> None:
        super().__init__(daemon=True)
        self.client = app.test_client()
        self.stop = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.bad_bodies: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for path in READ_PATHS:
                try:
                    response = self.client.get(path)
                except Exception as exc:  # would be a 500 outside the test client
                    self.bad_bodies.append(f"{path}: {type(exc).__name__}: {exc}")
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code != 200 and set(response.get_json() or {}) != {"detail"}:
                    self.bad_bodies.append(response.get_data(as_text=True)[:300])


def migrate(url: str) -> None:
    app = make_app(url)
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.mark.celery
def test_worker_killed_mid_calculation_keeps_old_scores_and_the_redelivery_finishes_it(
    pg_url: str, service_logs: Path
) -> None:
    with (
        own_worker(pg_url, service_logs, "killed") as worker,
        app_on(
            pg_url, REDIS_URL=TEST_REDIS_URL, RFM_TASK_QUEUE=worker.queue, RFM_EXECUTOR="celery"
        ) as app,
    ):
        seed(app)
        old = calculate_in_process(app)
        client = app.test_client()
        before = served(client)
        assert_complete(before, old)

        # Stall the run for real.
        with table_locked(app, "rfm_scores", "SHARE"):
            run_id = post_a_stalled_run(app, client)
            victim = worker_child_pid(get_run(app, run_id))
            assert victim != worker.service.pid  # the prefork child, not the parent

            kill_process(victim)

            # acks_late + reject_on_worker_lost: the parent requeues the task and
            # a new child takes the run over once the server has ended the dead
            # child's session (and released the calculation lock with it).
            worker.service.wait_for_log(f"pid:{victim} exited with 'signal 9 (SIGKILL)'")
            taken_over = wait_until(
                "the redelivered task to take the run over",
                lambda: (r := get_run(app, run_id))["attempts"] == 2 and r,
                timeout=20,
            )
            assert taken_over["status"] == "running"
            assert worker_child_pid(taken_over) != victim
            # Meanwhile the old scores are served, complete.
            assert served(client) == before
            assert client.get(f"/api/rfm/jobs/{run_id}/").get_json()["status"] == "running"

        done = wait_for_run(app, run_id, timeout=30)
        assert (done["status"], done["attempts"], done["error"]) == ("succeeded", 2, None)
        assert calculation_lock_holders(app) == 0
        after = served(client)
        assert after["statistics"]["run_id"] == run_id
        assert after["statistics"]["as_of"] == NEW_AS_OF
        assert after["list"]["count"] == CUSTOMERS

        # The next calculation starts and finishes as usual.
        posted = client.post("/api/rfm/calculate/", json={"as_of": "2026-03-21"})
        assert posted.status_code == 202 and posted.get_json()["created"] is True
        assert wait_for_run(app, posted.get_json()["id"])["status"] == "succeeded"


def test_takeover_right_after_a_kill_waits_for_the_dead_session_to_end(
    pg_url: str, service_logs: Path
) -> None:
    """The race the worker test may not hit: a redelivery that arrives while
    the server still runs the killed process's session, which holds the
    calculation lock. It waits for that session to end and takes over,
    instead of leaving the run 'running' until the next request."""
    with app_on(pg_url) as app:
        seed(app)
        calculate_in_process(app)
        argv = ["flask", "calculate-rfm", "--as-of", NEW_AS_OF]
        env = service_env(pg_url, "unused", FLASK_APP="wsgi")
        with table_locked(app, "rfm_scores", "SHARE"):
            cli = start_service("calculate-rfm", argv, env, service_logs)
            try:
                cli.wait_for(
                    "the run to wait at ATTACH PARTITION",
                    lambda: any("ATTACH PARTITION" in q for q in blocked_statements(app)),
                )
                with app.app_context():
                    run = runs.active_run_by_engine(db.engine)
                assert run is not None and worker_child_pid(run) == cli.pid
                kill_process(cli.pid)
                # At once: the dead session still holds the lock (and still
                # waits for the table), so a plain try of the lock would fail.
                assert calculation_lock_holders(app) == 1
                with app.app_context():
                    engine, settings = db.engine, runs.RunSettings.from_app(app)
                takeover = Background(lambda: runs.execute_run(engine, settings, run["id"]))
                takeover.start()
                wait_until(
                    "the takeover to start the run again",
                    lambda: get_run(app, run["id"])["attempts"] == 2,
                    timeout=runs.TAKEOVER_WAIT_S + 5,
                )
            finally:
                cli.stop()
        takeover.join(30)
        assert takeover.error is None, takeover.error
        assert (takeover.result["status"], takeover.result["attempts"]) == ("succeeded", 2)


@pytest.mark.celery
def test_calculation_past_its_time_limit_fails_with_a_reason_and_keeps_old_scores(
    pg_url: str, service_logs: Path
) -> None:
    limit = 2
    with (
        own_worker(pg_url, service_logs, "limited", RFM_TIME_LIMIT=str(limit)) as worker,
        app_on(
            pg_url, REDIS_URL=TEST_REDIS_URL, RFM_TASK_QUEUE=worker.queue, RFM_EXECUTOR="celery"
        ) as app,
    ):
        seed(app)
        old = calculate_in_process(app)
        client = app.test_client()
        before = served(client)

        with table_locked(app, "rfm_scores", "SHARE"):
            started = time.monotonic()
            run_id = client.post("/api/rfm/calculate/", json={"as_of": NEW_AS_OF}).get_json()["id"]
            failed = wait_for_run(app, run_id, timeout=limit + 20)
            elapsed = time.monotonic() - started

        assert failed["status"] == "failed"
        assert failed["error"] == f"the calculation exceeded its time limit of {limit} s"
        assert limit <= elapsed < limit + 10
        job = client.get(f"/api/rfm/jobs/{run_id}/").get_json()
        assert (job["status"], job["error"]) == ("failed", failed["error"])
        assert served(client) == before
        assert_complete(before, old)
        assert calculation_lock_holders(app) == 0
        assert worker.service.running() and worker.ping()
        # Nothing is left active: the next request starts a new run.
        again = client.post("/api/rfm/calculate/", json={"as_of": NEW_AS_OF})
        assert again.get_json()["created"] is True
        assert wait_for_run(app, again.get_json()["id"])["status"] == "succeeded"


def test_a_request_while_a_run_runs_needs_one_database_connection(pg_url: str) -> None:
    """Pool exhaustion: a request that found a run active held its pooled
    connection while checking the calculation lock on a second one, so a
    burst of requests could wait on each other until the pool timed out
    (a 500). With a pool of two and the running calculation holding one,
    a single request shows it."""
    pool = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 0, "pool_timeout": 2}
    with app_on(pg_url, SQLALCHEMY_ENGINE_OPTIONS=pool) as app:
        seed(app)
        client = app.test_client()
        try:
            with table_locked(app, "rfm_scores", "SHARE"):
                first = client.post("/api/rfm/calculate/", json={"as_of": NEW_AS_OF})
                assert first.status_code == 202
                wait_until(
                    "the in-process run to wait at ATTACH PARTITION",
                    lambda: any("ATTACH PARTITION" in q for q in blocked_statements(app)),
                )
                again = client.post("/api/rfm/calculate/", json={"as_of": NEW_AS_OF})
                assert again.status_code == 202, again.get_data(as_text=True)
                assert again.get_json()["id"] == first.get_json()["id"]
                assert again.get_json()["created"] is False
            assert wait_for_run(app, first.get_json()["id"])["status"] == "succeeded"
        finally:
            executor.shutdown(app)


def test_redis_down_fails_fast_with_503_and_recovers_without_restart(pg_url: str) -> None:
    queue = "rfm-fault-redis"
    with (
        private_redis() as broker,
        app_on(pg_url, REDIS_URL=broker.url(), RFM_TASK_QUEUE=queue, RFM_EXECUTOR="celery") as app,
    ):
        seed(app)
        client = app.test_client()
        # A publish first, so the outage also meets a pooled broker connection.
        first = client.post("/api/rfm/calculate/", json={"as_of": OLD_AS_OF.isoformat()})
        assert first.status_code == 202
        assert redis_queue_length(broker.url(), queue) == 1
        broker.client().delete(queue)
        with app.app_context():  # no worker here: execute it in-process
            runs.execute_run(db.engine, runs.RunSettings.from_app(app), first.get_json()["id"])
        assert client.get("/readyz").status_code == 200

        broker.stop()

        started = time.monotonic()
        refused = client.post("/api/rfm/calculate/", json={"as_of": NEW_AS_OF})
        elapsed = time.monotonic() - started
        assert refused.status_code == 503, refused.get_data(as_text=True)
        assert elapsed < 2.0
        body = refused.get_json()
        assert set(body) == {"detail"}
        assert "the task broker is unreachable" in body["detail"]
        assert "Try again later" in body["detail"]
        assert refused.headers["Retry-After"]
        # No orphan: the run it recorded is failed, nothing is active.
        jobs = client.get("/api/rfm/jobs/").get_json()["results"]
        assert (jobs[0]["status"], jobs[0]["error"]) == ("failed", "the task broker is unreachable")
        with app.app_context():
            assert runs.active_run_by_engine(db.engine) is None
        for path in READ_PATHS:
            assert client.get(path).status_code == 200, path
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["redis"].startswith("down")
        assert ready.get_json()["checks"]["database"] == "ok"

        broker.start()  # the same port: the app is not restarted

        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.get_json()
        accepted = client.post("/api/rfm/calculate/", json={"as_of": NEW_AS_OF})
        assert accepted.status_code == 202, accepted.get_data(as_text=True)
        assert accepted.get_json()["created"] is True
        assert redis_queue_length(broker.url(), queue) == 1  # the task is on the broker


def test_frozen_redis_fails_fast_too(pg_url: str) -> None:
    """A Redis that accepts connections but never answers (frozen with
    SIGSTOP: what a hung server or a half-open connection looks like)."""
    with (
        private_redis() as broker,
        app_on(pg_url, REDIS_URL=broker.url(), RFM_TASK_QUEUE="q", RFM_EXECUTOR="celery") as app,
    ):
        seed(app)
        client = app.test_client()
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            refused = client.post("/api/rfm/calculate/", json={"as_of": NEW_AS_OF})
            elapsed = time.monotonic() - started
            assert refused.status_code == 503, refused.get_data(as_text=True)
            assert "the task broker is unreachable" in refused.get_json()["detail"]
            assert elapsed < 2.0
            with app.app_context():
                assert runs.active_run_by_engine(db.engine) is None
            assert client.get("/readyz").status_code == 503
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        accepted = client.post("/api/rfm/calculate/", json={"as_of": NEW_AS_OF})
        assert accepted.status_code == 202 and accepted.get_json()["created"] is True
        assert redis_queue_length(broker.url(), "q") == 1


@pytest.mark.celery
def test_worker_outlives_a_redis_restart_while_a_calculation_runs(
    pg_url: str, service_logs: Path
) -> None:
    """Redis stopped and started again while the worker runs a calculation:
    the worker reconnects by itself, the run succeeds and the next request
    is served. Celery 5.7.0's worker exited here ("Unrecoverable error:
    AttributeError ... 'hostname'") at two processes, with the consumer in
    BRPOP while the task ran; requirements.txt pins 5.6.3."""
    queue = f"rfm-fault-restart-{uuid.uuid4().hex[:8]}"
    with (
        private_redis() as broker,
        app_on(pg_url, REDIS_URL=broker.url(), RFM_TASK_QUEUE=queue, RFM_EXECUTOR="celery") as app,
    ):
        seed(app)
        calculate_in_process(app)
        client = app.test_client()
        argv = [
            "celery", "-A", "worker", "worker", "--loglevel", "INFO", "--pool", "prefork",
            "--concurrency", "2", "-Q", queue, "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        env = service_env(pg_url, queue, REDIS_URL=broker.url())
        with start_service("worker-redis-restart", argv, env, service_logs) as worker:
            worker.wait_for_log("ready.", timeout=30)
            with table_locked(app, "rfm_scores", "SHARE"):
                run_id = post_a_stalled_run(app, client)

                broker.stop()
                worker.wait_for_log("Connection to broker lost", timeout=20)
                # A worker that gave up keeps running until the stalled task
                # ends (a warm shutdown): look at what it logged.
                worker.wait_for("a reconnection attempt", lambda: reconnecting(worker), timeout=20)
                broker.start()  # the same port, empty

                worker.wait_for(
                    "a new connection to Redis",
                    lambda: worker.log().count("Connected to redis://") >= 2,
                    timeout=30,
                )
            done = wait_for_run(app, run_id, timeout=30)
            assert (done["status"], done["error"]) == ("succeeded", None)

            # The worker still takes tasks: the next request is calculated.
            posted = client.post("/api/rfm/calculate/", json={"as_of": OLD_AS_OF.isoformat()})
            assert posted.status_code == 202
            later = posted.get_json()["id"]
            assert later != run_id
            worker.wait_for(
                f"run {later} to succeed",
                lambda: get_run(app, later)["status"] == "succeeded",
                timeout=30,
            )
            assert worker.running()
            assert "Unrecoverable error" not in worker.log()


def reconnecting(worker: Service) -> bool:
    log = worker.log()
    gave_up = [line for line in log.splitlines() if "Unrecoverable error" in line]
    assert not gave_up, f"the worker gave up: {gave_up[0]}\n{worker.tail()}"
    return "Cannot connect to redis://" in log


def test_postgresql_restart_gives_503_then_recovers_by_itself() -> None:
    with private_postgres() as cluster:
        url = cluster.create_database("rfm_fault")
        migrate(url)
        with app_on(url) as app:
            seed(app)
            calculate_in_process(app)
            client = app.test_client()
            for path in READ_PATHS:
                assert client.get(path).status_code == 200, path
            hammer = Hammer(app)
            hammer.start()
            try:
                wait_until("answers before the outage", lambda: hammer.statuses[200] > 20)

                cluster.stop("fast")

                for path in (*READ_PATHS, "/api/rfm/calculate/"):
                    started = time.monotonic()
                    if path.endswith("calculate/"):
                        response = client.post(path, json={"as_of": NEW_AS_OF})
                    else:
                        response = client.get(path)
                    assert response.status_code == 503, (path, response.get_data(as_text=True))
                    assert response.get_json() == {
                        "detail": "the database is unavailable; try again later"
                    }
                    assert time.monotonic() - started < 2.0
                ready = client.get("/readyz")
                assert ready.status_code == 503
                assert ready.get_json()["checks"]["database"].startswith("down")
                wait_until("the hammer to meet the outage", lambda: hammer.statuses[503] > 5)

                cluster.start()

                # The pool replaces the dead pooled connections: no restart.
                recovered = hammer.statuses[200]
                wait_until(
                    "answers after the restart", lambda: hammer.statuses[200] > recovered + 20
                )
            finally:
                hammer.stop.set()
                hammer.join(10)
            for path in READ_PATHS:
                assert client.get(path).status_code == 200, path
            assert client.get("/readyz").status_code == 200
            assert set(hammer.statuses) <= {200, 503}, hammer.statuses
            assert not hammer.bad_bodies, hammer.bad_bodies[:3]


@pytest.mark.celery
def test_a_worker_killed_whole_has_its_run_taken_over_by_the_next_worker_to_start(
    pg_url: str, service_logs: Path
) -> None:
    """SIGKILL to the worker's main process and its child: nothing requeues
    the task, which stays unacknowledged in Redis until the visibility
    timeout (over an hour). The next worker to start resumes the run."""
    with (
        own_worker(pg_url, service_logs, "whole") as worker,
        app_on(
            pg_url, REDIS_URL=TEST_REDIS_URL, RFM_TASK_QUEUE=worker.queue, RFM_EXECUTOR="celery"
        ) as app,
    ):
        seed(app)
        client = app.test_client()
        with table_locked(app, "rfm_scores", "SHARE"):
            run_id = post_a_stalled_run(app, client)
            child = worker_child_pid(get_run(app, run_id))
            for pid in (worker.service.pid, child):  # the main process first
                with suppress(ProcessLookupError):  # gone with its parent
                    os.kill(pid, signal.SIGKILL)
            wait_until("both to die", lambda: process_gone(child), timeout=10)
            worker.service.wait_for_exit()
        assert get_run(app, run_id)["status"] == "running"  # and nobody runs it

        argv = [
            "celery", "-A", "worker", "worker", "--loglevel", "INFO", "--pool", "prefork",
            "--concurrency", "1", "-Q", worker.queue, "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        with start_service("worker-after", argv, worker.env, service_logs) as after:
            done = wait_for_run(app, run_id, timeout=40)
            assert f"resuming run {run_id} (running)" in after.log()
        assert (done["status"], done["attempts"], done["error"]) == ("succeeded", 2, None)
        assert served(client)["statistics"]["run_id"] == run_id
