"""A read-only operator's view of scores and runs (Flask-Admin), at ``/admin``.

- Nothing can be created, edited or deleted.
- Scores show the current run unless a "Run" filter asks for another, and
  the list never counts: ``simple_list_pager`` pages with prev/next only, so
  opening the view costs one index range read, not a COUNT over a million rows.
- Search takes a customer id (an exact, indexed match); filters: segment,
  each score, run; sortable columns; CSV export of what the list shows,
  streamed off a server-side cursor (for a whole run, ``/api/rfm/export.csv``
  or ``flask export-rfm`` is the faster path).

Access control: ``admin_access_allowed`` is the hook. The app-wide request
check in ``auth.py`` already guards ``/admin`` (a write token); a deployment
can narrow it further by registering a callable at
``app.extensions["rfm_admin_access"]`` that returns whether this request may
see the admin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from flask import Flask, current_app, request
from flask_admin import Admin, AdminIndexView
from flask_admin.contrib.sqla import ModelView
from flask_admin.contrib.sqla import filters as sqla_filters
from flask_admin.theme import Bootstrap4Theme
from sqlalchemy import false, select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import Forbidden

from .extensions import db
from .models import MAX_ID, RFMRun, RFMScore
from .score_storage import segment_is
from .segments import Rule, run_segment_names, segment_names

ACCESS_HOOK = "rfm_admin_access"
MAX_PAGE = 10**9  # list pages are numbered from 0
_BIGINT = range(-(2**63), 2**63)  # what both databases can bind as an integer
_SCORE_OPTIONS = [(str(s), str(s)) for s in range(1, 6)]


def admin_access_allowed() -> bool:
    """Whether the current request may use the admin (see the module doc)."""
    check = current_app.extensions.get(ACCESS_HOOK)
    return True if check is None else bool(check())


def _bindable(value: Any) -> bool:
    """Whether a cleaned filter value can be bound as a parameter: SQLite
    refuses integers beyond 64 bits (OverflowError), psycopg2 strings with a
    NUL character (ValueError); either was a 500."""
    if isinstance(value, list | tuple):
        return all(_bindable(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value in _BIGINT
    return not (isinstance(value, str) and "\x00" in value)


def _guarded(flt: Any) -> Any:
    """``flt.validate`` that also refuses a value no database can bind, so
    Flask-Admin drops it with its "invalid filter value" notice."""
    validate = flt.validate

    def check(value: Any) -> bool:
        if not validate(value):
            return False
        try:
            return _bindable(flt.clean(value))
        except (ValueError, TypeError, ArithmeticError):
            return False

    return check


def _money(_view: Any, _context: Any, model: Any, name: str) -> str:
    return str(Decimal(str(getattr(model, name))).quantize(Decimal("0.01")))


def _utc(_view: Any, _context: Any, model: Any, name: str) -> str:
    value: dt.datetime | None = getattr(model, name)
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class ReadOnlyView(ModelView):
    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    can_export = True
    export_types = ["csv"]  # noqa: RUF012 (Flask-Admin's class-level option)
    named_filter_urls = True
    page_size = 50

    def is_accessible(self) -> bool:
        return admin_access_allowed()

    def inaccessible_callback(self, name: str, **kwargs: Any) -> Any:
        raise Forbidden("the admin is not available to this request")

    def get_one(self, id: Any) -> Any:
        """A hand-edited ``?id=`` (not numbers, the wrong number of keys, out
        of range) is a record that does not exist: Flask-Admin then says so
        and goes back to the list."""
        try:
            return super().get_one(id)
        except (SQLAlchemyError, ValueError, TypeError):
            db.session.rollback()  # a failed statement ends the transaction on PostgreSQL
            return None

    def get_filters(self) -> Any:
        filters = super().get_filters()
        for flt in filters or ():
            flt.validate = _guarded(flt)
        return filters

    def _get_list_extra_args(self) -> Any:
        args = super()._get_list_extra_args()
        # A negative OFFSET fails on PostgreSQL, a huge one on SQLite.
        args.page = min(max(args.page or 0, 0), MAX_PAGE)
        return args

    def _export_data(self) -> tuple[int | None, Any]:
        """Flask-Admin loads every exported row with ``.all()``; stream them
        from a server-side cursor instead (same filters, search and order)."""
        args = self._get_list_extra_args()
        sort = self._get_column_by_idx(args.sort)
        _count, query = self.get_list(
            0,
            sort[0] if sort else None,
            args.sort_desc,
            args.search,
            args.filters,
            execute=False,
            page_size=self.export_max_rows,
        )
        return None, _rows_then_close(query.yield_per(1000))


def _rows_then_close(query: Any) -> Iterator[Any]:
    """The query's rows, then its session closed. The rows are read after the
    view's teardown has already removed the request session, so the query
    reopens that session on its own; nothing else would end its transaction,
    which holds locks that block a run's DROP. Runs on an abandoned download
    too (the stream closes this generator)."""
    try:
        yield from query
    finally:
        query.session.close()


class SegmentEqual(sqla_filters.FilterEqual):
    """The admin's "Segment equals" filter, in the form the segment index serves."""

    def apply(self, query: Any, value: Any, alias: Any = None) -> Any:
        return query.filter(segment_is(self.get_column(alias), value))


