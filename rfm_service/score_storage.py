"""Where a run's score rows live, and how they are written and purged.

PostgreSQL: ``rfm_scores`` is partitioned by run id. A run creates a fresh
table from its rows (``CREATE TABLE ... AS``), builds the indexes once
afterwards (a sorted build costs a fraction of a million index insertions)
and attaches it as a partition; the run becomes current in the next
transaction (runs.py says why). ATTACH takes a SHARE UPDATE EXCLUSIVE lock on
the parent, which readers do not wait for.
Old runs are detached CONCURRENTLY and dropped, again without blocking reads.

SQLite: one plain table; rows are inserted and purged with DELETE.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    and_,
    delete,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from . import calculation
from .models import RFMPageMark, RFMScore
from .segments import Rule

PAGE_MARK_STEP = 1000  # a deep page skips fewer than this many rows

log = logging.getLogger(__name__)
_PARTITION = re.compile(r"^rfm_scores_r(\d+)$")


class SegmentKey(FunctionElement):
    """The segment index's segment key: ``hashtext(segment)`` on PostgreSQL,
    the segment itself elsewhere. An int4 key made the index build over a
    million rows 0.60 s instead of 0.93 s for the names themselves."""

    inherit_cache = True


@compiles(SegmentKey)
def _segment_as_is(element: SegmentKey, compiler: object, **kw: object) -> str:
    return compiler.process(element.clauses, **kw)  # type: ignore[attr-defined]


@compiles(SegmentKey, "postgresql")
def _segment_hashed(element: SegmentKey, compiler: object, **kw: object) -> str:
    return f"hashtext({compiler.process(element.clauses, **kw)})"  # type: ignore[attr-defined]


# The keys of a run's partition on PostgreSQL (migration 4e8d1c2b7f05):
# run_id is one constant there, so it never leads (it slowed every sort
# comparison of the index builds); a unique key must still hold it.
PRIMARY_KEY_COLUMNS = "customer_id, run_id"
# Not one packed bigint (hashtext << 32 | customer id), though its build is
# 0.15 s shorter at 1M rows: a segment becomes a range of that key, which the
# run's coarse histogram (statistics target 10) estimates at one row, and the
# transitions count of Lost -> Lost at 1M customers (43,000 on each side) ran
# as a nested loop over both segments, still running after 5 minutes.
# Equality on hashtext is estimated from its most common values.
SEGMENT_INDEX_KEYS = "hashtext(segment), customer_id"


def segment_is(column: ColumnElement[str], segment: str) -> ColumnElement[bool]:
    """``column = segment``, in the form the segment index serves: the key
    picks the index, the name itself settles a hash collision."""
    name = literal(segment, String())
    return and_(SegmentKey(column) == SegmentKey(name), column == name)


def partition_name(run_id: int) -> str:
    return f"rfm_scores_r{int(run_id)}"  # int(): only ever a run id, never user text


def write_scores(
    conn: Connection,
    run_id: int,
    rules: Sequence[Rule],
    as_of: dt.date,
    calculated_at: dt.datetime,
) -> int:
    """Write the run's rows, visible through ``rfm_scores`` to this
    transaction only until it commits; returns the number written."""
    if conn.dialect.name != "postgresql":
        written = calculation.insert_scores(conn, run_id, rules, as_of, calculated_at)
        _refuse_oversized_monetary(conn, run_id, as_of)
    else:
        written = _write_partition(conn, int(run_id), rules, as_of, calculated_at)
    _write_page_marks(conn, run_id)
    return written


def _refuse_oversized_monetary(conn: Connection, run_id: int, as_of: dt.date) -> None:
    """SQLite keeps any number in a NUMERIC column: refuse the totals that
    PostgreSQL's NUMERIC(14,2) refuses, so both fail alike (runs.py words
    PostgreSQL's refusal the same way)."""
    limit = calculation.MONETARY_LIMIT_CENTS / 100  # exact as a float: 14 digits
    oversized = select(RFMScore.customer_id).where(
        RFMScore.run_id == run_id, RFMScore.monetary > literal(limit)
    )
    if conn.execute(oversized.limit(1)).first() is not None:
        overflow = calculation.monetary_overflow(conn, as_of)
        raise overflow or calculation.MonetaryOverflow("a monetary total is too large")


def _write_page_marks(conn: Connection, run_id: int) -> None:
    marked = select(
        RFMScore.run_id,
        (RFMScore.position - 1) // PAGE_MARK_STEP,
        RFMScore.customer_id,
    ).where(RFMScore.run_id == run_id, (RFMScore.position - 1) % PAGE_MARK_STEP == 0)
    conn.execute(insert(RFMPageMark).from_select(["run_id", "mark", "customer_id"], marked))


def page_start(run_id: int, offset: int) -> tuple[object, int]:
    """Where a page at ``offset`` of the customer-id order begins: a scalar
    subquery for the nearest marked customer id at or before it, and how many
    rows to skip from there (always < PAGE_MARK_STEP)."""
    mark = offset // PAGE_MARK_STEP
    start = (
        select(RFMPageMark.customer_id)
        .where(RFMPageMark.run_id == run_id, RFMPageMark.mark == mark)
        .scalar_subquery()
    )
    return start, offset - mark * PAGE_MARK_STEP


