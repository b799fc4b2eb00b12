"""The dashboard at ``/``: server-rendered (Jinja), charts as inline SVG and
CSS, one small script (``static/dashboard.js``) for the Recalculate button.
Nothing is loaded from another host, so it works offline.

Query parameters: ``segment`` (name or slug), ``page`` and ``run`` for the
scores table (the pager's links name the run, so paging never switches runs
when a recalculation finishes meanwhile); ``done`` (a run id) shows how
that run ended, after Recalculate.
Bad values never fail the page: they are ignored with a notice.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, current_app, render_template, request

from ..api import queries
from ..extensions import db
from ..segments import segment_names
from . import figures

PAGE_SIZE = 25

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
)


@bp.app_template_filter("rfm_int")
def _int(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


@bp.app_template_filter("rfm_money")
def _money(value: Any) -> str:
    if value is None:
        return "–"
    try:
        return f"{Decimal(str(value)):,.2f}"
    except InvalidOperation:
        return str(value)


@bp.app_template_filter("rfm_pct")
def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def _whole_number(name: str, notices: list[str]) -> int | None:
    """Query parameter ``name`` as a whole number from 1, None if absent;
    anything else is ignored with a notice."""
    text = request.args.get(name, "").strip()
    if not text:
        return None
    # isascii: isdigit() also admits '²', which int() refuses.
    if text.isascii() and text.isdigit() and len(text) < 10 and int(text) > 0:
        return int(text)
    notices.append(f"Ignored {name} {text[:40]!r}: not a whole number from 1.")
    return None


@bp.get("/")
def index() -> str:
    rules = current_app.extensions["rfm_rules"]
    notices = []
    # Resolved among the segments of the run the table shows (figures.score_table).
    wanted = request.args.get("segment", "").strip() or None
    page = _whole_number("page", notices)
    done = _whole_number("done", notices)
    pinned = _whole_number("run", notices)
    with db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for every figure, even if a run commits mid-page
            # (SQLite reads stay within the one run they name).
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        data = figures.collect(
            conn, rules, segment=wanted, page=page or 1, page_size=PAGE_SIZE, scores_run=pinned
        )
        finished = queries.run_by_id(conn, done) if done else None
    if done and finished is None:
        notices.append(f"There is no run {done}.")
    if data["scores"].segment_note:
        notices.append(data["scores"].segment_note)
    if data["scores"].note:
        notices.append(data["scores"].note)
    pages = data["scores"].pages
    if page and page > pages:
        notices.append(f"There is no page {page}; showing the last, page {pages}.")
    return render_template(
        "dashboard/index.html",
        notices=notices,
        finished=finished,
        segment_names=segment_names(rules),
        page_size=PAGE_SIZE,
        **data,
    )
