"""Marshmallow schemas: request validation, response shaping, and (through
flask-smorest) the OpenAPI document, from one source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import marshmallow as ma
from flask import url_for
from marshmallow import fields, validate

from ..models import MAX_ID
from ..timeutil import utcnow
from .fields import (
    Money,
    OrderingParam,
    SegmentName,
    StrictDate,
    UTCTimestamp,
    money_text,
    utc_text,
)
from .queries import ORDERING_COLUMNS

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


# --- requests ---------------------------------------------------------------


class PageQuery(ma.Schema):
    page = fields.Integer(
        load_default=1, validate=validate.Range(min=1), metadata={"description": "From 1."}
    )
    page_size = fields.Integer(
        load_default=DEFAULT_PAGE_SIZE,
        validate=validate.Range(min=1, max=MAX_PAGE_SIZE),
        metadata={"description": f"Default {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE}."},
    )


_ORDERING_HELP = (
    f"Comma-separated fields among {', '.join(ORDERING_COLUMNS)}; prefix '-' for "
    "descending. customer_id is always the final tie-break. Default: customer_id."
)
_SEGMENT_HELP = (
    "A segment name (case-insensitive) or its slug, such as at-risk: one of the "
    "segments of the run read, which keeps those of the rule file it was calculated with."
)


_RUN_HELP = (
    "The calculation run to page through; the next and previous links carry it, so "
    "following them stays on one run while a recalculation finishes. A succeeded run "
    "whose scores are kept (the newest RFM_KEEP_RUNS). Default: the current run."
)


class ScorePageQuery(PageQuery):
    ordering = OrderingParam(metadata={"description": _ORDERING_HELP})
    run = fields.Integer(
        validate=validate.Range(min=1, max=MAX_ID), metadata={"description": _RUN_HELP}
    )


class ScoreListQuery(ScorePageQuery):
    segment = SegmentName(metadata={"description": _SEGMENT_HELP})


class BySegmentQuery(ScorePageQuery):
    segment = SegmentName(required=True, metadata={"description": _SEGMENT_HELP})


class CalculateBody(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    error_messages: ClassVar[dict[str, str]] = {
        "type": 'expected a JSON object such as {"as_of": "YYYY-MM-DD"}'
    }

    as_of = StrictDate(
        load_default=None,
        allow_none=True,
        metadata={"description": "The UTC calendar date to score as of. Default: today (UTC)."},
    )


# --- responses --------------------------------------------------------------


class ScoreSchema(ma.Schema):
    customer_id = fields.Integer()
    recency_days = fields.Integer(metadata={"description": "Days from the last order to as_of."})
    frequency = fields.Integer(metadata={"description": "Orders counted."})
    monetary = Money(metadata={"example": "120.50", "description": "Sum of order totals."})
    recency_score = fields.Integer(metadata={"minimum": 1, "maximum": 5})
    frequency_score = fields.Integer(metadata={"minimum": 1, "maximum": 5})
    monetary_score = fields.Integer(metadata={"minimum": 1, "maximum": 5})
    rfm_score = fields.String(metadata={"example": "545"})
    segment = fields.String(metadata={"example": "Champions"})
    calculated_at = UTCTimestamp(metadata={"format": "date-time"})

    @ma.pre_dump
    def _add_rfm_score(self, row: dict[str, Any], **_: Any) -> dict[str, Any]:
        scores = (row["recency_score"], row["frequency_score"], row["monetary_score"])
        return {**row, "rfm_score": "".join(str(s) for s in scores)}


def score_object(row: Mapping[str, Any]) -> dict[str, Any]:
    """``ScoreSchema().dump(row)`` without marshmallow, for the hot path
    GET /api/rfm/{id}/ (2 µs instead of 10) and every row of the list pages.
    The schemas still document the responses; tests/test_api_score_hot_path.py
    keeps the two equal."""
    r, f, m = row["recency_score"], row["frequency_score"], row["monetary_score"]
    return {
        "customer_id": row["customer_id"],
        "recency_days": row["recency_days"],
        "frequency": row["frequency"],
        "monetary": money_text(row["monetary"]),
        "recency_score": r,
        "frequency_score": f,
        "monetary_score": m,
        "rfm_score": f"{r}{f}{m}",
        "segment": row["segment"],
        "calculated_at": utc_text(row["calculated_at"]),
    }


class _PageSchema(ma.Schema):
    count = fields.Integer()
    next = fields.String(allow_none=True, metadata={"description": "Absolute URL or null."})
    previous = fields.String(allow_none=True, metadata={"description": "Absolute URL or null."})


class ScorePageSchema(_PageSchema):
    results = fields.List(fields.Nested(ScoreSchema))


class RunSchema(ma.Schema):
    id = fields.Integer()
    status = fields.String(metadata={"enum": ["queued", "running", "succeeded", "failed"]})
    trigger = fields.String(metadata={"enum": ["api", "cli", "schedule"]})
    as_of = fields.Date()
    created_at = UTCTimestamp(metadata={"format": "date-time"})
    started_at = UTCTimestamp(allow_none=True, metadata={"format": "date-time"})
    finished_at = UTCTimestamp(allow_none=True, metadata={"format": "date-time"})
    duration_seconds = fields.Float(
        allow_none=True,
        metadata={"description": "From start to finish; while running, so far."},
    )
    customers_scored = fields.Integer(allow_none=True)
    segment_counts = fields.Dict(keys=fields.String(), values=fields.Integer(), allow_none=True)
    error = fields.String(allow_none=True)
    current = fields.Boolean(
        metadata={"description": "Whether the score endpoints serve this run."}
    )
    status_url = fields.String(metadata={"description": "Absolute URL of this run's status."})

    @ma.pre_dump
    def _derived(self, run: dict[str, Any], **_: Any) -> dict[str, Any]:
        started, finished = run.get("started_at"), run.get("finished_at")
        duration = None
        if started is not None:
            duration = round(((finished or utcnow()) - started).total_seconds(), 3)
        return {
            **run,
            "duration_seconds": duration,
            "current": bool(run.get("is_current")),
            "status_url": url_for("jobs.get_job", run_id=run["id"], _external=True),
        }


class CalculateResponseSchema(RunSchema):
    created = fields.Boolean(
        metadata={
            "description": "false when a run was queued or running already: "
            "this is that run, and no new one was started."
        }
    )


class RunPageSchema(_PageSchema):
    results = fields.List(fields.Nested(RunSchema))


class SegmentStatsSchema(ma.Schema):
    segment = fields.String()
    customers = fields.Integer()
    customer_share = fields.Float(metadata={"description": "0..1"})
    orders = fields.Integer()
    revenue = Money()
    revenue_share = fields.Float(metadata={"description": "0..1"})
    average_order_value = Money(allow_none=True)
    mean_recency_days = fields.Float(allow_none=True)
    mean_frequency = fields.Float(allow_none=True)
    mean_monetary = Money(allow_none=True)


class ScoreBucketSchema(ma.Schema):
    score = fields.Integer()
    customers = fields.Integer()
    min = fields.Raw(allow_none=True, metadata={"description": "Lowest raw value at this score."})
    max = fields.Raw(allow_none=True, metadata={"description": "Highest raw value at this score."})


class DimensionStatsSchema(ma.Schema):
    scores = fields.List(fields.Nested(ScoreBucketSchema))
    ties_split_across_scores = fields.Boolean(
        metadata={"description": "Equal raw values fell into two neighbouring scores."}
    )


class DimensionsSchema(ma.Schema):
    recency = fields.Nested(DimensionStatsSchema)
    frequency = fields.Nested(DimensionStatsSchema)
    monetary = fields.Nested(DimensionStatsSchema)


class StatisticsSchema(ma.Schema):
    run_id = fields.Integer()
    as_of = fields.Date()
    calculated_at = fields.String(metadata={"format": "date-time"})
    customers_scored = fields.Integer()
    customers_without_orders = fields.Integer()
    orders = fields.Integer()
    revenue = Money()
    segments = fields.List(fields.Nested(SegmentStatsSchema))
    dimensions = fields.Nested(DimensionsSchema)


# --- insights: movement between runs, the R x F grid, CSV export ----------------

MAX_RUN_ID = 2**31 - 1  # run ids are 32-bit integer columns
_RUN_ID = validate.Range(min=1, max=MAX_RUN_ID)
_TRANSITION_SEGMENT_HELP = (
    'A segment name (case-insensitive) or slug, or "(none)" (slug none): not scored '
    "in that run. Give from_segment and to_segment together to list the customers "
    "of one matrix cell."
)


class TransitionSegment(fields.String):
    """A segment name or slug, or the pseudo-segment "(none)". Checked once
    the runs are known (``insights.pair_segment``): a segment of an earlier
    rule file is valid for runs that have it."""


class TransitionQuery(PageQuery):
    from_run = fields.Integer(
        validate=_RUN_ID,
        metadata={"description": "Default: the succeeded run before to_run whose scores are kept."},
    )
    to_run = fields.Integer(validate=_RUN_ID, metadata={"description": "Default: the current run."})
    from_segment = TransitionSegment(metadata={"description": _TRANSITION_SEGMENT_HELP})
    to_segment = TransitionSegment(metadata={"description": _TRANSITION_SEGMENT_HELP})

    @ma.validates_schema
    def _segments_go_together(self, data: dict[str, Any], **_: Any) -> None:
        if ("from_segment" in data) != ("to_segment" in data):
            raise ma.ValidationError(
                "from_segment and to_segment go together: give both to list the customers "
                "of one matrix cell, or neither for the whole matrix"
            )


class GridQuery(ma.Schema):
    run = fields.Integer(validate=_RUN_ID, metadata={"description": "Default: the current run."})


class ExportQuery(ma.Schema):
    segment = SegmentName(metadata={"description": _SEGMENT_HELP})


class RunRefSchema(ma.Schema):
    id = fields.Integer()
    as_of = fields.Date()
    customers_scored = fields.Integer()
    finished_at = UTCTimestamp(allow_none=True, metadata={"format": "date-time"})


class SegmentMovementSchema(ma.Schema):
    segment = fields.String()
    from_customers = fields.Integer(metadata={"description": "In this segment in from_run."})
    to_customers = fields.Integer(metadata={"description": "In this segment in to_run."})
    stayed = fields.Integer(metadata={"description": "In this segment in both runs."})
    entered = fields.Integer(
        metadata={"description": 'In it in to_run, not in from_run (including from "(none)").'}
    )
    left = fields.Integer(
        metadata={"description": 'In it in from_run, not in to_run (including to "(none)").'}
    )


class MovementTotalsSchema(ma.Schema):
    in_both_runs = fields.Integer()
    unchanged = fields.Integer(metadata={"description": "Same segment in both runs."})
    changed_segment = fields.Integer(metadata={"description": "Scored in both, segment differs."})
    entered = fields.Integer(metadata={"description": 'From "(none)": scored in to_run only.'})
    left = fields.Integer(metadata={"description": 'To "(none)": scored in from_run only.'})


class TransitionCellSchema(ma.Schema):
    from_segment = fields.String()
    to_segment = fields.String()
    customers = fields.Integer()
    customers_url = fields.String(metadata={"description": "This cell's customers (paginated)."})


class TransitionsSchema(ma.Schema):
    from_run = fields.Nested(RunRefSchema)
    to_run = fields.Nested(RunRefSchema)
    none_segment = fields.String(
        metadata={"description": "The pseudo-segment of customers scored in one run only."}
    )
    segments = fields.List(
        fields.String(), metadata={"description": "Row and column order of matrix."}
    )
    matrix = fields.List(
        fields.List(fields.Integer()),
        metadata={
            "description": "matrix[i][j]: customers in segments[i] in from_run and in "
            "segments[j] in to_run."
        },
    )
    cells = fields.List(
        fields.Nested(TransitionCellSchema), metadata={"description": "The non-zero cells."}
    )
    per_segment = fields.List(fields.Nested(SegmentMovementSchema))
    totals = fields.Nested(MovementTotalsSchema)


class TransitionSideSchema(ma.Schema):
    recency_days = fields.Integer()
    frequency = fields.Integer()
    monetary = Money()
    recency_score = fields.Integer()
    frequency_score = fields.Integer()
    monetary_score = fields.Integer()
    rfm_score = fields.String()
    segment = fields.String()

    @ma.pre_dump
    def _add_rfm_score(self, row: dict[str, Any], **_: Any) -> dict[str, Any]:
        scores = (row["recency_score"], row["frequency_score"], row["monetary_score"])
        return {**row, "rfm_score": "".join(str(s) for s in scores)}


class TransitionCustomerSchema(ma.Schema):
    customer_id = fields.Integer()
    from_ = fields.Nested(
        TransitionSideSchema,
        data_key="from",
        attribute="from",
        allow_none=True,
        metadata={"description": "The customer's score in from_run; null if not scored there."},
    )
    to = fields.Nested(
        TransitionSideSchema,
        allow_none=True,
        metadata={"description": "The customer's score in to_run; null if not scored there."},
    )


class TransitionCustomerPageSchema(_PageSchema):
    results = fields.List(fields.Nested(TransitionCustomerSchema))


class GridCellSchema(ma.Schema):
    recency_score = fields.Integer()
    frequency_score = fields.Integer()
    customers = fields.Integer()
    revenue = Money()
    mean_monetary = Money(allow_none=True)


class GridSchema(ma.Schema):
    run = fields.Nested(RunRefSchema)
    cells = fields.List(
        fields.Nested(GridCellSchema),
        metadata={"description": "25 cells: recency score 5..1, each with frequency 1..5."},
    )
