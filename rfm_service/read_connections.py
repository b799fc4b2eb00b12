"""One PostgreSQL connection per server thread, outside SQLAlchemy's pool,
for the hottest read: ``GET /api/rfm/{id}/`` (issue #4).

Under gunicorn's threads, taking a connection from the pool and giving it
back cost that endpoint a large share of its throughput. Measured at 1M
customers, 2 workers × 4 threads, three interleaved 8 s rounds of wrk:
2,325–2,403 req/s through the pool against 2,483–2,976 on each thread's own
connection.

So each thread keeps one connection in autocommit, with the statement
prepared on it. The engine opens it, with the pool's own connect arguments
and events; it is then detached from the pool, so it takes none of the
pool's slots. Any error closes it: the caller answers through the pool
instead (which maps the error, 503 when the database is down), and the
thread's next request opens a new one. A thread's connection ends with the
thread, disposing of the engine closes them all, and a forked process never
reuses its parent's.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import PoolProxiedConnection


class ThreadConnections:
    """Per-thread connections of ``engine`` (psycopg2), each with the
    statement ``prepare`` prepared once."""

    def __init__(self, engine: Engine, prepare: str) -> None:
        self._engine = engine
        self._prepare = prepare
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every live thread's, for dispose. Weak: a thread that ends (a server
        # that starts one per request) takes its connection with it, closed
        # by the driver when nothing refers to it any more.
        self._open: weakref.WeakSet[PoolProxiedConnection] = weakref.WeakSet()
        event.listen(engine, "engine_disposed", lambda _engine: self.close_all())
        # A forked child must not use its parent's connections (one socket,
        # two processes): it forgets them and opens its own. Forgetting is
        # safe: psycopg2 does not close a connection another process opened
        # when it frees it.
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (found := me()) is not None and found._forked())

    def fetch_one(self, statement: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        """The first row of ``statement`` on this thread's connection (None
        if it has none or returns no rows). Raises the driver's error after
        closing the connection."""
        conn = self._connection()
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement, params)
                return cursor.fetchone() if cursor.description else None
        except Exception:
            self._close(conn)
            raise

    def close_all(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), weakref.WeakSet()
            self._local = threading.local()
        for conn in conns:
            _close_quietly(conn)

    def _forked(self) -> None:
        self._open = weakref.WeakSet()
        self._local = threading.local()
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def _connection(self) -> PoolProxiedConnection:
        local = self._local
        conn: PoolProxiedConnection | None = getattr(local, "conn", None)
        if conn is not None:
            return conn
        conn = self._engine.raw_connection()
        conn.detach()
        try:
            conn.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            with conn.cursor() as cursor:
                cursor.execute(self._prepare)
        except Exception:
            _close_quietly(conn)
            raise
        local.conn = conn
        with self._lock:
            self._open.add(conn)
        return conn

    def _close(self, conn: PoolProxiedConnection) -> None:
        self._local.conn = None
        with self._lock:
            self._open.discard(conn)
        _close_quietly(conn)


def _close_quietly(conn: PoolProxiedConnection) -> None:
    # Closing a broken connection can fail too; it is gone either way.
    with contextlib.suppress(Exception):
        conn.close()
