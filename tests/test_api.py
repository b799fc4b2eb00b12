"""The REST API (SPEC §4) on SQLite and PostgreSQL, through the test client.

Scores are created by calling the run service directly, as the CLI does;
expected values come from the orders in the test, not from the service.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from rfm_service import executor, runs
from rfm_service.extensions import db

from .conftest import add_orders

AS_OF = dt.date(2026, 1, 31)
UTC = dt.UTC
SCORE_FIELDS = {
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
}


def orders_for(n_customers: int) -> list[tuple[int, dt.datetime, str]]:
    """A varied, deterministic order book: customer c orders (c % 4) + 1
    times, the latest (c * 7) % 60 days before AS_OF, amounts with cents."""
    rows = []
    for c in range(1, n_customers + 1):
        latest = dt.datetime.combine(AS_OF, dt.time(12), tzinfo=UTC) - dt.timedelta(
            days=(c * 7) % 60
        )
        for k in range(c % 4 + 1):
            amount = Decimal(10 + (c * 13 + k * 5) % 90) + Decimal((c * 37 + k) % 100) / 100
            rows.append((c, latest - dt.timedelta(days=30 * k), str(amount)))
    return rows


def calculate(app: Flask, as_of: dt.date = AS_OF) -> dict[str, Any]:
    """Request and execute a run in this process, as the CLI does."""
    with app.app_context():
        settings = runs.RunSettings.from_app(app)
        run, created = runs.request_run(db.engine, settings, "cli", as_of)
        assert created
        return runs.execute_run(db.engine, settings, run["id"])


def get_json(client: FlaskClient, url: str, status: int = 200) -> Any:
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def assert_error(response: Any, status: int, *words: str) -> str:
    """A ``{"detail"}`` error with this status whose detail names ``words``."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"detail"}, body
    detail = body["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    assert "Traceback" not in detail
    for word in words:
        assert word.lower() in detail.lower(), detail
    return detail


def all_results(client: FlaskClient, url: str) -> list[dict[str, Any]]:
    """Every result, following ``next`` links from ``url``."""
    results: list[dict[str, Any]] = []
    while url:
        body = get_json(client, url)
        results.extend(body["results"])
        url = body["next"]
    return results


@pytest.fixture
def scored(app: Flask) -> Flask:
    """23 customers with orders and 2 without, calculated as of AS_OF."""
    add_orders(app, orders_for(23), extra_customers=[100, 101])
    run = calculate(app)
    assert run["status"] == "succeeded", run["error"]
    return app


# --- before any calculation ---------------------------------------------------


def test_reads_before_any_calculation_are_empty_or_404(client: FlaskClient) -> None:
    body = get_json(client, "/api/rfm/")
    assert body == {"count": 0, "next": None, "previous": None, "results": []}
    assert_error(client.get("/api/rfm/?page=2"), 404, "Invalid page.")
    assert_error(client.get("/api/rfm/statistics/"), 404, "no calculation has succeeded yet")
    assert_error(client.get("/api/rfm/7/"), 404, "customer 7")
    body = get_json(client, "/api/rfm/by-segment/?segment=champions")
    assert body["count"] == 0 and body["results"] == []
    assert get_json(client, "/api/rfm/jobs/")["count"] == 0


# --- scores ---------------------------------------------------------------------


def test_score_object_has_the_contract_fields_and_formats(scored: Flask) -> None:
    client = scored.test_client()
    orders = [o for o in orders_for(23) if o[0] == 5]
    body = get_json(client, "/api/rfm/5/")
    assert set(body) == SCORE_FIELDS
    assert body["customer_id"] == 5
    assert body["frequency"] == len(orders)
    assert body["monetary"] == str(sum(Decimal(a) for _, _, a in orders))
    assert len(body["monetary"].split(".")[1]) == 2
    latest = max(at for _, at, _ in orders).date()
    assert body["recency_days"] == (AS_OF - latest).days
    assert body["rfm_score"] == (
        f"{body['recency_score']}{body['frequency_score']}{body['monetary_score']}"
    )
    assert body["calculated_at"].endswith("Z")
    assert dt.datetime.fromisoformat(body["calculated_at"]).tzinfo is not None
    # The same object appears in the list.
    listed = {r["customer_id"]: r for r in all_results(client, "/api/rfm/?page_size=1000")}
    assert listed[5] == body


def test_monetary_keeps_two_decimals_for_round_amounts(app: Flask) -> None:
    at = dt.datetime(2026, 1, 1, tzinfo=UTC)
    add_orders(app, [(1, at, "120.5"), (2, at, "7"), (3, at, "0.10"), (3, at, "0.20")])
    calculate(app)
    client = app.test_client()
    monetary = {r["customer_id"]: r["monetary"] for r in get_json(client, "/api/rfm/")["results"]}
    assert monetary == {1: "120.50", 2: "7.00", 3: "0.30"}


@pytest.mark.parametrize(
    "path, words",
    [
        ("/api/rfm/abc/", ["not found", "'abc' is not a customer id", "2147483647"]),
        ("/api/rfm/-1/", ["not found", "'-1' is not a customer id"]),
        ("/api/rfm/0/", ["not found", "'0' is not a customer id"]),
        ("/api/rfm/1.5/", ["not found", "'1.5' is not a customer id"]),
        ("/api/rfm/2147483648/", ["not found", "'2147483648' is not a customer id"]),
        ("/api/rfm/99999999999999999999/", ["not found", "is not a customer id"]),
        ("/api/rfm/999/", ["customer 999"]),
        ("/api/rfm/100/", ["customer 100"]),  # a customer without orders has no score
    ],
)
def test_unknown_or_non_numeric_customer_is_404(scored: Flask, path: str, words: list[str]) -> None:
    assert_error(scored.test_client().get(path), 404, *words)


def test_pages_follow_next_and_previous_links(scored: Flask) -> None:
    client = scored.test_client()
    first = get_json(client, "/api/rfm/?page_size=5&ordering=-monetary")
    assert first["count"] == 23 and first["previous"] is None
    assert first["next"].startswith("http://localhost/api/rfm/")
    run_id = get_json(client, "/api/rfm/jobs/")["results"][0]["id"]
    assert parse_qs(urlsplit(first["next"]).query) == {
        "page_size": ["5"],
        "ordering": ["-monetary"],
        "run": [str(run_id)],
        "page": ["2"],
    }
    pages, url = [], "/api/rfm/?page_size=5&ordering=-monetary"
    while url:
        body = get_json(client, url)
        assert body["count"] == 23
        pages.append(body)
        url = body["next"]
    assert [len(p["results"]) for p in pages] == [5, 5, 5, 5, 3]
    ids = [r["customer_id"] for p in pages for r in p["results"]]
    assert sorted(ids) == list(range(1, 24)) and len(set(ids)) == 23
    # Walking back gives the same pages; page 2's previous link drops "page".
    second_previous = pages[1]["previous"]
    assert "page=" not in second_previous
    assert get_json(client, second_previous) == pages[0]
    assert get_json(client, pages[-1]["previous"]) == pages[-2]
    assert_error(client.get("/api/rfm/?page_size=5&page=6"), 404, "Invalid page.")
    assert_error(client.get(f"/api/rfm/?page={10**30}"), 404, "Invalid page.")


def test_pages_followed_by_their_links_stay_on_one_run(scored: Flask) -> None:
    """A recalculation that finishes while a client pages through must not
    hand it the rest from the new run (customers missed or repeated, scores
    of two dates mixed): the links name the first page's run."""
    client = scored.test_client()
    old = get_json(client, "/api/rfm/jobs/")["results"][0]["id"]
    url = "/api/rfm/?page_size=5&ordering=-recency_days"
    first = get_json(client, url)
    segment_url = "/api/rfm/by-segment/?segment=champions&page_size=1"
    first_of_segment = get_json(client, segment_url)
    add_orders(
        scored,
        [(c, dt.datetime.combine(AS_OF, dt.time(9), tzinfo=UTC), "5.00") for c in (200, 201)],
    )
    new = calculate(scored, AS_OF + dt.timedelta(days=3))
    assert new["status"] == "succeeded" and new["customers_scored"] == 25

    rest = all_results(client, first["next"])
    pinned = all_results(client, f"{url}&run={old}")
    assert first["results"] + rest == pinned
    assert sorted(r["customer_id"] for r in pinned) == list(range(1, 24))
    assert {r["calculated_at"] for r in pinned} == {first["results"][0]["calculated_at"]}
    assert get_json(client, f"{url}&run={old}")["count"] == 23
    current = all_results(client, url)
    assert len(current) == 25 and current != pinned
    assert parse_qs(urlsplit(get_json(client, url)["next"]).query)["run"] == [str(new["id"])]

    segment_rest = all_results(client, first_of_segment["next"])
    assert first_of_segment["results"] + segment_rest == all_results(
        client, f"{segment_url}&run={old}"
    )
    assert get_json(client, segment_url)["count"] == new["segment_counts"]["Champions"]


def test_paging_a_run_without_scores_is_a_400(scored: Flask) -> None:
    scored.config["RFM_KEEP_RUNS"] = 2
    client = scored.test_client()
    first = get_json(client, "/api/rfm/jobs/")["results"][0]["id"]
    for days in (1, 2):
        assert calculate(scored, AS_OF + dt.timedelta(days=days))["status"] == "succeeded"
    with scored.app_context():
        settings = runs.RunSettings.from_app(scored)
        failed, _ = runs.request_run(db.engine, settings, "cli", AS_OF)
        runs.fail_queued(db.engine, failed["id"], "broken on purpose")
    cases = [
        (f"run={first}", ["run", f"the scores of run {first} were purged", "RFM_KEEP_RUNS"]),
        (f"run={failed['id']}", [f"run {failed['id']} is failed", "only succeeded runs"]),
        ("run=999", ["no calculation run 999"]),
        ("run=0", ["run"]),
        ("run=abc", ["run"]),
        (f"run={2**31}", ["run"]),
    ]
    for query, words in cases:
        assert_error(client.get(f"/api/rfm/?{query}"), 400, *words)
        assert_error(client.get(f"/api/rfm/by-segment/?segment=lost&{query}"), 400, *words)
    assert get_json(client, f"/api/rfm/?run={first + 1}")["count"] == 23


def _sort_key(field: str, row: dict[str, Any]) -> Any:
    value = row[field]
    return Decimal(value) if field == "monetary" else value


@pytest.mark.parametrize(
    "ordering",
    ["-monetary", "monetary", "recency_days", "-frequency_score", "segment,-recency_days", None],
)
def test_ordering_sorts_with_customer_id_as_final_tie_break(
    scored: Flask, ordering: str | None
) -> None:
    client = scored.test_client()
    url = "/api/rfm/?page_size=4" + (f"&ordering={ordering}" if ordering else "")
    rows = all_results(client, url)
    expected = sorted(rows, key=lambda r: r["customer_id"])
    for part in reversed((ordering or "customer_id").split(",")):  # stable multi-key sort
        field = part.lstrip("-")
        expected.sort(key=lambda r, f=field: _sort_key(f, r), reverse=part.startswith("-"))
    assert [r["customer_id"] for r in rows] == [r["customer_id"] for r in expected]


def test_segment_filter_accepts_name_any_case_and_slug(scored: Flask) -> None:
    client = scored.test_client()
    everyone = all_results(client, "/api/rfm/?page_size=1000")
    counts = Counter(r["segment"] for r in everyone)
    segment = counts.most_common(1)[0][0]
    expected = sorted(r["customer_id"] for r in everyone if r["segment"] == segment)
    slug = segment.lower().replace(" ", "-")
    for text in (segment, segment.upper(), slug):
        for base in ("/api/rfm/?", "/api/rfm/by-segment/?"):
            body = get_json(client, f"{base}segment={text}&page_size=2")
            assert body["count"] == counts[segment]
            rows = all_results(client, f"{base}segment={text}&page_size=2")
            assert [r["customer_id"] for r in rows] == expected
            assert {r["segment"] for r in rows} == {segment}
    # A segment nobody falls into is valid and empty.
    empty = next(name for name in ("Champions", "Lost", "Need Attention") if not counts[name])
    assert get_json(client, f"/api/rfm/by-segment/?segment={empty}")["count"] == 0


@pytest.mark.parametrize(
    "query, words",
    [
        ("page=0", ["page", "greater than or equal to 1"]),
        ("page=-3", ["page"]),
        ("page=abc", ["page", "integer"]),
        ("page_size=0", ["page_size"]),
        (f"page_size={10**9}", ["page_size", "1000"]),
        ("page_size=1001", ["page_size", "1000"]),
        ("page_size=ten", ["page_size", "integer"]),
        ("ordering=password", ["ordering", "password", "allowed", "monetary"]),
        ("ordering=-", ["ordering"]),
        ("ordering=monetary;DROP TABLE rfm_scores", ["ordering"]),
        ("ordering=rfm_score", ["ordering", "rfm_score"]),
        ("ordering=monetary,-monetary", ["ordering", "'monetary' is given more than once"]),
        # Each repeat would be one more ORDER BY term: SQLite refuses 10,000.
        ("ordering=" + ",".join(["frequency"] * 10_000), ["ordering", "more than once"]),
        ("segment=nobody", ["segment", "nobody", "Champions", "Hibernating", "Others"]),
        ("segment=", ["segment", "Champions"]),
    ],
)
def test_bad_list_query_is_400_naming_the_field(
    scored: Flask, query: str, words: list[str]
) -> None:
    assert_error(scored.test_client().get(f"/api/rfm/?{query}"), 400, *words)


@pytest.mark.parametrize(
    "query, words",
    [
        ("", ["segment", "required", "Champions", "At Risk", "Others"]),
        ("segment=vip", ["segment", "vip", "Champions", "At Risk", "Others"]),
        ("segment=at-risk&page=0", ["page"]),
        ("segment=at-risk&ordering=name", ["ordering"]),
    ],
)
def test_bad_by_segment_query_is_400_listing_valid_names(
    client: FlaskClient, query: str, words: list[str]
) -> None:
    assert_error(client.get(f"/api/rfm/by-segment/?{query}"), 400, *words)


# --- statistics -------------------------------------------------------------------


def _ntile5(keys: list[tuple[Any, int]]) -> dict[int, int]:
    """NTILE(5) over ``(value, customer_id)`` keys sorted ascending."""
    ordered = sorted(keys)
    base, extra = divmod(len(ordered), 5)
    scores, index = {}, 0
    for bucket in range(1, 6):
        size = base + (bucket <= extra)
        for _, customer in ordered[index : index + size]:
            scores[customer] = bucket
        index += size
    return scores


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def test_statistics_match_an_independent_computation(scored: Flask) -> None:
    client = scored.test_client()
    stats = get_json(client, "/api/rfm/statistics/")
    orders = orders_for(23)
    per: dict[int, dict[str, Any]] = {}
    for c, at, amount in orders:
        row = per.setdefault(c, {"n": 0, "total": Decimal(0), "latest": at.date()})
        row["n"] += 1
        row["total"] += Decimal(amount)
        row["latest"] = max(row["latest"], at.date())
    recency = {c: (AS_OF - r["latest"]).days for c, r in per.items()}
    r_score = _ntile5([(-recency[c], c) for c in per])
    f_score = _ntile5([(r["n"], c) for c, r in per.items()])
    m_score = _ntile5([(r["total"], c) for c, r in per.items()])
    # Segment labels come from the list (the engine's job, tested elsewhere);
    # the scores behind them are checked here.
    listed = {r["customer_id"]: r for r in all_results(client, "/api/rfm/?page_size=1000")}
    assert {
        c: (r["recency_score"], r["frequency_score"], r["monetary_score"])
        for c, r in listed.items()
    } == {c: (r_score[c], f_score[c], m_score[c]) for c in per}
    segment_of = {c: r["segment"] for c, r in listed.items()}

    run = get_json(client, "/api/rfm/jobs/")["results"][0]
    assert stats["run_id"] == run["id"]
    assert stats["as_of"] == AS_OF.isoformat()
    assert stats["calculated_at"] == listed[1]["calculated_at"]
    assert stats["customers_scored"] == 23
    assert stats["customers_without_orders"] == 2
    assert stats["orders"] == len(orders)
    revenue = sum(r["total"] for r in per.values())
    assert stats["revenue"] == _money(revenue)

    by_name = {s["segment"]: s for s in stats["segments"]}
    assert set(by_name) >= set(segment_of.values())
    for name, s in by_name.items():
        members = [c for c in per if segment_of[c] == name]
        n = len(members)
        n_orders = sum(per[c]["n"] for c in members)
        seg_revenue = sum((per[c]["total"] for c in members), Decimal(0))
        assert s["customers"] == n
        assert s["customer_share"] == pytest.approx(n / 23, abs=1e-4)
        assert s["orders"] == n_orders
        assert s["revenue"] == _money(seg_revenue)
        assert s["revenue_share"] == pytest.approx(float(seg_revenue / revenue), abs=1e-4)
        if n:
            assert Decimal(s["average_order_value"]) == pytest.approx(
                seg_revenue / n_orders, abs=Decimal("0.005")
            )
            assert s["mean_recency_days"] == pytest.approx(
                sum(recency[c] for c in members) / n, abs=0.005
            )
            assert s["mean_frequency"] == pytest.approx(n_orders / n, abs=0.005)
            assert Decimal(s["mean_monetary"]) == pytest.approx(
                seg_revenue / n, abs=Decimal("0.005")
            )
        else:
            assert s["average_order_value"] is None and s["mean_monetary"] is None

    raw = {
        "recency": (r_score, recency),
        "frequency": (f_score, {c: r["n"] for c, r in per.items()}),
        "monetary": (m_score, {c: r["total"] for c, r in per.items()}),
    }
    for dimension, (score_of, value_of) in raw.items():
        buckets = stats["dimensions"][dimension]["scores"]
        assert [b["score"] for b in buckets] == [1, 2, 3, 4, 5]
        for b in buckets:
            values = [value_of[c] for c in per if score_of[c] == b["score"]]
            assert b["customers"] == len(values)
            low, high = min(values), max(values)
            if dimension == "monetary":
                low, high = _money(low), _money(high)
            assert (b["min"], b["max"]) == (low, high)


# --- calculation jobs ---------------------------------------------------------------


def _wait_for(client: FlaskClient, url: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = get_json(client, url)
        if run["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def test_post_runs_in_the_thread_executor_and_the_list_shows_it(app: Flask) -> None:
    add_orders(app, orders_for(12))
    old = calculate(app, dt.date(2026, 1, 1))
    client = app.test_client()
    old_calculated_at = get_json(client, "/api/rfm/1/")["calculated_at"]
    try:
        response = client.post("/api/rfm/calculate/", json={"as_of": AS_OF.isoformat()})
        assert response.status_code == 202, response.get_data(as_text=True)
        run = response.get_json()
        assert run["created"] is True and run["trigger"] == "api"
        assert run["as_of"] == AS_OF.isoformat() and run["id"] != old["id"]
        assert run["status"] in ("queued", "running", "succeeded")
        assert run["status_url"] == f"http://localhost/api/rfm/jobs/{run['id']}/"
        assert response.headers["Location"] == run["status_url"]
        done = _wait_for(client, run["status_url"])
        assert done["status"] == "succeeded", done["error"]
    finally:
        executor.shutdown(app)
    assert done["customers_scored"] == 12 and done["current"] is True
    assert sum(done["segment_counts"].values()) == 12
    assert done["duration_seconds"] >= 0 and done["finished_at"].endswith("Z")
    new = get_json(client, "/api/rfm/1/")
    assert new["calculated_at"] > old_calculated_at
    listed = get_json(client, "/api/rfm/")
    assert listed["count"] == 12
    assert {r["calculated_at"] for r in listed["results"]} == {new["calculated_at"]}
    assert get_json(client, "/api/rfm/statistics/")["run_id"] == done["id"]


def test_empty_body_calculates_as_of_today(app: Flask) -> None:
    client = app.test_client()
    try:
        for kwargs in ({}, {"json": {}}, {"json": {"as_of": None}}):
            response = client.post("/api/rfm/calculate/", **kwargs)
            assert response.status_code == 202, response.get_data(as_text=True)
            run = response.get_json()
            assert run["as_of"] == dt.datetime.now(UTC).date().isoformat()
            assert _wait_for(client, run["status_url"])["status"] == "succeeded"
    finally:
        executor.shutdown(app)


def test_second_post_while_one_is_queued_returns_that_run(app: Flask) -> None:
    with app.app_context():  # queued by another process, not picked up yet
        queued, _ = runs.request_run(db.engine, runs.RunSettings.from_app(app), "schedule", AS_OF)
    client = app.test_client()
    for body in ({"as_of": "2026-01-01"}, None):
        response = client.post("/api/rfm/calculate/", json=body)
        assert response.status_code == 202
        run = response.get_json()
        assert run["id"] == queued["id"] and run["created"] is False
        assert run["status"] == "queued" and run["trigger"] == "schedule"
    assert get_json(client, "/api/rfm/jobs/")["count"] == 1


DEEP = "[" * 5000 + "]" * 5000  # valid JSON, nested deeper than Python's recursion limit


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"data": "{not json", "content_type": "application/json"}, 400, ["not valid JSON"]),
        ({"data": b"\xff\xfe", "content_type": "application/json"}, 400, ["JSON"]),
        # json.loads recurses per level: Python's recursion limit, not a 500.
        ({"data": DEEP, "content_type": "application/json"}, 400, ["nested"]),
        ({"data": '{"as_of": ' + DEEP + "}", "content_type": "application/json"}, 400, ["nested"]),
        ({"json": {"as_of": "2026-02-30"}}, 400, ["as_of", "2026-02-30"]),
        ({"json": {"as_of": "20260228"}}, 400, ["as_of", "YYYY-MM-DD"]),
        ({"json": {"as_of": "\uff12\uff10\uff12\uff16-01-31"}}, 400, ["as_of", "YYYY-MM-DD"]),
        ({"json": {"as_of": "2026-W05-1"}}, 400, ["as_of"]),
        ({"json": {"as_of": "31/01/2026"}}, 400, ["as_of"]),
        ({"json": {"as_of": 20260131}}, 400, ["as_of"]),
        ({"json": {"as_of": "1800-01-01"}}, 400, ["as_of", "1900-01-01"]),
        ({"json": {"as_of": "2026-01-31", "force": True}}, 400, ["force", "unknown"]),
        ({"json": ["2026-01-31"]}, 400, ["request body", "JSON object"]),
        ({"data": "null", "content_type": "application/json"}, 400, ["JSON object"]),
        ({"data": "as_of=2026-01-31"}, 415, ["JSON"]),
        ({"data": "x" * 70_000, "content_type": "application/json"}, 413, ["65536 bytes"]),
    ],
)
def test_bad_calculate_body_is_4xx_and_starts_nothing(
    client: FlaskClient, kwargs: dict[str, Any], status: int, words: list[str]
) -> None:
    if "data" in kwargs:  # a form post unless the case says otherwise
        kwargs = {"content_type": "application/x-www-form-urlencoded", **kwargs}
    assert_error(client.post("/api/rfm/calculate/", **kwargs), status, *words)
    assert get_json(client, "/api/rfm/jobs/")["count"] == 0


