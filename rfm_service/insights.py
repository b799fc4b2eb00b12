"""Insights over stored runs: segment movement between two runs, the R x F
grid, and how many customers a dry run would move.

Plain functions over a ``Connection``. Every figure is computed in the
database (GROUP BY over a join of two runs' rows); only aggregates, or one
page of customers, come back to Python. Inputs reach SQL as bound
parameters only.

Movement compares two succeeded runs whose score rows are still kept
(``RFM_KEEP_RUNS``). A customer scored in only one of them enters from, or
leaves to, the pseudo-segment ``NONE`` ("(none)"): a customer whose first
order falls between the two runs' ``as_of`` dates enters from "(none)";
one no longer counted (e.g. a run with an earlier ``as_of``) leaves to it.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    String,
    and_,
    bindparam,
    cast,
    exists,
    false,
    func,
    literal,
    null,
    select,
    text,
    union_all,
)

from . import calculation, runs
from .calculation import money
from .models import RFMRun, RFMScore
from .score_storage import segment_is
from .segments import Rule, resolve_segment, segment_names, slugify
from .timeutil import UTCDateTime

NONE = "(none)"  # the pseudo-segment of a customer absent from one of the two runs
MEMO_SIZE = 64
T = TypeVar("T")
run_table = RFMRun.__table__
scores = RFMScore.__table__
SIDE_COLUMNS = (
    "recency_days",
    "frequency",
    "monetary",
    "recency_score",
    "frequency_score",
    "monetary_score",
    "segment",
)


class InsightError(ValueError):
    """A request that cannot be answered as asked; the message says why (400)."""


class NothingToCompare(LookupError):
    """No default run to show (no succeeded run, or no earlier one) (404)."""


@dataclass(frozen=True)
class RunRef:
    id: int
    as_of: dt.date
    customers_scored: int
    finished_at: dt.datetime | None


def _ref(row: Any) -> RunRef:
    return RunRef(row.id, row.as_of, int(row.customers_scored or 0), row.finished_at)


_REF_COLUMNS = (
    run_table.c.id,
    run_table.c.as_of,
    run_table.c.customers_scored,
    run_table.c.finished_at,
)


_memo: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_memo_lock = threading.Lock()


def _memo_key(conn: Connection, key: tuple[Any, ...]) -> tuple[Any, ...]:
    return (conn.engine.url.render_as_string(hide_password=True), *key)


def memoized(conn: Connection, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
    """A succeeded run's rows never change, so an aggregate over them is
    computed once per process. ``key`` holds each run's id and finish time
    (ids alone repeat across databases, or after a test empties the tables);
    callers get a copy they may change."""
    key = _memo_key(conn, key)
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return copy.deepcopy(_memo[key])
    value = compute()
    with _memo_lock:
        _memo[key] = value
        while len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)
    return copy.deepcopy(value)


def _no_jit(conn: Connection) -> None:
    """PostgreSQL's JIT spends over a second compiling these million-row
    aggregates (the planner overestimates the join), more than they take to
    run; off for this transaction only."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT set_config('jit', 'off', true)"))


@contextmanager
def _no_nested_loop(conn: Connection) -> Iterator[None]:
    """PostgreSQL joins two runs' rows by a nested loop of index probes (it
    overestimates the join by three orders of magnitude): 2.7 s of the 3.1 s
    a cold movement matrix took at 950,000 customers, against 1.6 s in all
    with the hash join it takes instead. Set for the one statement, then
    restored: other reads of the transaction keep their plans."""
    if conn.dialect.name != "postgresql":
        yield
        return
    before = conn.execute(text("SELECT current_setting('enable_nestloop')")).scalar()
    conn.execute(text("SELECT set_config('enable_nestloop', 'off', true)"))
    yield  # a failed statement ends the transaction, and the setting with it
    conn.execute(text("SELECT set_config('enable_nestloop', :v, true)"), {"v": before})


