"""Real processes for the Celery tests: a worker, beat, Flower, gunicorn.

A pytest plugin: the test modules that need it say
``pytest_plugins = ["tests.celery_support"]``. Everything talks to the
session's PostgreSQL database (``pg_url``) and to the local Redis, database
``RFM_TEST_REDIS_URL`` (default ``/13``), on a queue of its own per test
session, so parallel runs and a developer's worker never take each other's
tasks. Every wait is bounded; a failing test gets the logs of the processes
it used appended to its report.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from celery import Celery
from flask import Flask

from rfm_service import runs
from rfm_service.extensions import db
from tests.conftest import empty_tables, make_app

ROOT = Path(__file__).resolve().parent.parent
# The venv pytest runs in holds celery, gunicorn and flask.
BIN = Path(sys.executable).parent
TEST_REDIS_URL = os.environ.get("RFM_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
WORKER_CONCURRENCY = 2
# Environment variables the services read; the developer's values must not leak in.
_SCRUBBED_PREFIXES = ("RFM_", "FLOWER_", "CELERY_", "FLASK_")
_SCRUBBED = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "APP", "BROKER_URL", "CONFIG_MODULE"}


class ServiceFailed(AssertionError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(database_url: str, queue: str, **extra: str) -> dict[str, str]:
    """The production-profile environment a deployment gives every process."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_SCRUBBED_PREFIXES) and key not in _SCRUBBED
    }
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=TEST_REDIS_URL,
        RFM_PROFILE="production",
        SECRET_KEY="test",
        RFM_EXECUTOR="celery",
        RFM_TASK_QUEUE=queue,
        PYTHONUNBUFFERED="1",  # log lines reach the file as they happen
    )
    env.update(extra)
    return env


