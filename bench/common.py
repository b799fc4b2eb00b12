"""Shared plumbing: paths, the environment of every subprocess, timed
subprocesses with their peak memory, and PostgreSQL administration."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = BENCH / "data"  # scratch (CSV files, raw results); git-ignored
BIN = Path(sys.executable).parent  # the venv running the benchmark
PG_SERVER = os.environ.get("RFM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")

_started = time.monotonic()
_children: set[int] = set()  # process groups of running subprocesses


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - _started:7.1f}s] {message}", flush=True)


def db_url(database: str) -> str:
    return f"{PG_SERVER}/{database}"


def service_env(database: str, **extra: str) -> dict[str, str]:
    """What every project subprocess gets (and nothing from a caller's
    RFM_* settings: the benchmark measures the defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    env.pop("DATABASE_URL", None)
    env.update(
        FLASK_APP="wsgi",
        DATABASE_URL=db_url(database),
        RFM_PROFILE="embedded",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


@dataclasses.dataclass(frozen=True)
class Measured:
    seconds: float
    max_rss_kb: int
    stdout: str
    stderr: str


class SubprocessFailed(RuntimeError):
    pass


def run_measured(
    cmd: Sequence[str], env: dict[str, str], timeout: float, what: str | None = None
) -> Measured:
    """Run ``cmd`` to completion: wall time and the peak resident memory of
    that process alone (``wait4`` reports the child's own rusage). Killed,
    with its process group, after ``timeout`` seconds."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True
        )
        _children.add(proc.pid)
        timer = threading.Timer(timeout, _kill_group, args=(proc.pid,))
        timer.daemon = True
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: the child must not outlive us
            _kill_group(proc.pid)
            os.waitpid(proc.pid, 0)
            raise
        finally:
            timer.cancel()
            _children.discard(proc.pid)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        tail = (stderr.strip() or stdout.strip())[-2000:]
        raise SubprocessFailed(
            f"{what or cmd[0]} exited with {proc.returncode} after {seconds:.1f} s "
            f"(limit {timeout:.0f} s): {tail}"
        )
    return Measured(seconds, usage.ru_maxrss, stdout, stderr)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def kill_children() -> None:
    """Stop every subprocess still running (for an interrupted benchmark)."""
    for pid in list(_children):
        _kill_group(pid)


def flask(*args: str) -> list[str]:
    return [str(BIN / "flask"), *args]


def run_flask(database: str, *args: str, timeout: float = 600) -> Measured:
    return run_measured(flask(*args), service_env(database), timeout, f"flask {args[0]}")


@contextlib.contextmanager
def connect(database: str, autocommit: bool = True) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(db_url(database), connect_timeout=10)
    conn.autocommit = autocommit
    try:
        yield conn
    finally:
        conn.close()


def query(database: str, sql: str, params: Sequence | None = None) -> list[tuple]:
    with connect(database) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def execute(database: str, *statements: str) -> None:
    with connect(database) as conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def database_exists(name: str) -> bool:
    return bool(query("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", [name]))


def settle() -> None:
    """A CHECKPOINT before a timed measurement, so that none pays for
    writing out what the one before it left dirty (back to back without
    it, one calculation at 1M customers took 10.9-16.2 s; with it,
    10.0-11.9 s). Measurements that write a lot still pay for the
    checkpoints their own writing triggers."""
    execute("postgres", "CHECKPOINT")


def recreate_database(name: str) -> None:
    execute(
        "postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
    )
