"""Real faults for ``test_faults.py``: a private Redis and a private
PostgreSQL cluster that a test may stop and start again, a Celery worker of
its own that a test may kill, and a held table lock that stalls a
calculation. No mocks, and nothing here stops or restarts the machine's
shared PostgreSQL or Redis (tests only add a database or a queue to them).

Every wait is bounded; every process and directory made here is removed
when its context manager exits, whatever happened.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.pool import NullPool

from rfm_service.extensions import db
from tests.celery_support import (
    TEST_REDIS_URL,
    Worker,
    _drop_queue_keys,
    free_port,
    running_worker,
    service_env,
)

T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T], timeout: float = 20.0, every: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {value!r})")
        time.sleep(every)


def _run(argv: list[str], timeout: float = 60.0) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


# --- a private Redis -----------------------------------------------------------


@dataclass
class PrivateRedis:
    """``redis-server`` on a port of its own, no persistence: stopping it is
    a real outage for whoever points at it, and nobody else does."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url(), socket_connect_timeout=1, socket_timeout=2)

    def ping(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> PrivateRedis:
        """Start (or start again, on the same port)."""
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
        ]  # fmt: skip
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(f"private redis on port {self.port}", self.ping, timeout=10)
        return self

    def stop(self) -> None:
        """SIGTERM (no data to save), then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    workdir = Path(tempfile.mkdtemp(prefix="rfm-fault-redis-"))
    server = PrivateRedis(workdir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- a private PostgreSQL cluster ----------------------------------------------


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl are: ``RFM_TEST_PG_BINDIR``, PATH, or Debian's
    versioned directories (newest first)."""
    configured = os.environ.get("RFM_TEST_PG_BINDIR")
    if configured:
        return Path(configured)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
        reverse=True,
    )
    if not found:
        raise RuntimeError("initdb not found: install PostgreSQL or set RFM_TEST_PG_BINDIR")
    return Path(found[0]).parent


@dataclass
class PrivatePostgres:
    """A throwaway cluster in a temporary directory. As root its files
    belong to ``postgres`` (the server refuses to run as root)."""

    root: Path
    bindir: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _pg_ctl(self, *args: str, timeout: float = 60.0) -> str:
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        return _run(self._as_owner(argv), timeout)

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        initdb = [
            str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--locale", "C", "--no-sync",
        ]  # fmt: skip
        _run(self._as_owner(initdb), timeout=120)
        return self

    def start(self) -> None:
        # fsync off: a test cluster, never a crash-safe one; it starts faster.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        self._pg_ctl("-o", options, "-l", str(self.log_path), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients are disconnected and the server shuts down cleanly."""
        self._pg_ctl("-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        status = subprocess.run(
            self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"]),
            capture_output=True,
            timeout=30,
        )
        return status.returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="rfm-fault-pg-"))
    cluster = PrivatePostgres(root, postgres_bindir())
    try:
        cluster.init().start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            if cluster.running():
                cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# --- a Celery worker of a test's own -------------------------------------------


@contextlib.contextmanager
def own_worker(database_url: str, log_dir: Path, name: str, **env: str) -> Iterator[Worker]:
    """A real prefork worker with ONE process on a queue of its own, on the
    test Redis: a test may SIGKILL it or give it its own settings (``env``,
    e.g. ``RFM_TIME_LIMIT``) without touching the session's shared worker.
    With one process, the run's ``worker`` column names the only child."""
    queue = f"rfm-fault-{name}-{uuid.uuid4().hex[:8]}"
    worker_env = service_env(database_url, queue, **env)
    try:
        with running_worker(f"worker-{name}", queue, 1, worker_env, log_dir) as worker:
            yield worker
    finally:
        _drop_queue_keys(queue)


def worker_child_pid(run: dict[str, Any]) -> int:
    """The pid in a run's ``worker`` column (``host:pid``): the prefork child
    that executes it. Only this machine's processes can be signalled."""
    host, _, pid = str(run["worker"]).rpartition(":")
    assert host == socket.gethostname(), f"run {run['id']} ran on {host}, not here"
    return int(pid)


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited and been reaped (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def kill_process(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(f"process {pid} to die", lambda: process_gone(pid), timeout=10)


# --- stalling a calculation for real --------------------------------------------


@contextlib.contextmanager
def table_locked(app: Flask, table: str, mode: str = "SHARE") -> Iterator[sa.Connection]:
    """Hold ``LOCK TABLE table IN mode MODE`` until the block ends. SHARE on
    ``rfm_scores`` lets readers read but makes a calculation wait at its
    ATTACH PARTITION, inside its transaction, holding the calculation lock."""
    engine = own_engine(app)
    conn = engine.connect()
    try:
        conn.execute(sa.text(f"LOCK TABLE {table} IN {mode} MODE"))
        yield conn
    finally:
        conn.rollback()
        conn.close()
        engine.dispose()


def own_engine(app: Flask) -> sa.Engine:
    """An engine on the app's database outside the app's pool, so that a
    test's probes and locks never take connections the app needs."""
    with app.app_context():
        url = db.engine.url
    return sa.create_engine(url, poolclass=NullPool)


def _query(app: Flask, sql: str) -> list[Any]:
    engine = own_engine(app)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)).scalars())
    finally:
        engine.dispose()


def blocked_statements(app: Flask) -> list[str]:
    """Statements of this database's sessions now waiting for a lock."""
    return _query(
        app,
        "SELECT query FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )


def calculation_lock_holders(app: Flask) -> int:
    """Sessions holding an advisory lock (only the calculation lock uses one)."""
    held = _query(
        app,
        "SELECT COUNT(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
    )
    return int(held[0])


def redis_queue_length(url: str, queue: str) -> int:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


__all__ = [
    "TEST_REDIS_URL",
    "PrivatePostgres",
    "PrivateRedis",
    "blocked_statements",
    "calculation_lock_holders",
    "kill_process",
    "own_engine",
    "own_worker",
    "private_postgres",
    "private_redis",
    "redis_queue_length",
    "table_locked",
    "wait_until",
    "worker_child_pid",
]