def test_as_of_out_of_range_names_the_field_once(client: FlaskClient) -> None:
    response = client.post("/api/rfm/calculate/", json={"as_of": "1800-01-01"})
    detail = assert_error(response, 400)
    assert detail == "as_of 1800-01-01 is outside 1900-01-01 .. 9999-12-30"


def test_jobs_list_is_newest_first_and_paginated(app: Flask) -> None:
    add_orders(app, orders_for(6))
    ids = [calculate(app, AS_OF - dt.timedelta(days=d))["id"] for d in range(3)]
    client = app.test_client()
    body = get_json(client, "/api/rfm/jobs/?page_size=2")
    assert body["count"] == 3 and body["previous"] is None
    assert [r["id"] for r in body["results"]] == ids[::-1][:2]
    rest = get_json(client, body["next"])
    assert [r["id"] for r in rest["results"]] == ids[:1] and rest["next"] is None
    job = get_json(client, f"/api/rfm/jobs/{ids[0]}/")
    assert job["status"] == "succeeded" and job["trigger"] == "cli"
    assert job["current"] is False and body["results"][0]["current"] is True
    assert job["status_url"] == f"http://localhost/api/rfm/jobs/{ids[0]}/"
    assert job["customers_scored"] == 6 and job["error"] is None
    assert isinstance(job["duration_seconds"], float)
    assert_error(client.get("/api/rfm/jobs/999/"), 404, "run 999")
    assert_error(client.get("/api/rfm/jobs/abc/"), 404, "'abc' is not a run id")
    assert_error(client.get("/api/rfm/jobs/0/"), 404, "'0' is not a run id")
    assert_error(client.get("/api/rfm/jobs/?page=0"), 400, "page")
    assert_error(client.get("/api/rfm/jobs/?page=3&page_size=2"), 404, "Invalid page.")