# The parent's columns in order (type, collation, NOT NULL) and its CHECK
# constraints: a partition must carry the same, or ATTACH refuses it.
_PARENT_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), coll.collname, a.attnotnull
FROM pg_attribute a LEFT JOIN pg_collation coll ON coll.oid = a.attcollation
WHERE a.attrelid = 'rfm_scores'::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_PARENT_CHECKS = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = 'rfm_scores'::regclass AND contype = 'c' ORDER BY conname
"""


def _write_partition(
    conn: Connection,
    run_id: int,
    rules: Sequence[Rule],
    as_of: dt.date,
    calculated_at: dt.datetime,
) -> int:
    """Create the run's table from the scoring statement (``CREATE TABLE ...
    AS``, which PostgreSQL may run in parallel, where it never parallelises
    ``INSERT ... SELECT``), give it the parent's NOT NULLs and CHECKs in one
    ALTER (one pass over the rows checks them all), build its keys and
    attach it."""
    name = partition_name(run_id)
    quote = conn.dialect.identifier_preparer.quote
    parent = conn.execute(text(_PARENT_COLUMNS)).all()
    columns = [
        (quote(col), type_sql, quote(collation) if collation else None)
        for col, type_sql, collation, _ in parent
    ]
    written = calculation.create_scores_table(
        conn, name, columns, run_id, rules, as_of, calculated_at
    )
    checks = conn.execute(text(_PARENT_CHECKS)).all()
    alter = [f"ALTER COLUMN {quote(col)} SET NOT NULL" for col, *_, notnull in parent if notnull]
    alter += [f"ADD CONSTRAINT {quote(check)} {definition}" for check, definition in checks]
    # Declared before ATTACH, so ATTACH needs no validation scan of its own.
    alter.append(f"ADD CONSTRAINT {name}_run CHECK (run_id = {run_id})")
    conn.execute(text(f"ALTER TABLE {name} " + ", ".join(alter)))
    # The same indexes as the parent's, so ATTACH adopts them instead of building.
    for statement in (
        f"ALTER TABLE {name} ADD CONSTRAINT {name}_pkey PRIMARY KEY ({PRIMARY_KEY_COLUMNS})",
        f"CREATE INDEX {name}_segment ON {name} ({SEGMENT_INDEX_KEYS})",
        f"ALTER TABLE rfm_scores ATTACH PARTITION {name} FOR VALUES IN ({run_id})",
        # Planner statistics now, not when autovacuum gets round to it, from
        # 3,000 sampled rows (target 10) instead of 30,000: enough for a
        # dozen segments' shares and the keys' ranges, and at 1M customers
        # 0.03 s instead of 0.21-0.32 s.
        "SET LOCAL default_statistics_target = 10",
        f"ANALYZE {name}",
    ):
        conn.execute(text(statement))
    return written


def purge_before(engine: Engine, conn: Connection, oldest_kept: int) -> None:
    """Remove score rows of runs older than ``oldest_kept``."""
    conn.execute(delete(RFMPageMark).where(RFMPageMark.run_id < oldest_kept))
    if conn.dialect.name != "postgresql":
        conn.execute(delete(RFMScore).where(RFMScore.run_id < oldest_kept))
        conn.commit()
        return
    # Every run's table, attached or not: one an earlier purge detached but
    # could not drop is dropped now.
    partitions = run_table_names(conn)
    old = sorted(
        int(m.group(1))
        for m in map(_PARTITION.match, partitions)
        if m and int(m.group(1)) < oldest_kept
    )
    conn.commit()
    _drop_partitions(engine, old)


def run_table_names(conn: Connection) -> list[str]:
    """Every run's table in the schema (PostgreSQL), attached or not."""
    return list(
        conn.execute(
            text(
                "SELECT relname FROM pg_class WHERE relkind = 'r' "
                "AND relnamespace = current_schema()::regnamespace "
                "AND relname ~ '^rfm_scores_r[0-9]+$'"
            )
        ).scalars()
    )


def discard_scores(engine: Engine, conn: Connection, run_id: int) -> None:
    """Remove whatever rows a run that is not current left behind (a failed
    attempt, or one that died between writing and becoming current)."""
    conn.execute(delete(RFMPageMark).where(RFMPageMark.run_id == run_id))
    if conn.dialect.name != "postgresql":
        conn.execute(delete(RFMScore).where(RFMScore.run_id == run_id))
        conn.commit()
        return
    exists = conn.execute(
        text("SELECT to_regclass(:name) IS NOT NULL"), {"name": partition_name(run_id)}
    ).scalar()
    conn.commit()
    if exists:
        _drop_partitions(engine, [run_id])


# How long a purge waits for readers of a partition it detaches or drops.
# A reader that outlasts it (a long export) leaves the detach pending; the
# next purge finishes it.
DROP_LOCK_TIMEOUT = "5s"


def _drop_partitions(engine: Engine, run_ids: Sequence[int]) -> None:
    if not run_ids:
        return
    # DETACH ... CONCURRENTLY cannot run inside a transaction block.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as auto:
        # Session-wide (autocommit has no transaction to scope it to), so it
        # is reset before the connection goes back to the pool: left set, the
        # next calculation on it gave up on any lock after 5 s.
        auto.execute(text("SELECT set_config('lock_timeout', :t, false)"), {"t": DROP_LOCK_TIMEOUT})
        try:
            _drop_each(auto, run_ids)
        finally:
            if not auto.invalidated:
                auto.execute(text("RESET lock_timeout"))


def _drop_each(auto: Connection, run_ids: Sequence[int]) -> None:
    for run_id in run_ids:
        name = partition_name(run_id)
        try:
            # NULL: not a partition (never attached, or detached already).
            pending = auto.execute(
                text("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(:n)"),
                {"n": name},
            ).scalar()
            if pending is not None:
                # A detach that timed out stays pending, and a second
                # CONCURRENTLY is refused: FINALIZE completes it.
                how = "FINALIZE" if pending else "CONCURRENTLY"
                auto.execute(text(f"ALTER TABLE rfm_scores DETACH PARTITION {name} {how}"))
            auto.execute(text(f"DROP TABLE {name}"))
        except Exception as exc:  # retried later (purge); never fails a run
            log.warning("could not drop the scores of run %s: %s", run_id, exc)
