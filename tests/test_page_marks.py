"""Deep pages of the default listing seek to a page mark; results must be
exactly what OFFSET over the customer-id order gives."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import runs, score_storage
from rfm_service.extensions import db
from rfm_service.models import RFMPageMark
from tests.conftest import add_orders

AS_OF = dt.date(2026, 3, 1)


@pytest.mark.parametrize("page_size", [1, 5, 7, 10, 61])
def test_every_page_of_the_default_order_matches_plain_offset(
    app: Flask, monkeypatch: pytest.MonkeyPatch, page_size: int
) -> None:
    monkeypatch.setattr(score_storage, "PAGE_MARK_STEP", 7)  # many marks on little data
    ids = list(range(3, 3 * 61 + 1, 3))  # 60 customers, ids with gaps
    add_orders(app, [(c, dt.datetime(2026, 2, 1, tzinfo=dt.UTC), Decimal(c)) for c in ids])
    with app.app_context():
        runs.calculate_now(db.engine, runs.RunSettings.from_app(app), "cli", AS_OF)
        marks = db.session.execute(
            sa.select(RFMPageMark.mark, RFMPageMark.customer_id).order_by(RFMPageMark.mark)
        ).all()
    assert [tuple(m) for m in marks] == [(k, ids[7 * k]) for k in range(9)]
    client = app.test_client()
    seen = []
    for page in range(1, -(-len(ids) // page_size) + 1):
        body = client.get(f"/api/rfm/?page={page}&page_size={page_size}").get_json()
        seen.append([row["customer_id"] for row in body["results"]])
        assert seen[-1] == ids[(page - 1) * page_size : page * page_size]
    assert [customer for page in seen for customer in page] == ids


def test_page_marks_are_purged_with_their_runs(app: Flask) -> None:
    app.config["RFM_KEEP_RUNS"] = 2
    add_orders(app, [(1, dt.datetime(2026, 2, 1, tzinfo=dt.UTC), Decimal(1))])
    with app.app_context():
        ids = [
            runs.calculate_now(db.engine, runs.RunSettings.from_app(app), "cli", AS_OF)["id"]
            for _ in range(3)
        ]
        kept = db.session.execute(sa.select(RFMPageMark.run_id)).scalars().all()
    assert sorted(kept) == ids[1:]