def has_scores(conn: Connection, run: RunRef) -> bool:
    """Whether the run's score rows are still kept (not purged). One index
    probe; a run that scored nobody has nothing to purge."""
    if run.customers_scored == 0:
        return True
    probe = select(scores.c.customer_id).where(scores.c.run_id == run.id).limit(1)
    return conn.execute(probe).first() is not None


def current_run(conn: Connection) -> RunRef | None:
    found = current_run_segments(conn)
    return found[0] if found else None


def current_run_segments(conn: Connection) -> tuple[RunRef, dict[str, int] | None] | None:
    """The current run and its stored segment counts, which name every
    segment of the rule file it was calculated with; one read."""
    row = conn.execute(
        select(*_REF_COLUMNS, run_table.c.segment_counts).where(run_table.c.is_current.is_(True))
    ).first()
    return (_ref(row), row.segment_counts) if row else None


def run_with_scores(conn: Connection, run_id: int, role: str = "run") -> RunRef:
    """A succeeded run whose rows are kept, or ``InsightError`` saying why not."""
    return _ref(kept_run_row(conn, run_id, role))


def kept_run_row(conn: Connection, run_id: int, role: str, *columns: Any) -> Any:
    """Run ``run_id``'s row (its reference columns and ``columns``) if it
    succeeded and its rows are kept, or ``InsightError`` saying why not."""
    row = conn.execute(
        select(*_REF_COLUMNS, run_table.c.status, *columns).where(run_table.c.id == run_id)
    ).first()
    if row is None:
        raise InsightError(f"{role}: no calculation run {run_id}")
    if row.status != "succeeded":
        raise InsightError(f"{role}: run {run_id} is {row.status}; only succeeded runs have scores")
    if not has_scores(conn, _ref(row)):
        raise InsightError(
            f"{role}: the scores of run {run_id} were purged (only the newest "
            "RFM_KEEP_RUNS succeeded runs keep them)"
        )
    return row


def previous_run(conn: Connection, before: int) -> RunRef | None:
    """The newest succeeded run older than run ``before`` whose rows are kept."""
    candidates = conn.execute(
        select(*_REF_COLUMNS)
        .where(run_table.c.status == "succeeded", run_table.c.id < before)
        .order_by(run_table.c.id.desc())
        .limit(50)  # purged runs are the oldest: the first candidate almost always has rows
    ).all()
    for row in candidates:
        run = _ref(row)
        if has_scores(conn, run):
            return run
    return None


def resolve_pair(
    conn: Connection, from_run: int | None, to_run: int | None
) -> tuple[RunRef, RunRef]:
    """The two runs to compare; defaults: the current run, and the previous
    succeeded run (by id, i.e. calculation order) before the ``to`` run."""
    if to_run is None:
        to = current_run(conn)
        if to is None:
            raise NothingToCompare("no calculation has succeeded yet")
    else:
        to = run_with_scores(conn, to_run, "to_run")
    if from_run is None:
        before = previous_run(conn, to.id)
        if before is None:
            raise NothingToCompare(
                f"no earlier succeeded run with kept scores to compare run {to.id} with; "
                "pass from_run"
            )
    else:
        before = run_with_scores(conn, from_run, "from_run")
    return before, to


def check_segment(
    rules: Sequence[Rule], text_value: str, role: str, also: Iterable[str] = ()
) -> str:
    """A segment name (any case or slug) or the pseudo-segment "(none)" (or
    "none", unless a real segment is called that). ``also``: names valid
    besides the rule table's, such as those of the runs compared when a rule
    file changed in between (the matrix lists them, with links)."""
    wanted = text_value.strip().lower()
    name = None if wanted == NONE else resolve_segment(rules, text_value)
    if name is None and wanted:
        name = next((s for s in also if wanted in (s.lower(), slugify(s)) and s != NONE), None)
    if name is None and wanted in (NONE, slugify(NONE)):
        return NONE
    if name is None:
        names = segment_names(rules)
        extra = sorted(set(also) - set(names) - {NONE})
        raise InsightError(
            f"{role}: unknown segment {text_value!r}; valid: {', '.join([*names, *extra, NONE])}"
        )
    return name


