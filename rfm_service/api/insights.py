"""Movement between runs and the R x F grid. Views parse and shape;
``rfm_service.insights`` computes (in SQL)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, jsonify, request, url_for

from .. import insights
from ..extensions import db
from .errors import DetailSchema, fail
from .pagination import paginate
from .parsing import Blueprint
from .schemas import (
    GridQuery,
    GridSchema,
    TransitionCustomerPageSchema,
    TransitionQuery,
    TransitionsSchema,
)

bp = Blueprint(
    "insights", __name__, url_prefix="/api/rfm", description="Movement between runs, R x F grid"
)

_JSON = "application/json"
# Documented by hand: one path answers with the matrix, or with one cell's customers.
_TRANSITIONS_200 = {
    "200": {
        "description": "The matrix; with from_segment and to_segment, that cell's customers.",
        "content": {
            _JSON: {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Transitions"},
                        {"$ref": "#/components/schemas/TransitionCustomerPage"},
                    ]
                }
            }
        },
    }
}


def register_schemas(api: Any) -> None:
    """The two answers of ``transitions`` by name, for the manual doc above."""
    api.spec.components.schema("Transitions", schema=TransitionsSchema)
    api.spec.components.schema("TransitionCustomerPage", schema=TransitionCustomerPageSchema)


@bp.errorhandler(insights.InsightError)
def _bad_request(exc: insights.InsightError) -> tuple[Response, int]:
    return jsonify(detail=str(exc)), 400


@bp.errorhandler(insights.NothingToCompare)
def _nothing(exc: insights.NothingToCompare) -> tuple[Response, int]:
    return jsonify(detail=str(exc)), 404


def _pinned_url(from_id: int, to_id: int, **args: Any) -> str:
    """This endpoint with the resolved run ids fixed, so following a link
    never switches runs when a new calculation finishes meanwhile."""
    query = [(k, v) for k, v in request.args.items(multi=True) if k not in args]
    query = [(k, v) for k, v in query if k not in ("from_run", "to_run")]
    query += [("from_run", str(from_id)), ("to_run", str(to_id))]
    query += [(k, str(v)) for k, v in args.items() if v is not None]
    return f"{request.base_url}?{urlencode(query)}"


def _cell_url(from_id: int, to_id: int, source: str, target: str) -> str:
    return url_for(
        "insights.transitions",
        from_run=from_id,
        to_run=to_id,
        from_segment=source,
        to_segment=target,
        _external=True,
    )


@bp.route("/transitions/", methods=["GET"], strict_slashes=False)
@bp.arguments(TransitionQuery, location="query")
@bp.doc(responses=_TRANSITIONS_200)
@bp.alt_response(400, schema=DetailSchema, description="Unknown or purged run, unknown segment")
@bp.alt_response(404, schema=DetailSchema, description="No runs to compare, or Invalid page.")
def transitions(args: dict[str, Any]) -> Any:
    """Segment movement between two runs.

    Without parameters: from the previous succeeded run whose scores are kept
    to the current run. A customer scored in only one of the runs enters from,
    or leaves to, the pseudo-segment "(none)". With `from_segment` and
    `to_segment`: the customers of that cell, paginated like the other lists
    (`page`, `page_size`), each with both runs' scores.
    """
    rules = current_app.extensions["rfm_rules"]
    with db.engine.connect() as conn:
        before, after = insights.resolve_pair(conn, args.get("from_run"), args.get("to_run"))
        if "from_segment" in args:
            cell = {
                role: insights.pair_segment(conn, rules, before, after, args[role], role)
                for role in ("from_segment", "to_segment")
            }
            return _customer_page(conn, before, after, {**args, **cell})
        counts = insights.cached_transition_counts(conn, before, after)
    body = insights.movement(counts, rules)
    body.update(from_run=before, to_run=after, none_segment=insights.NONE)
    order = {name: i for i, name in enumerate(body["segments"])}
    body["cells"] = [
        {
            "from_segment": source,
            "to_segment": target,
            "customers": n,
            "customers_url": _cell_url(before.id, after.id, source, target),
        }
        # Largest first, ties in the matrix's order: the same on both databases.
        for (source, target), n in sorted(
            counts.items(),
            key=lambda item: (-item[1], order[item[0][0]], order[item[0][1]]),
        )
    ]
    return TransitionsSchema().dump(body)


def _customer_page(
    conn: Any, before: insights.RunRef, after: insights.RunRef, args: dict[str, Any]
) -> dict[str, Any]:
    source, target = args["from_segment"], args["to_segment"]
    from_id, to_id = before.id, after.id
    count = insights.cell_count(conn, before, after, source, target)
    page = paginate(count, args["page"], args["page_size"])
    rows = insights.transition_customers(
        conn, from_id, to_id, source, target, offset=page.offset, limit=page.size, total=count
    )
    body = page.body(rows)
    body["next"] = _pinned_url(from_id, to_id, page=page.number + 1) if body["next"] else None
    if body["previous"]:
        previous = page.number - 1
        body["previous"] = _pinned_url(from_id, to_id, page=previous if previous > 1 else None)
    return TransitionCustomerPageSchema().dump(body)


@bp.route("/grid/", methods=["GET"], strict_slashes=False)
@bp.arguments(GridQuery, location="query")
@bp.response(200, GridSchema)
@bp.alt_response(400, schema=DetailSchema, description="Unknown or purged run")
@bp.alt_response(404, schema=DetailSchema, description="No calculation has succeeded yet")
def grid(args: dict[str, Any]) -> dict[str, Any]:
    """Recency x frequency grid of a run: customers, revenue and mean monetary
    per cell (25 cells). Default: the current run."""
    with db.engine.connect() as conn:
        if args.get("run") is None:
            run = insights.current_run(conn)
            if run is None:
                fail(404, "no calculation has succeeded yet")
        else:
            run = insights.run_with_scores(conn, args["run"], "run")
        cells = insights.cached_rf_grid(conn, run)
    return {"run": run, "cells": cells}
