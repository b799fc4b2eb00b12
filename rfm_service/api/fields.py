"""Custom marshmallow fields: strict input, DRF-style output."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import marshmallow as ma
from flask import current_app
from marshmallow import fields

from ..segments import resolve_name, resolve_segment, run_segment_names, segment_names, slugify
from ..timeutil import DATE_PATTERN, UTC
from .errors import fail
from .queries import ORDERING_COLUMNS


def segment_help(names: list[str] | None = None, run_id: int | None = None) -> str:
    """The valid segment names (the configured rule table's unless given), for
    error details."""
    if names is None:
        names = segment_names(current_app.extensions["rfm_rules"])
    where = f" of run {run_id}" if run_id is not None else ""
    return (
        f"valid segments{where}: {', '.join(names)} "
        f"(any case, or a slug such as {slugify(names[0])})"
    )


def run_segment(text: str, run_id: int | None, counts: Mapping[str, Any] | None) -> str:
    """Segment ``text`` (name in any case, or slug) of run ``run_id``, whose
    stored ``counts`` name every segment of the rule table it was calculated
    with: a run keeps its own names when the rule file changes, and a name
    it never had is unknown there rather than an empty segment: a 400
    saying which names the run has."""
    rules = current_app.extensions["rfm_rules"]
    names = run_segment_names(rules, counts)  # no run yet: the configured table's
    name = resolve_name(names, text)
    if name is not None:
        return name
    detail = f"unknown segment {text!r}; {segment_help(names, run_id)}"
    if run_id is not None and resolve_segment(rules, text) is not None:
        detail += (
            f"; run {run_id} was calculated with another segment rule file, "
            "and its scores keep the segments of that file"
        )
    fail(400, f"segment: {detail}")


class StrictDate(fields.Date):
    """Exactly ``YYYY-MM-DD``: ``Date`` alone also takes ``20260228`` and ISO
    week dates."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date:
        if not isinstance(value, str) or not DATE_PATTERN.fullmatch(value):
            raise ma.ValidationError(f"{value!r} is not a date in the form YYYY-MM-DD")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ma.ValidationError(f"{value!r} is not a valid calendar date") from None


_CENT = Decimal("0.01")


# Plain functions as well as fields: the hot path of GET /api/rfm/{id}/
# formats without marshmallow (schemas.score_object) and must match exactly.
def money_text(value: Any) -> str | None:
    """A decimal as a string with two places, as Django REST framework renders it."""
    if value is None:
        return None
    return str(Decimal(str(value)).quantize(_CENT))


def utc_text(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Money(fields.String):
    """A decimal as a string with two places, as Django REST framework renders it."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return money_text(value)


class UTCTimestamp(fields.String):
    """ISO 8601 in UTC with a ``Z``."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return utc_text(value)


class SegmentName(fields.String):
    """A segment by name (any case) or slug. Loads as the text given: which
    names are valid depends on the run read (``run_segment``), known only
    once the query runs."""

    def make_error(self, key: str, **kwargs: Any) -> ma.ValidationError:
        if key == "required":  # the names depend on the configured rule table
            return ma.ValidationError(f"this query parameter is required; {segment_help()}")
        return super().make_error(key, **kwargs)


class OrderingParam(fields.String):
    """``field`` or ``-field``, comma-separated; loads as ``[(field, desc)]``."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> list[tuple[str, bool]]:
        text = super()._deserialize(value, attr, data, **kwargs)
        result: dict[str, bool] = {}
        for part in text.split(","):
            part = part.strip()
            name = part.removeprefix("-")
            if name not in ORDERING_COLUMNS:
                raise ma.ValidationError(
                    f"unknown field {part!r}; allowed: {', '.join(ORDERING_COLUMNS)} "
                    "(prefix '-' for descending)"
                )
            # A repeat orders nothing further, and thousands of them exceed
            # SQLite's limit on ORDER BY terms.
            if name in result:
                raise ma.ValidationError(f"field {name!r} is given more than once")
            result[name] = part.startswith("-")
        return list(result.items())