def pair_segment(
    conn: Connection, rules: Sequence[Rule], before: RunRef, after: RunRef, text: str, role: str
) -> str:
    """``check_segment`` for a cell of the pair's matrix: a name the rule table
    no longer has is valid if either run has it (the matrix links it)."""
    try:
        return check_segment(rules, text, role)
    except InsightError:  # only then the pair's segments, from the cached matrix
        seen = {s for pair in cached_transition_counts(conn, before, after) for s in pair}
        return check_segment(rules, text, role, seen)


# -- movement -------------------------------------------------------------------


def _pair(from_id: int, to_id: int):
    a, b = scores.alias("a"), scores.alias("b")
    joined = and_(b.c.run_id == to_id, b.c.customer_id == a.c.customer_id)
    in_from = exists().where(a.c.run_id == from_id, a.c.customer_id == b.c.customer_id)
    return a, b, joined, in_from


def transition_counts(conn: Connection, from_id: int, to_id: int) -> dict[tuple[str, str], int]:
    """``{(from_segment, to_segment): customers}`` over both runs' customers,
    ``NONE`` standing for "not scored in that run". One grouped statement:
    the from-run's rows left-joined to the to-run's, plus the to-run's rows
    with no partner (an anti-join), so it needs no FULL JOIN."""
    _no_jit(conn)
    a, b, joined, in_from = _pair(from_id, to_id)
    none = literal(NONE, String)
    stayed_or_left = (
        select(a.c.segment, func.coalesce(b.c.segment, none), func.count())
        .select_from(a.outerjoin(b, joined))
        .where(a.c.run_id == from_id)
        .group_by(a.c.segment, b.c.segment)
    )
    entered = (
        select(none, b.c.segment, func.count())
        .where(b.c.run_id == to_id, ~in_from)
        .group_by(b.c.segment)
    )
    with _no_nested_loop(conn):
        rows = conn.execute(union_all(stayed_or_left, entered)).all()
    counts: dict[tuple[str, str], int] = {}
    for source, target, n in rows:
        counts[(source, target)] = counts.get((source, target), 0) + int(n)
    return counts


def movement(counts: dict[tuple[str, str], int], rules: Sequence[Rule]) -> dict[str, Any]:
    """The matrix and per-segment totals from ``transition_counts`` (no SQL).

    ``entered[S]``: customers in S in the later run who were not in S in the
    earlier one (from another segment or from "(none)"); ``left[S]`` the
    reverse; ``stayed[S]`` the diagonal."""
    names = [*segment_names(rules), NONE]
    extra = sorted({s for pair in counts for s in pair} - set(names))
    names = [*names[:-1], *extra, NONE]  # a segment a changed rule file no longer has
    matrix = [[counts.get((f, t), 0) for t in names] for f in names]
    per_segment = []
    for i, name in enumerate(names[:-1]):
        row_total = sum(matrix[i])
        column_total = sum(r[i] for r in matrix)
        stayed = matrix[i][i]
        per_segment.append(
            {
                "segment": name,
                "from_customers": row_total,
                "to_customers": column_total,
                "stayed": stayed,
                "entered": column_total - stayed,
                "left": row_total - stayed,
            }
        )
    last = len(names) - 1
    new = sum(matrix[last])
    gone = sum(r[last] for r in matrix)
    unchanged = sum(matrix[i][i] for i in range(last))
    both = sum(sum(r[:last]) for r in matrix[:last])
    return {
        "segments": names,
        "matrix": matrix,
        "per_segment": per_segment,
        "totals": {
            "in_both_runs": both,
            "unchanged": unchanged,
            "changed_segment": both - unchanged,
            "entered": new,
            "left": gone,
        },
    }


