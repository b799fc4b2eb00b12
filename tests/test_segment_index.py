"""The segment index on PostgreSQL keys a run's rows by ``hashtext(segment)``
(migration 9c4e2f7a1b36): each run's partition carries it as a partition of
the parent's index, segment filters use it, and two segment names with the
same hash never mix."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.dialects import postgresql

from rfm_service import runs, score_storage
from rfm_service.api import queries
from rfm_service.extensions import db

from .conftest import add_orders, close_app, empty_tables, make_app, partition_indexes
from .reference import reference_scores

# Two names with one hashtext() value (found with generate_series; checked below).
COLLIDING = ("Segment 137811", "Segment 157427")
AS_OF = dt.date(2026, 6, 30)


@pytest.fixture
def colliding_app(pg_url: str, tmp_path: Path) -> Iterator[Flask]:
    rules = [
        {"name": COLLIDING[0], "r": [4, 5], "f": [1, 5], "m": [1, 5]},
        {"name": COLLIDING[1], "r": [1, 3], "f": [1, 5], "m": [1, 5]},
    ]
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules), encoding="utf-8")
    app = make_app(pg_url, RFM_SEGMENT_RULES=str(path))
    empty_tables(app)
    yield app
    close_app(app)


ORDERS = [(c, dt.datetime(2026, 6, 30 - c, 12, tzinfo=dt.UTC), f"{c}.00") for c in range(1, 21)]
# The rules put recency scores 4-5 in the first segment and 1-3 in the second.
BY_RECENCY = {
    name: sorted(row[0] for row in reference_scores(ORDERS, AS_OF) if row[4] in scores)
    for name, scores in zip(COLLIDING, ({4, 5}, {1, 2, 3}), strict=True)
}


def _calculate(app: Flask) -> int:
    add_orders(app, ORDERS)
    with app.app_context():
        run = runs.calculate_now(db.engine, runs.RunSettings.from_app(app), "cli", AS_OF)
    assert run["status"] == "succeeded", run["error"]
    return int(run["id"])


def _segment_ids(app: Flask, segment: str) -> list[int]:
    body = (
        app.test_client()
        .get(f"/api/rfm/by-segment/?segment={quote(segment)}&page_size=100")
        .get_json()
    )
    assert body["count"] == len(body["results"])
    assert {row["segment"] for row in body["results"]} <= {segment}
    return [row["customer_id"] for row in body["results"]]


def _sent_for(app: Flask, url: str) -> list[tuple[str, Any]]:
    """GET ``url`` (200 expected; the whole body read, as an export runs its
    query while it streams) and return the statements, with their parameters,
    that read ``rfm_scores`` meanwhile."""
    sent: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, parameters, *_args) -> None:
        if "rfm_scores" in statement:
            sent.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        response = app.test_client().get(url)
        response.get_data()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200, url
    return sent


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_names_with_one_hash_stay_apart(colliding_app: Flask) -> None:
    with colliding_app.app_context(), db.engine.connect() as conn:
        hashes = conn.execute(
            sa.text("SELECT hashtext(:a), hashtext(:b)"), dict(zip("ab", COLLIDING, strict=True))
        ).one()
    assert hashes[0] == hashes[1]  # otherwise this test proves nothing
    _calculate(colliding_app)

    assert all(BY_RECENCY.values())  # both segments have customers
    assert _segment_ids(colliding_app, COLLIDING[0]) == BY_RECENCY[COLLIDING[0]]
    assert _segment_ids(colliding_app, COLLIDING[1]) == BY_RECENCY[COLLIDING[1]]
    api = colliding_app.test_client().get(f"/api/rfm/export.csv?segment={quote(COLLIDING[0])}")
    assert api.status_code == 200
    exported = [int(row["customer_id"]) for row in csv_rows(api.get_data(as_text=True))]
    assert exported == BY_RECENCY[COLLIDING[0]]
    admin = colliding_app.test_client().get(
        f"/admin/scores/export/csv/?flt0_segment_equals={quote(COLLIDING[1])}"
    )
    assert admin.status_code == 200
    listed = sorted(int(row["Customer Id"]) for row in csv_rows(admin.get_data(as_text=True)))
    assert listed == BY_RECENCY[COLLIDING[1]]


def test_each_run_attaches_its_segment_index_and_filters_use_it(colliding_app: Flask) -> None:
    run_id = _calculate(colliding_app)
    partition = score_storage.partition_name(run_id)
    with colliding_app.app_context(), db.engine.connect() as conn:
        indexes = {name: parent for name, (parent, _) in partition_indexes(conn, partition).items()}
        # Adopted by ATTACH: no third index built beside the run's own two.
        assert indexes == {
            f"{partition}_pkey": "pk_rfm_scores",
            f"{partition}_segment": "ix_rfm_scores_run_id_segment_customer_id",
        }
        # Twenty rows would be read sequentially; the question is whether the
        # filter's form matches the index at all.
        query = (
            sa.select(queries.scores.c.customer_id)
            .where(
                queries.scores.c.run_id == run_id,
                score_storage.segment_is(queries.scores.c.segment, COLLIDING[1]),
            )
            .order_by(queries.scores.c.customer_id)
            .limit(5)
        )
        sql = str(
            query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        )
        conn.rollback()
        with conn.begin():
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            conn.execute(sa.text("SET LOCAL enable_bitmapscan = off"))
            plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN {sql}").scalars())
    assert f"Index Scan using {partition}_segment" in plan, plan
    assert "Sort" not in plan, plan  # in customer order straight off the index


def test_every_segment_filter_takes_the_indexed_form(colliding_app: Flask) -> None:
    """API list, CSV export, transitions and the admin filter all send the
    key and the name (a plain ``segment = ...`` would miss the index)."""
    run_id = _calculate(colliding_app)
    name = quote(COLLIDING[0])
    urls = [
        f"/api/rfm/by-segment/?segment={name}",
        f"/api/rfm/export.csv?segment={name}",
        f"/api/rfm/transitions/?from_run={run_id}&to_run={run_id}"
        f"&from_segment={name}&to_segment={name}",
        f"/admin/scores/?flt0_segment_equals={name}",
    ]
    for url in urls:
        filtered = [s for s, _ in _sent_for(colliding_app, url) if ".segment =" in s]
        assert filtered, url
        assert all("hashtext(" in s for s in filtered), (url, filtered)


def test_segment_reads_in_customer_order_come_straight_off_the_index(
    colliding_app: Flask,
) -> None:
    """Every read of one segment's rows in customer order (either way) asks
    for the order the segment index gives: the plan scans that index and
    sorts nothing. Checked on the statements the endpoints send, with their
    own parameters."""
    run_id = _calculate(colliding_app)
    partition = score_storage.partition_name(run_id)
    name = quote(COLLIDING[0])
    pair = f"/api/rfm/transitions/?from_run={run_id}&to_run={run_id}"
    none = quote("(none)")
    urls = [
        f"/api/rfm/by-segment/?segment={name}",
        f"/api/rfm/by-segment/?segment={name}&page=2&page_size=3",
        f"/api/rfm/by-segment/?segment={name}&ordering=-customer_id",
        f"/api/rfm/?segment={name}&ordering=customer_id",
        f"/api/rfm/export.csv?segment={name}",
        f"{pair}&from_segment={name}&to_segment={name}",
        f"{pair}&from_segment={none}&to_segment={name}",
        f"{pair}&from_segment={name}&to_segment={none}",
    ]
    rows_read = []
    for url in urls:
        sent = _sent_for(colliding_app, url)
        ordered = [(s, p) for s, p in sent if "ORDER BY" in s and "hashtext(" in s]
        assert len(ordered) == 1, (url, sent)  # the page's (or the export's) rows
        rows_read += ordered
    with colliding_app.app_context(), db.engine.connect() as conn, conn.begin():
        # Twenty rows would be read sequentially (and joined by hashing); the
        # question is whether the order asked for is the one the index gives.
        for setting in ("seqscan", "bitmapscan", "hashjoin", "mergejoin"):
            conn.execute(sa.text(f"SET LOCAL enable_{setting} = off"))
        for url, (statement, parameters) in zip(urls, rows_read, strict=True):
            plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars())
            assert f"using {partition}_segment on" in plan, (url, plan)
            assert "Sort" not in plan, (url, plan)