# --- errors and documents ------------------------------------------------------------


def test_every_error_is_json_detail(client: FlaskClient) -> None:
    assert_error(client.get("/nowhere"), 404, "not found")
    response = client.post("/api/rfm/")
    assert_error(response, 405, "method")
    assert "GET" in response.headers["Allow"]
    assert_error(client.get("/api/rfm/calculate/"), 405)
    assert_error(client.delete("/api/rfm/jobs/1/"), 405)


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/api/rfm/1"),
        ("GET", "/api/rfm/calculate"),
        ("POST", "/api/rfm/statistics"),
        ("DELETE", "/api/rfm/jobs"),
        ("POST", "/api/rfm/by-segment"),
    ],
)
def test_wrong_method_without_trailing_slash_is_405(
    client: FlaskClient, method: str, path: str
) -> None:
    # Not a 404 claiming that '1' (or 'calculate') "is not a customer id".
    with_slash = client.open(path + "/", method=method)
    assert with_slash.status_code == 405
    response = client.open(path, method=method)
    detail = assert_error(response, 405, "method")
    assert "customer id" not in detail
    assert response.headers["Allow"] == with_slash.headers["Allow"]


def test_without_trailing_slash_answers_directly(scored: Flask) -> None:
    client = scored.test_client()
    assert get_json(client, "/api/rfm")["count"] == 23
    assert get_json(client, "/api/rfm/5")["customer_id"] == 5


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_document_lists_every_endpoint(client: FlaskClient) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    spec = json.loads(response.get_data(as_text=True))
    assert spec["openapi"].startswith("3.")
    assert {
        path: sorted(m for m in ops if m != "parameters") for path, ops in spec["paths"].items()
    } == {
        "/api/rfm/": ["get"],
        "/api/rfm/{customer_id}/": ["get"],
        "/api/rfm/calculate/": ["post"],
        "/api/rfm/jobs/": ["get"],
        "/api/rfm/jobs/{run_id}/": ["get"],
        "/api/rfm/statistics/": ["get"],
        "/api/rfm/by-segment/": ["get"],
        "/api/rfm/transitions/": ["get"],
        "/api/rfm/grid/": ["get"],
        "/api/rfm/export.csv": ["get"],
    }
    for ref in _refs(spec):  # every reference resolves inside the document
        node = spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    schemas = spec["components"]["schemas"]
    assert set(schemas["Score"]["properties"]) == SCORE_FIELDS
    assert set(schemas["Detail"]["properties"]) == {"detail"}
    by_segment = spec["paths"]["/api/rfm/by-segment/"]["get"]["parameters"]
    assert {p["name"]: p["required"] for p in by_segment}["segment"] is True


def test_statistics_schema_documents_every_stored_field(scored: Flask) -> None:
    client = scored.test_client()
    stats = get_json(client, "/api/rfm/statistics/")
    schemas = get_json(client, "/api/openapi.json")["components"]["schemas"]
    assert set(stats) == set(schemas["Statistics"]["properties"])
    assert set(stats["segments"][0]) == set(schemas["SegmentStats"]["properties"])
    dimension = stats["dimensions"]["recency"]
    assert set(dimension) == set(schemas["DimensionStats"]["properties"])
    assert set(dimension["scores"][0]) == set(schemas["ScoreBucket"]["properties"])


def test_docs_page_renders_offline(client: FlaskClient) -> None:
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for path in ("/api/rfm/calculate/", "/api/rfm/by-segment/", "/api/rfm/jobs/{run_id}/"):
        assert path in html
    assert "<script" not in html and 'src="http' not in html and "@import" not in html
