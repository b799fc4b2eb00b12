"""UTC handling in one place: naive input means UTC; values come back aware."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC
# YYYY-MM-DD in ASCII digits (\d also takes other scripts' digits).
DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def today_utc() -> dt.date:
    return utcnow().date()


def as_utc(value: dt.datetime) -> dt.datetime:
    """Naive means UTC (SPEC §1); aware values are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_date(text: str) -> dt.date:
    """Strict ``YYYY-MM-DD``; raises ``ValueError`` with a readable reason.
    ``fromisoformat`` alone also takes week dates such as ``2026-W01-1``."""
    try:
        if not DATE_PATTERN.fullmatch(text):
            raise ValueError
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{text!r} is not a valid date (expected YYYY-MM-DD)") from None


def sqlite_timestamp(value: dt.datetime) -> str:
    """The text SQLite stores for a UTC timestamp (SQLAlchemy's format), so
    bulk paths that bypass the ORM write exactly what the ORM would."""
    return as_utc(value).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """``timestamptz`` on PostgreSQL; naive-UTC text on SQLite (which has no
    time zones), so text comparison there orders like time."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, str):  # raw text from a hand-written SQLite query
            value = dt.datetime.fromisoformat(value)
        return as_utc(value)
