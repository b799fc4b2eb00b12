"""Where an API-triggered run is executed, after its queued row is committed.

``RFM_EXECUTOR``:

- ``"celery"``: publish ``rfm.calculate`` to the worker through Redis. When
  the broker cannot be reached the queued run is marked failed at once (no
  orphan that blocks the next request until it times out) and
  ``BrokerUnavailable`` tells the API to answer 503.
- ``"thread"`` (embedded profile, no Redis): one background thread per app
  runs the same task with ``.apply()``: the worker's code path, in-process.

Both go through the app's own Celery instance (``app.extensions["celery"]``)
rather than the ``shared_task`` proxy, which follows whichever Celery app was
created last and so could point at another app's database.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from celery import Task
from flask import Flask
from kombu.exceptions import OperationalError as KombuOperationalError

from . import runs
from .extensions import db

TASK_NAME = "rfm.calculate"
_POOL_KEY = "rfm_executor"
_pool_lock = threading.Lock()  # guards creating the pool, not an app object
BROKER_DOWN_REASON = "the task broker is unreachable"

log = logging.getLogger(__name__)


class ExecutorUnavailable(RuntimeError):
    """The run could not be handed over for execution; it was marked failed."""

    def __init__(self, run_id: int, reason: str) -> None:
        self.run_id = run_id
        self.reason = reason
        super().__init__(
            f"{reason}; the calculation was not started "
            f"(run {run_id} is marked failed). Try again later."
        )


class BrokerUnavailable(ExecutorUnavailable):
    """Redis (the Celery broker) refused or timed out."""

    def __init__(self, run_id: int) -> None:
        super().__init__(run_id, BROKER_DOWN_REASON)


def _task(app: Flask) -> Task:
    return app.extensions["celery"].tasks[TASK_NAME]


def fail_queued_run(app: Flask, run_id: int, reason: str) -> None:
    with app.app_context():
        runs.fail_queued(db.engine, run_id, reason)


def enqueue(app: Flask, run_id: int) -> None:
    """Start executing a committed, queued run; returns without waiting."""
    # A ``current_app`` proxy would be useless in the worker thread.
    app = getattr(app, "_get_current_object", lambda: app)()
    if app.config["RFM_EXECUTOR"] == "celery":
        publish(app, run_id)
    else:
        _submit(app, run_id)


def _broker_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (
        KombuOperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        OSError,
    )


def _check_broker(app: Flask) -> None:
    """One PING without retries; raises unless Redis answers within a second.

    redis-py retries a timed-out command up to ten times by default, so a
    Redis that accepts connections but does not answer (a hung server, a
    half-open connection) would hold ``.delay()`` for 5 to 15 s whatever the
    socket timeouts in celery_app.py. This check fails within about a second.
    """
    # Imported here: redis-py costs ~0.1 s of every process start (the CLI's
    # included), and only the celery executor ever talks to Redis.
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        app.config["REDIS_URL"],
        socket_connect_timeout=1,
        socket_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    finally:
        client.close()


def publish(app: Flask, run_id: int) -> None:
    """Send a committed, queued run to the Celery worker."""
    try:
        # Broker timeouts and publish retries are bounded in celery_app.py,
        # so this fails within about two seconds when Redis is down.
        _check_broker(app)
        # No time limits in the message: the worker applies its own
        # RFM_TIME_LIMIT (celery_app.celery_config). Celery would otherwise
        # stamp this process's limits on the task, and they override the
        # worker's: a worker given a new RFM_TIME_LIMIT kept the API's.
        _task(app).apply_async((run_id,), time_limit=None, soft_time_limit=None)
    except _broker_errors() as exc:
        log.warning("cannot publish run %s: %s", run_id, exc)
        fail_queued_run(app, run_id, BROKER_DOWN_REASON)
        raise BrokerUnavailable(run_id) from exc
    except Exception as exc:
        fail_queued_run(app, run_id, f"the task could not be published: {type(exc).__name__}")
        raise


def resume_active_run(app: Flask) -> int | None:
    """At a worker's start: send the active run (queued or running), if any,
    to ``rfm.calculate`` again; returns its id. A worker killed whole (its
    main process too) leaves its task unacknowledged in Redis until the
    visibility timeout, over an hour; this delivery takes the run over now.
    Where the run is alive elsewhere, or already delivered, it is a
    duplicate, which finds the run finished or its lock held and does
    nothing."""
    with app.app_context():
        run = runs.active_run_by_engine(db.engine)
    if run is None:
        return None
    log.info("resuming run %s (%s), active when this worker started", run["id"], run["status"])
    publish(app, run["id"])
    return int(run["id"])


def _pool(app: Flask) -> ThreadPoolExecutor:
    with _pool_lock:
        pool = app.extensions.get(_POOL_KEY)
        if pool is None:
            # One worker: runs execute one at a time, like one Celery worker.
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rfm-calculation")
            app.extensions[_POOL_KEY] = pool
        return pool


def _run_in_thread(app: Flask, run_id: int) -> None:
    # The task pushes its own app context (celery_app.FlaskTask).
    result = _task(app).apply(args=[run_id])
    if result.failed():
        app.logger.error("calculation run %s raised:\n%s", run_id, result.traceback)


def _submit(app: Flask, run_id: int) -> Future[None]:
    try:
        return _pool(app).submit(_run_in_thread, app, run_id)
    except RuntimeError as exc:  # the pool was shut down (process exiting)
        reason = "the service is shutting down"
        fail_queued_run(app, run_id, reason)
        raise ExecutorUnavailable(run_id, reason) from exc


def shutdown(app: Flask, wait: bool = True) -> None:
    """Stop the app's calculation thread (tests; orderly exit)."""
    with _pool_lock:
        pool = app.extensions.pop(_POOL_KEY, None)
    if pool is not None:
        pool.shutdown(wait=wait)
