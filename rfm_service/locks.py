"""One calculation at a time, across processes and machines.

PostgreSQL: a session advisory lock on the connection that runs the
calculation. SQLite: an exclusive ``flock`` on a file beside the database.
Both are released by the operating system or the server when the holder
dies, so a crashed worker never blocks the next run.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, text

# "RFM" in ASCII; any constant shared by every process works.
ADVISORY_KEY = 0x52464D
_memory_lock = threading.Lock()  # an in-memory SQLite database lives in one process


def _sqlite_lock_path(conn: Connection) -> Path | None:
    database = conn.engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database + ".calculation.lock")


@contextmanager
def calculation_lock(conn: Connection) -> Iterator[bool]:
    """Try to take the lock for the life of the block; yields whether it did."""
    if conn.dialect.name == "postgresql":
        got = bool(
            conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
        )
        conn.commit()
        try:
            yield got
        finally:
            if got and not conn.closed and not conn.invalidated:
                try:
                    conn.rollback()
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                    conn.commit()
                except Exception:  # a broken connection has released it already
                    conn.invalidate()
        return
    path = _sqlite_lock_path(conn)
    if path is None:
        got = _memory_lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                _memory_lock.release()
        return
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            got = True
        except BlockingIOError:
            got = False
        try:
            yield got
        finally:
            if got:
                fcntl.flock(handle, fcntl.LOCK_UN)
