"""The stack a soak runs against, production-like: a PostgreSQL database of
its own on the local server, seeded demo data, API tokens, one Celery worker
on a queue of its own on the local Redis, and gunicorn with two workers of four threads.

``Stack`` is a context manager: whatever it started or created (processes,
the database, the queue's Redis keys, the log directory unless asked to keep
it) is gone when it exits, also after an error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv that runs the soak has flask, celery, gunicorn
# The developer's settings must not leak into the stack.
_SCRUBBED_PREFIXES = ("RFM_", "FLASK_", "CELERY_", "FLOWER_")
_SCRUBBED = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: a child gets SIGTERM if the soak itself is killed, so no
    # gunicorn or worker outlives it even then.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, grace: float) -> None:
        """SIGTERM (gunicorn and Celery shut down warm), then SIGKILL the group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@dataclass
class Stack:
    pg_admin_url: str
    redis_url: str
    customers: int
    seed: int
    keep_logs: bool = False
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    processes: list[Process] = field(default_factory=list)
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rfm-soak-")))
    base_url: str = ""
    read_token: str = ""
    write_token: str = ""
    _database_created: bool = False

    @property
    def database(self) -> str:
        return f"rfm_soak_{self.tag}"

    @property
    def queue(self) -> str:
        return f"rfm-soak-{self.tag}"

    @property
    def database_url(self) -> str:
        url = sa.make_url(self.pg_admin_url).set(database=self.database)
        return url.render_as_string(hide_password=False)

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED
        }
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            RFM_PROFILE="production",
            SECRET_KEY=secrets.token_urlsafe(24),
            RFM_EXECUTOR="celery",
            RFM_TASK_QUEUE=self.queue,
            FLASK_APP="wsgi",
            PYTHONUNBUFFERED="1",
        )
        return env

    # -- building it -------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self._build()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _build(self) -> None:
        self._check_redis()
        admin = sa.create_engine(self.pg_admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self.database}"'))
        finally:
            admin.dispose()
        self._database_created = True
        print(f"soak: database {self.database}, queue {self.queue}, logs {self.log_dir}")
        self.flask("db", "upgrade")
        started = time.monotonic()
        self.flask("seed-demo", "--customers", str(self.customers), "--seed", str(self.seed))
        print(f"soak: seeded {self.customers} customers in {time.monotonic() - started:.0f} s")
        # The token is stdout's last line (notes go to stderr).
        self.read_token = self.flask("create-api-token", "--name", "soak-read", "--scope", "read")
        self.read_token = self.read_token.splitlines()[-1]
        self.write_token = self.flask(
            "create-api-token", "--name", "soak-write", "--scope", "write"
        ).splitlines()[-1]
        node = f"{self.queue}@{socket.gethostname()}"
        worker = self.start(
            "worker",
            "celery", "-A", "worker", "worker", "--loglevel", "INFO", "--concurrency", "1",
            "-Q", self.queue, "-n", node, "--without-mingle", "--without-gossip",
        )  # fmt: skip
        port = free_port()
        web = self.start("gunicorn", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                         "--threads", "4", "--no-control-socket", "--preload",
                         "wsgi:app")  # fmt: skip  # as README's full stack
        self.base_url = f"http://127.0.0.1:{port}"
        self._wait("the worker to be ready", worker, lambda: "ready." in worker.tail(200))
        self._wait("gunicorn to answer /readyz", web, self._ready)

    def _check_redis(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise StackError(f"Redis at {self.redis_url} is not reachable: {exc}") from None
        finally:
            client.close()

    def flask(self, *args: str, timeout: float = 900) -> str:
        """A ``flask`` command against the soak database; its stdout."""
        done = subprocess.run(
            [str(BIN / "flask"), *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise StackError(f"flask {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout.strip()

    def start(self, name: str, executable: str, *args: str) -> Process:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(BIN / executable), *args],
                cwd=ROOT,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stopped with its children
                preexec_fn=_die_with_parent,
            )
        process = Process(name, proc, log_path)
        self.processes.append(process)
        return process

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    @staticmethod
    def _wait(what: str, process: Process, probe: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if process.proc.poll() is not None:
                raise StackError(f"{process.name} exited while waiting for {what}:\n"
                                 f"{process.tail()}")  # fmt: skip
            if time.monotonic() > deadline:
                raise StackError(f"no {what} within {timeout} s:\n{process.tail()}")
            time.sleep(0.2)

    # -- taking it down -----------------------------------------------------------------

    def __exit__(self, *_exc: object) -> None:
        for process in reversed(self.processes):  # web first, then the worker
            process.stop(grace=20 if process.name == "worker" else 10)
        self.processes.clear()
        if self._database_created:
            admin = sa.create_engine(self.pg_admin_url, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
            finally:
                admin.dispose()
            self._database_created = False
        self._drop_queue_keys()
        if self.keep_logs:
            print(f"soak: logs kept in {self.log_dir}")
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def _drop_queue_keys(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=5)
        with contextlib.suppress(redis.RedisError):
            keys = list(client.scan_iter(match=f"*{self.queue}*", count=1000))
            if keys:
                client.delete(*keys)
        client.close()

    def log_tails(self) -> str:
        return "\n\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.processes)
