"""Marshmallow schemas: request validation, response shaping, and (through
flask-smorest) the OpenAPI document, from one source."""

from __future__ import annotations

from typing import Any, ClassVar

import marshmallow as ma
from flask import url_for
from marshmallow import fields, validate

from ..timeutil import utcnow
from .fields import Money, OrderingParam, SegmentName, StrictDate, UTCTimestamp
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
_SEGMENT_HELP = "A segment name (case-insensitive) or its slug, such as at-risk."


class ScoreListQuery(PageQuery):
    segment = SegmentName(metadata={"description": _SEGMENT_HELP})
    ordering = OrderingParam(metadata={"description": _ORDERING_HELP})


class BySegmentQuery(PageQuery):
    segment = SegmentName(required=True, metadata={"description": _SEGMENT_HELP})
    ordering = OrderingParam(metadata={"description": _ORDERING_HELP})


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
