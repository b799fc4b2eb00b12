"""``GET /api/rfm/export.csv``: the current scores as a streamed CSV download."""

from __future__ import annotations

from typing import Any

from flask import Response

from .. import export, insights
from ..extensions import db
from .errors import DetailSchema, fail
from .fields import run_segment
from .parsing import Blueprint
from .schemas import ExportQuery

bp = Blueprint("export", __name__, url_prefix="/api/rfm", description="CSV export")

_CSV_200 = {
    "200": {
        "description": "CSV with a header row; columns as the score object.",
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "headers": {
            "Content-Disposition": {
                "description": "attachment; filename=rfm-scores-<as_of>-run-<id>.csv",
                "schema": {"type": "string"},
            }
        },
    }
}


@bp.route("/export.csv", methods=["GET"])
@bp.arguments(ExportQuery, location="query")
@bp.doc(responses=_CSV_200)
@bp.alt_response(400, schema=DetailSchema, description="Unknown segment")
@bp.alt_response(404, schema=DetailSchema, description="No calculation has succeeded yet")
def export_csv(args: dict[str, Any]) -> Response:
    """The current run's scores as CSV, streamed in constant memory.

    Optional `segment` (name in any case, or slug). Columns: customer_id,
    recency_days, frequency, monetary, recency_score, frequency_score,
    monetary_score, rfm_score, segment, calculated_at.
    """
    segment = args.get("segment")
    with db.engine.connect() as conn:
        run, counts = insights.current_run_segments(conn) or (None, None)
    if segment is not None:  # the run's own segments, which a changed rule file does not rename
        segment = run_segment(segment, run.id if run else None, counts)
    if run is None:
        fail(404, "no calculation has succeeded yet")
    name = export.filename(run.id, run.as_of, segment)
    # The generator holds the engine, not the app context: it runs after the view returns.
    return Response(
        export.stream_csv(db.engine, run.id, segment),
        mimetype="text/csv",
        headers={
            "Content-Disposition": export.content_disposition(name),
            "X-RFM-Run-Id": str(run.id),
            "Cache-Control": "no-store",
        },
    )
