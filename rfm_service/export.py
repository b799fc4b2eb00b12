"""CSV export of a run's scores in constant memory.

Rows come off a server-side cursor (``stream_results`` + ``yield_per``:
psycopg2 fetches a named cursor's rows ``chunk_rows`` at a time; SQLite's
cursor is lazy anyway) and leave as CSV text one chunk at a time, so a
million customers never sit in Python at once. Columns are the score
object of SPEC §4, in its order; ``monetary`` has two decimals and
``calculated_at`` is ISO 8601 UTC with a ``Z``, as the API renders them.
Lines end in CRLF (RFC 4180).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, select

from .models import SCORE_FIELDS, RFMScore
from .score_storage import segment_is
from .segments import slugify

scores = RFMScore.__table__
COLUMNS = SCORE_FIELDS
CHUNK_ROWS = 2000
# calculated_at is one value per run (bound once in the INSERT): read it once,
# not converted a million times.
_STREAMED = [scores.c[name] for name in COLUMNS if name not in ("rfm_score", "calculated_at")]


def content_disposition(name: str) -> str:
    """An attachment header for ``name``: HTTP headers are Latin-1, so a
    name beyond ASCII goes in ``filename*`` (RFC 6266), with an ASCII
    ``filename`` for clients that do not read it."""
    plain = "".join(c if c.isascii() else "_" for c in name)
    header = f'attachment; filename="{plain}"'
    return header if plain == name else f"{header}; filename*=UTF-8''{quote(name)}"


def filename(run_id: int, as_of: dt.date, segment: str | None) -> str:
    """A safe download name, e.g. ``rfm-scores-2026-01-31-run-7-at-risk.csv``
    (letters of any script stay: see ``content_disposition``). The segment
    as its slug, the form the API also takes; a name of punctuation only has
    none and adds nothing."""
    slug = slugify(segment) if segment else ""
    suffix = f"-{slug}" if slug else ""
    return f"rfm-scores-{as_of.isoformat()}-run-{run_id}{suffix}.csv"


def _timestamp(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _rows_query(run_id: int, segment: str | None) -> Any:
    query = select(*_STREAMED).where(scores.c.run_id == run_id)
    if segment is not None:
        query = query.where(segment_is(scores.c.segment, segment))
    # Both orders follow an index: the primary key, or the segment index.
    return query.order_by(scores.c.customer_id)


def write_csv(
    conn: Connection,
    run_id: int,
    segment: str | None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """CSV text of the run's scores (header first), ``chunk_rows`` rows per
    piece, read from a server-side cursor on ``conn``; ``progress`` gets
    each piece's row count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield buffer.getvalue()
    stamp = _timestamp(
        conn.execute(
            select(scores.c.calculated_at).where(scores.c.run_id == run_id).limit(1)
        ).scalar()
    )
    result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
        _rows_query(run_id, segment)
    )
    for part in result.partitions():
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(
            (c, days, n, f"{money:.2f}", r, f, m, f"{r}{f}{m}", name, stamp)
            for c, days, n, money, r, f, m, name in part
        )
        if progress is not None:
            progress(len(part))
        yield buffer.getvalue()


def stream_csv(
    engine: Engine,
    run_id: int,
    segment: str | None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """``write_csv`` on a connection of its own, held only while iterating and
    released when the consumer stops (a closed HTTP response included)."""
    with engine.connect() as conn:
        try:
            yield from write_csv(conn, run_id, segment, chunk_rows, progress)
        finally:
            conn.rollback()
