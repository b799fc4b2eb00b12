"""Typed models (SPEC §1). No commits here: callers own transactions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db
from .timeutil import UTCDateTime, utcnow

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only gives INTEGER PRIMARY KEY columns an automatic rowid alias.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

MAX_ID = 2**31 - 1  # customer and run ids are 32-bit integer columns
RUN_STATUSES = ("queued", "running", "succeeded", "failed")
RUN_TRIGGERS = ("api", "cli", "schedule")


class Customer(db.Model):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Order(db.Model):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total_amount >= 0", name="total_amount_non_negative"),
        # Covering on PostgreSQL: the engine's per-customer aggregate becomes
        # an index-only scan feeding a streaming GroupAggregate (5x faster
        # than hashing 1M groups; see BENCHMARKS.md).
        Index(
            "ix_orders_customer_id_ordered_at",
            "customer_id",
            "ordered_at",
            postgresql_include=["total_amount"],
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), nullable=False
    )
    ordered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    total_amount: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)


class RFMRun(db.Model):
    """A calculation job; its row is the status the API reports."""

    __tablename__ = "rfm_runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')", name="status_valid"
        ),
        CheckConstraint("trigger IN ('api', 'cli', 'schedule')", name="trigger_valid"),
        # active_slot is 1 while queued/running, NULL otherwise; the unique
        # constraint lets at most one run be active, across processes.
        CheckConstraint("active_slot = 1", name="active_slot_is_one"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    trigger: Mapped[str] = mapped_column(String(16))
    as_of: Mapped[dt.date] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    customers_scored: Mapped[int | None] = mapped_column(Integer)
    segment_counts: Mapped[dict[str, int] | None] = mapped_column(JSONType)
    statistics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    # Executions started; a run whose worker keeps dying is failed, not retried forever.
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    is_current: Mapped[bool] = mapped_column(default=False)
    active_slot: Mapped[int | None] = mapped_column(SmallInteger, unique=True)


# At most one current run: readers follow it to the complete result set.
Index(
    "uq_rfm_runs_one_current",
    RFMRun.is_current,
    unique=True,
    postgresql_where=text("is_current"),
    sqlite_where=text("is_current"),
)


# The score object of SPEC §4, in order; rfm_score is derived, the rest stored.
SCORE_FIELDS = (
    "customer_id",
    "recency_days",
    "frequency",
    "monetary",
    "recency_score",
    "frequency_score",
    "monetary_score",
    "rfm_score",
    "segment",
    "calculated_at",
)


class RFMScore(db.Model):
    __tablename__ = "rfm_scores"
    __table_args__ = (
        CheckConstraint("recency_score BETWEEN 1 AND 5", name="recency_score_range"),
        CheckConstraint("frequency_score BETWEEN 1 AND 5", name="frequency_score_range"),
        CheckConstraint("monetary_score BETWEEN 1 AND 5", name="monetary_score_range"),
        # On PostgreSQL it is (hashtext(segment), customer_id) and the primary
        # key (customer_id, run_id) (migrations 9c4e2f7a1b36 and 4e8d1c2b7f05,
        # score_storage); migrations/env.py skips this index there.
        Index("ix_rfm_scores_run_id_segment_customer_id", "run_id", "segment", "customer_id"),
        # One partition per run on PostgreSQL (see score_storage.py).
        {"postgresql_partition_by": "LIST (run_id)"},
    )

    # No foreign key to rfm_runs on purpose: its per-row check tripled the
    # cost of writing a million scores. Only runs.py writes and purges these.
    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recency_days: Mapped[int] = mapped_column(Integer)
    frequency: Mapped[int] = mapped_column(Integer)
    monetary: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    recency_score: Mapped[int] = mapped_column(SmallInteger)
    frequency_score: Mapped[int] = mapped_column(SmallInteger)
    monetary_score: Mapped[int] = mapped_column(SmallInteger)
    # Bytes order on PostgreSQL (migration 5b1e0c7a9d42): a much cheaper index build.
    segment: Mapped[str] = mapped_column(
        String(64).with_variant(String(64, collation="C"), "postgresql")
    )
    calculated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # 1-based rank by customer id within the run; page marks are taken from it.
    position: Mapped[int] = mapped_column(Integer)

    @property
    def rfm_score(self) -> str:
        return f"{self.recency_score}{self.frequency_score}{self.monetary_score}"


API_SCOPES = ("read", "write")


class ApiToken(db.Model):
    """An API credential (auth.py). Only the SHA-256 of the token is stored:
    a leaked database does not leak working tokens."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("scope IN ('read', 'write')", name="scope_valid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Revoked rows are kept (who had access, until when); they never authenticate.
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


# A name identifies one active token (revoke-api-token NAME); a revoked
# token's name may be reused.
Index(
    "uq_api_tokens_active_name",
    ApiToken.name,
    unique=True,
    postgresql_where=text("revoked_at IS NULL"),
    sqlite_where=text("revoked_at IS NULL"),
)


class RFMPageMark(db.Model):
    """Every PAGE_MARK_STEP-th customer id of a run, in customer order, so a
    deep page of the default listing starts from an index seek instead of
    skipping a million rows."""

    __tablename__ = "rfm_page_marks"

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mark: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(Integer)