def _transition_query(from_id: int, to_id: int, source: str, target: str, columns: Sequence[Any]):
    """SELECT ``columns`` over the customers moving ``source`` -> ``target``."""
    a, b, joined, in_from = _pair(from_id, to_id)
    if source == NONE and target == NONE:
        return select(*columns(a, None)).where(false())  # nobody is in neither run
    if source == NONE:
        return (
            select(*columns(None, b))
            .select_from(b)
            .where(b.c.run_id == to_id, segment_is(b.c.segment, target), ~in_from)
        )
    if target == NONE:
        in_to = exists().where(b.c.run_id == to_id, b.c.customer_id == a.c.customer_id)
        return (
            select(*columns(a, None))
            .select_from(a)
            .where(a.c.run_id == from_id, segment_is(a.c.segment, source), ~in_to)
        )
    return (
        select(*columns(a, b))
        .select_from(a.join(b, joined))
        .where(
            a.c.run_id == from_id, segment_is(a.c.segment, source), segment_is(b.c.segment, target)
        )
    )


def transition_count(conn: Connection, from_id: int, to_id: int, source: str, target: str) -> int:
    query = _transition_query(from_id, to_id, source, target, lambda a, b: [func.count()])
    return int(conn.execute(query).scalar_one())


def _side(alias: Any, prefix: str) -> list[Any]:
    if alias is None:
        return [null().label(f"{prefix}_{name}") for name in SIDE_COLUMNS]
    return [alias.c[name].label(f"{prefix}_{name}") for name in SIDE_COLUMNS]


def transition_customers(
    conn: Connection,
    from_id: int,
    to_id: int,
    source: str,
    target: str,
    *,
    offset: int,
    limit: int,
    total: int | None = None,
) -> list[dict[str, Any]]:
    """One page (by customer id) of the customers moving ``source`` -> ``target``,
    each with both runs' scores (``None`` for the side it is absent from).
    ``total``, the cell's customers, lets a page in the second half be read
    from the far end (descending ids), so no page skips more than half the
    cell: the last page of Others -> Others at 1M customers took 1.2-1.7 s."""

    def columns(a: Any, b: Any) -> list[Any]:
        customer = (a if a is not None else b).c.customer_id
        return [customer.label("customer_id"), *_side(a, "from"), *_side(b, "to")]

    query = _transition_query(from_id, to_id, source, target, columns)
    after = None if total is None else total - offset - limit  # customers after the page
    reverse = after is not None and after < offset
    if reverse and total is not None and after is not None:
        offset, limit = max(after, 0), min(limit, total - offset)
    key = query.selected_columns[0]
    query = query.order_by(key.desc() if reverse else key).offset(offset).limit(limit)
    rows = list(conn.execute(query).mappings())
    result = []
    for row in rows[::-1] if reverse else rows:
        item: dict[str, Any] = {"customer_id": row["customer_id"]}
        for prefix in ("from", "to"):
            side = {name: row[f"{prefix}_{name}"] for name in SIDE_COLUMNS}
            item[prefix] = None if side["segment"] is None else side
        result.append(item)
    return result


# -- R x F grid -------------------------------------------------------------------

_CENTS = cast(func.round(scores.c.monetary * 100), BigInteger)  # exact on both dialects


