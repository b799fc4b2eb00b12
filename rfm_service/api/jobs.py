"""Calculation jobs (SPEC §4): start one, read one, list them."""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for

from .. import executor, runs
from ..extensions import db
from ..models import MAX_ID
from . import queries
from .errors import DetailSchema, fail
from .pagination import paginate
from .parsing import Blueprint
from .schemas import CalculateBody, CalculateResponseSchema, PageQuery, RunPageSchema, RunSchema

bp = Blueprint("jobs", __name__, url_prefix="/api/rfm", description="Calculation jobs")


@bp.route("/calculate/", methods=["POST"], strict_slashes=False)
@bp.arguments(CalculateBody, required=False, example={"as_of": "2026-01-31"})
@bp.response(202, CalculateResponseSchema)
@bp.alt_response(400, schema=DetailSchema, description="Invalid body or as_of")
@bp.alt_response(413, schema=DetailSchema, description="The body is larger than RFM_MAX_BODY_BYTES")
@bp.alt_response(415, schema=DetailSchema, description="The body is not JSON")
@bp.alt_response(503, schema=DetailSchema, description="The task broker is unreachable")
def calculate(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Queue a calculation; answers at once, without waiting for it.

    While a run is queued or running, that run is returned (`created`: false)
    instead of starting another. Poll `status_url` for the outcome.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    run, created = runs.request_run(
        db.engine, runs.RunSettings.from_app(app), "api", body.get("as_of")
    )
    if created:  # the queued row is committed: safe to hand over now
        executor.enqueue(app, run["id"])
    location = url_for("jobs.get_job", run_id=run["id"], _external=True)
    return {**run, "created": created}, 202, {"Location": location}


@bp.route("/jobs/", methods=["GET"], strict_slashes=False)
@bp.arguments(PageQuery, location="query")
@bp.response(200, RunPageSchema)
@bp.alt_response(400, schema=DetailSchema, description="Invalid query parameter")
@bp.alt_response(404, schema=DetailSchema, description="Invalid page.")
def list_jobs(args: dict[str, Any]) -> dict[str, Any]:
    """Calculation runs, newest first."""
    with db.engine.connect() as conn:
        page = paginate(queries.run_count(conn), args["page"], args["page_size"])
        rows = queries.run_rows(conn, offset=page.offset, limit=page.size)
    return page.body(rows)


@bp.route(f"/jobs/<int(min=1, max={MAX_ID}):run_id>/", methods=["GET"], strict_slashes=False)
@bp.response(200, RunSchema)
@bp.alt_response(404, schema=DetailSchema, description="No such run")
def get_job(run_id: int) -> dict[str, Any]:
    """One run: status, counts, timings, error."""
    with db.engine.connect() as conn:
        run = queries.run_by_id(conn, run_id)
    if run is None:
        fail(404, f"no calculation run {run_id}")
    return run