def _die_with_parent() -> None:
    """Linux: SIGTERM the service when the test process dies, so a killed
    test run never leaves a worker consuming the queue."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Service:
    """A subprocess in its own process group, its output in a log file."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stopped_at: float | None = None

    def start(self) -> Service:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                list(self.argv),
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a hung child can be killed with its group
                preexec_fn=_die_with_parent,
            )
        _services.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll ``predicate`` until true; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise ServiceFailed(
                    f"{self.name} exited (code {code}) while waiting for {what}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise ServiceFailed(f"{self.name}: no {what} within {timeout} s:\n{self.tail()}")
            time.sleep(0.1)

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        self.wait_for(f"log line {text!r}", lambda: text in self.log(), timeout)

    def wait_for_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ServiceFailed(
                f"{self.name} did not exit within {timeout} s:\n{self.tail()}"
            ) from None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (a warm shutdown for Celery), then SIGKILL to the group."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        # Whatever is left of the group (prefork children) goes now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        return self.proc.returncode

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


_services: list[Service] = []
_started_key = pytest.StashKey[float]()


def start_service(name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path) -> Service:
    executable, *rest = argv
    local = executable if "/" in executable else str(BIN / executable)
    log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    return Service(name, [local, *rest], env, log_path).start()


# --- HTTP --------------------------------------------------------------------


def http_get(
    url: str, auth: tuple[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:  # not listening yet, reset, timed out
        return 0, ""


# --- the Celery worker ---------------------------------------------------------


def control_app() -> Celery:
    """A bare client of the test broker, for ping/inspect; never the current app."""
    return Celery(
        "rfm-test-control",
        broker=TEST_REDIS_URL,
        set_as_current=False,
        config_source={"broker_connection_timeout": 2, "broker_connection_retry_on_startup": False},
    )


@dataclass
class Worker:
    service: Service
    node: str
    queue: str
    env: dict[str, str]
    control: Celery = field(default_factory=control_app)

    def ping(self, timeout: float = 0.5) -> bool:
        replies = self.control.control.ping(destination=[self.node], timeout=timeout)
        return any(self.node in reply for reply in replies)

    def wait_for_task(self, task_id: str, timeout: float = 30.0) -> str:
        """The worker's log line for a finished task (it logs the return value)."""
        marker = f"[{task_id}] succeeded"
        self.service.wait_for_log(marker, timeout)
        return next(line for line in self.service.log().splitlines() if marker in line)


def _drop_queue_keys(queue: str) -> None:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    with contextlib.suppress(redis.RedisError):
        keys = list(client.scan_iter(match=f"*{queue}*", count=1000))
        if keys:
            client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def task_queue() -> Iterator[str]:
    queue = f"rfm-test-{uuid.uuid4().hex[:10]}"
    yield queue
    _drop_queue_keys(queue)


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def celery_worker(pg_url: str, task_queue: str, service_logs: Path) -> Iterator[Worker]:
    """One real worker for the session. Prefork with two processes: two
    deliveries of one task can then overlap, as they do across two worker
    replicas, and the duplicate-delivery test needs that."""
    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {TEST_REDIS_URL} is not reachable ({exc}); run `make services`")
    env = service_env(pg_url, task_queue)
    with running_worker("celery-worker", task_queue, WORKER_CONCURRENCY, env, service_logs) as w:
        yield w


@contextlib.contextmanager
def running_worker(
    name: str, queue: str, concurrency: int, env: dict[str, str], log_dir: Path
) -> Iterator[Worker]:
    """``celery -A worker worker`` (prefork) on ``queue``, answering pings;
    stopped on exit."""
    # A worker resumes the run it finds active when it starts (worker.py):
    # none may be left over from an earlier test.
    empty_tables_bounded(env["DATABASE_URL"])
    node = f"{queue}@{socket.gethostname()}"
    argv = [
        "celery", "-A", "worker", "worker", "--loglevel", "INFO",
        "--pool", "prefork", "--concurrency", str(concurrency),
        "-Q", queue, "-n", node,
        "--without-mingle", "--without-gossip",  # no neighbours to sync with; starts faster
    ]  # fmt: skip
    service = start_service(name, argv, env, log_dir)
    worker = Worker(service, node, queue, env)
    try:
        service.wait_for("a reply to ping", worker.ping, timeout=30)
        yield worker
    finally:
        service.stop()
        worker.control.close()


def empty_tables_bounded(url: str) -> None:
    """conftest's ``empty_tables`` with a bound on lock waits: TRUNCATE waits
    for every lock on the tables, so a task left blocked by a failed test
    fails the next test instead of hanging it."""
    cleaner = make_app(
        url, SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"options": "-c lock_timeout=10s"}}
    )
    try:
        empty_tables(cleaner)
    finally:
        with cleaner.app_context():
            db.engine.dispose()


@pytest.fixture
def worker_app(celery_worker: Worker, pg_url: str) -> Iterator[Flask]:
    """An app on the worker's database, broker and queue, tables empty."""
    empty_tables_bounded(pg_url)
    app = make_app(
        pg_url, REDIS_URL=TEST_REDIS_URL, RFM_TASK_QUEUE=celery_worker.queue, RFM_EXECUTOR="celery"
    )
    app.extensions["celery"].control.purge()  # no task left over from an earlier test
    yield app
    with app.app_context():
        db.engine.dispose()
    app.extensions["celery"].close()


def send_calculate(app: Flask, run_id: int) -> str:
    """Publish ``rfm.calculate`` through Redis with this app's Celery (the
    ``shared_task`` proxy follows whichever app was built last)."""
    return str(app.extensions["celery"].tasks["rfm.calculate"].delay(run_id).id)


def run_settings(app: Flask) -> runs.RunSettings:
    return runs.RunSettings.from_app(app)


def get_run(app: Flask, run_id: int) -> runs.RunRecord:
    with app.app_context():
        run = runs.get_run_by_id(db.engine, run_id)
    assert run is not None, f"run {run_id} does not exist"
    return run


def wait_for_run(
    app: Flask, run_id: int, statuses: Sequence[str] = ("succeeded", "failed"), timeout: float = 30
) -> runs.RunRecord:
    deadline = time.monotonic() + timeout
    while True:
        run = get_run(app, run_id)
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s")
        time.sleep(0.05)


def scalar(app: Flask, sql: str, **params: Any) -> Any:
    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


# --- logs of the processes a failed test used ---------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_started_key] = time.monotonic()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        since = item.stash.get(_started_key, 0.0)
        for service in _services:
            if service.stopped_at is None or service.stopped_at >= since:
                report.sections.append((f"{service.name} log ({service.log_path})", service.tail()))
    return report