def rf_grid(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    """25 cells (R 5..1 by F 1..5): customers, revenue and mean monetary."""
    _no_jit(conn)
    rows = conn.execute(
        select(scores.c.recency_score, scores.c.frequency_score, func.count(), func.sum(_CENTS))
        .where(scores.c.run_id == run_id)
        .group_by(scores.c.recency_score, scores.c.frequency_score)
    ).all()
    found = {(int(r), int(f)): (int(n), int(total)) for r, f, n, total in rows}
    cells = []
    for r in range(5, 0, -1):
        for f in range(1, 6):
            n, total = found.get((r, f), (0, 0))
            cells.append(
                {
                    "recency_score": r,
                    "frequency_score": f,
                    "customers": n,
                    "revenue": money(total),
                    "mean_monetary": money(round(total / n)) if n else None,
                }
            )
    return cells


def cached_transition_counts(
    conn: Connection, before: RunRef, after: RunRef
) -> dict[tuple[str, str], int]:
    key = _transitions_key(before, after)
    return memoized(conn, key, lambda: transition_counts(conn, before.id, after.id))


def cell_count(conn: Connection, before: RunRef, after: RunRef, source: str, target: str) -> int:
    """Customers moving ``source`` -> ``target``: read off this pair's matrix
    when this process has it (the cells' links come from it), else counted.
    Counting a large cell joins two segments of a million-row run on every
    page: 0.4-0.8 s for Others -> Others at 1M customers."""
    key = _memo_key(conn, _transitions_key(before, after))
    with _memo_lock:
        counts = _memo.get(key)
    if counts is not None:
        return int(counts.get((source, target), 0))
    return transition_count(conn, before.id, after.id, source, target)


def _transitions_key(before: RunRef, after: RunRef) -> tuple[Any, ...]:
    return ("transitions", before.id, before.finished_at, after.id, after.finished_at)


def cached_rf_grid(conn: Connection, run: RunRef) -> list[dict[str, Any]]:
    key = ("grid", run.id, run.finished_at)
    return memoized(conn, key, lambda: rf_grid(conn, run.id))


# -- dry run ------------------------------------------------------------------------


def segment_changes(
    conn: Connection, rules: Sequence[Rule], as_of: dt.date
) -> dict[str, Any] | None:
    """How a calculation as of ``as_of`` would differ from the current run,
    per customer: the scoring statement left-joined to the current run's
    rows, aggregated in the database. ``None`` without a current run."""
    current = current_run(conn)
    if current is None:
        return None
    select_sql, params = calculation.scored_select(conn.dialect.name, rules, as_of)
    sql = (
        "SELECT COUNT(*) AS scored, COUNT(cur.customer_id) AS matched, "
        "COALESCE(SUM(CASE WHEN cur.segment <> scored.segment THEN 1 ELSE 0 END), 0) "
        "AS changed "
        f"FROM ({select_sql}) AS scored "
        "LEFT JOIN rfm_scores cur "
        "ON cur.run_id = :current_run_id AND cur.customer_id = scored.customer_id"
    )
    # The cutoff is rendered as stored timestamps are (text on SQLite).
    stmt = text(sql).bindparams(bindparam("cutoff", type_=UTCDateTime()))
    row = conn.execute(stmt, {**params, "current_run_id": current.id}).one()
    scored, matched, changed = (int(v) for v in row)
    return {
        "current_run_id": current.id,
        "current_as_of": current.as_of,
        "scored": scored,
        "changed_segment": changed,
        "unchanged": matched - changed,
        "entered": scored - matched,
        "left": current.customers_scored - matched,
    }


def preview_changes(
    engine: Engine, settings: runs.RunSettings, as_of: dt.date | None
) -> dict[str, Any] | None:
    """``segment_changes`` for ``flask calculate-rfm --dry-run``; writes nothing."""
    as_of = runs.check_as_of(as_of)
    with engine.connect() as conn:
        try:
            settings.tune(conn)
            return segment_changes(conn, settings.rules, as_of)
        finally:
            conn.rollback()


def describe_changes(changes: dict[str, Any] | None) -> str:
    """One line for the CLI."""
    if changes is None:
        return "no current run to compare with"
    return (
        f"compared with the current run {changes['current_run_id']} "
        f"(as of {changes['current_as_of'].isoformat()}): "
        f"{changes['changed_segment']:,} customers would change segment, "
        f"{changes['unchanged']:,} keep theirs, {changes['entered']:,} would be newly scored, "
        f"{changes['left']:,} would no longer be scored"
    )