class ScoreView(ReadOnlyView):
    simple_list_pager = True  # no COUNT(*): prev/next pages only
    column_list = (
        "run_id",
        "customer_id",
        "segment",
        "rfm_score",
        "recency_score",
        "frequency_score",
        "monetary_score",
        "recency_days",
        "frequency",
        "monetary",
        "calculated_at",
    )
    column_details_list = column_list
    column_export_list = column_list
    column_sortable_list = (
        "customer_id",
        "segment",
        "recency_score",
        "frequency_score",
        "monetary_score",
        "recency_days",
        "frequency",
        "monetary",
    )
    column_default_sort = ("customer_id", False)
    column_searchable_list = ("customer_id",)
    column_labels = {"rfm_score": "RFM", "run_id": "Run"}  # noqa: RUF012
    column_formatters = {"monetary": _money, "calculated_at": _utc}  # noqa: RUF012
    column_formatters_export = column_formatters
    column_descriptions = {  # noqa: RUF012
        "run_id": "The current run unless a Run filter is set.",
    }

    def __init__(self, rules: Sequence[Rule], **kwargs: Any) -> None:
        segments = [(name, name) for name in segment_names(rules)]
        self.column_filters = [
            SegmentEqual(RFMScore.segment, "Segment", options=segments),
            sqla_filters.IntEqualFilter(RFMScore.recency_score, "R", options=_SCORE_OPTIONS),
            sqla_filters.IntEqualFilter(RFMScore.frequency_score, "F", options=_SCORE_OPTIONS),
            sqla_filters.IntEqualFilter(RFMScore.monetary_score, "M", options=_SCORE_OPTIONS),
            sqla_filters.FloatGreaterFilter(RFMScore.monetary, "Monetary"),
            sqla_filters.FloatSmallerFilter(RFMScore.monetary, "Monetary"),
            sqla_filters.IntEqualFilter(RFMScore.run_id, "Run"),
        ]
        super().__init__(RFMScore, db, **kwargs)

    def search_placeholder(self) -> str:
        return "Customer id"

    def _get_filter_groups(self) -> Any:
        """The Segment filter offers the configured rule file's segments and
        those of the runs whose scores are kept, read at each request: a run
        keeps the segments of the rule file it was calculated with, so after
        the file changes the current run's segments (until the next
        calculation) and an earlier run's stay selectable, and a new name the
        current run does not have is not the only choice."""
        groups = super()._get_filter_groups()
        if groups and "Segment" in groups:
            options = [(name, name) for name in self._segment_options()]
            groups["Segment"] = [{**item, "options": options} for item in groups["Segment"]]
        return groups

    def _segment_options(self) -> list[str]:
        rules = current_app.extensions["rfm_rules"]
        kept = db.session.execute(
            select(RFMRun.segment_counts)
            .where(RFMRun.status == "succeeded")
            .order_by(RFMRun.id.desc())
            .limit(max(current_app.config["RFM_KEEP_RUNS"], 2))
        ).scalars()
        names = dict.fromkeys(segment_names(rules))
        for counts in kept:
            names.update(dict.fromkeys(counts or ()))
        return run_segment_names(rules, names)

    def _run_filter_given(self) -> bool:
        """A valid Run filter: Flask-Admin drops an invalid one (with a
        notice), and the list must then stay on the current run."""
        for arg, value in request.args.items():
            key = arg.partition("_")[2] if arg.startswith("flt") else ""
            found = (self._filter_args or {}).get(key)
            if found and found[1].column is RFMScore.run_id and found[1].validate(value):
                return True
        return False

    def _current_run_only(self, query: Any) -> Any:
        if self._run_filter_given():
            return query
        current = select(RFMRun.id).where(RFMRun.is_current.is_(True)).scalar_subquery()
        return query.filter(RFMScore.run_id == current)

    def get_query(self) -> Any:
        return self._current_run_only(super().get_query())

    def get_count_query(self) -> Any:
        return self._current_run_only(super().get_count_query())

    def _apply_search(
        self, query: Any, count_query: Any, joins: Any, count_joins: Any, search: str
    ) -> tuple[Any, Any, Any, Any]:
        # An exact, indexed match on the customer id instead of Flask-Admin's
        # CAST(customer_id AS text) LIKE '%term%' over every row.
        term = search.strip()
        # isascii: isdigit() also admits '²', which int() refuses.
        if term.isascii() and term.isdigit() and int(term) <= MAX_ID:
            condition = RFMScore.customer_id == int(term)
        else:
            condition = false()
        query = query.filter(condition)
        if count_query is not None:
            count_query = count_query.filter(condition)
        return query, count_query, joins, count_joins


class RunView(ReadOnlyView):
    column_list = (
        "id",
        "status",
        "trigger",
        "as_of",
        "is_current",
        "customers_scored",
        "created_at",
        "started_at",
        "finished_at",
        "error",
    )
    column_details_list = (*column_list, "segment_counts", "worker")
    column_export_list = column_list
    column_sortable_list = ("id", "status", "trigger", "as_of", "customers_scored")
    column_default_sort = ("id", True)
    column_filters = ("status", "trigger", "as_of", "is_current")
    column_labels = {"is_current": "Current"}  # noqa: RUF012
    column_formatters = {"created_at": _utc, "started_at": _utc, "finished_at": _utc}  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(RFMRun, db, **kwargs)


def init_admin(app: Flask) -> Admin:
    # The index template lives with the dashboard's (rfm_admin/index.html).
    home = AdminIndexView(name="Home", url="/admin", template="rfm_admin/index.html")
    theme = Bootstrap4Theme(fluid=True, base_template="rfm_admin/base.html")
    admin = Admin(app, name="RFM admin", index_view=home, theme=theme)
    # Endpoints prefixed: the API's blueprints are called "scores" and "jobs" already.
    admin.add_view(
        ScoreView(app.extensions["rfm_rules"], name="Scores", endpoint="admin_scores", url="scores")
    )
    admin.add_view(RunView(name="Runs", endpoint="admin_runs", url="runs"))
    return admin
