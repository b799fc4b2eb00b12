"""Hostile requests: oversized bodies get 413, SQL-looking input gets 4xx
and changes nothing. On SQLite and PostgreSQL, authentication on, with a
valid write token (so the input reaches the views, not just the auth check).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import create_app, executor
from rfm_service.extensions import db
from rfm_service.models import RFMRun

from .auth_support import DATABASES, bearer, database_url, issue_token, secured_app
from .conftest import add_orders
from .test_api import AS_OF, calculate, orders_for

DEFAULT_LIMIT = 64 * 1024  # RFM_MAX_BODY_BYTES's documented default
INJECTIONS = [
    "1 OR 1=1",
    "1; DROP TABLE customers; --",
    "'; DELETE FROM orders; --",
    "Champions' OR '1'='1",
    "-monetary; DROP TABLE rfm_scores",
    "monetary) UNION SELECT token_hash FROM api_tokens --",
    "customer_id DESC, (SELECT pg_sleep(5))",
    "1/**/UNION/**/SELECT/**/1",
    '" OR ""="',
    "\x00",
    "%27%20OR%201%3D1",
]


@pytest.fixture(params=DATABASES)
def scored_app(request: pytest.FixtureRequest) -> Iterator[Flask]:
    for app in secured_app(database_url(request)):
        add_orders(app, orders_for(30))
        calculate(app, AS_OF)
        yield app
        executor.shutdown(app)


@pytest.fixture
def headers(scored_app: Flask) -> dict[str, str]:
    return bearer(issue_token(scored_app, "write"))


def snapshot(app: Flask) -> dict[str, Any]:
    """Every table's name and rows: a write or a dropped table would show."""
    with app.app_context(), db.engine.connect() as conn:
        names = sorted(sa.inspect(conn).get_table_names())
        return {
            name: sorted(map(repr, conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()))
            for name in names
        }


def assert_detail_error(response: Any, *statuses: int) -> None:
    assert response.status_code in statuses, (response.status_code, response.get_data()[:500])
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body


# -- body size -----------------------------------------------------------------------


def _padded_body(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    head = b'{"as_of": "2026-01-31", "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_a_body_over_the_limit_gets_413_and_starts_nothing(
    scored_app: Flask, headers: dict[str, str]
) -> None:
    before = snapshot(scored_app)
    client = scored_app.test_client()

    response = client.post(
        "/api/rfm/calculate/",
        data=_padded_body(DEFAULT_LIMIT + 1),
        content_type="application/json",
        headers=headers,
    )

    assert_detail_error(response, 413)
    assert str(DEFAULT_LIMIT) in response.get_json()["detail"]
    assert snapshot(scored_app) == before  # no run was queued


def test_a_body_at_the_limit_is_read_and_judged_on_its_content(
    scored_app: Flask, headers: dict[str, str]
) -> None:
    response = scored_app.test_client().post(
        "/api/rfm/calculate/",
        data=_padded_body(DEFAULT_LIMIT),
        content_type="application/json",
        headers=headers,
    )
    # Not too large: refused for its unknown field "pad" instead.
    assert_detail_error(response, 400)
    assert "pad" in response.get_json()["detail"]


def test_the_limit_follows_rfm_max_body_bytes(sqlite_url: str) -> None:
    app = create_app({"SQLALCHEMY_DATABASE_URI": sqlite_url}, env={"RFM_MAX_BODY_BYTES": "100"})
    client = app.test_client()

    at_limit = client.post(
        "/api/rfm/calculate/", data=_padded_body(100), content_type="application/json"
    )
    over = client.post(
        "/api/rfm/calculate/", data=_padded_body(101), content_type="application/json"
    )

    assert_detail_error(at_limit, 400)  # read, and refused for its field "pad"
    assert_detail_error(over, 413)
    assert "100 bytes" in over.get_json()["detail"]
    with app.app_context():
        db.engine.dispose()


def test_a_body_without_content_length_is_cut_at_the_limit(
    scored_app: Flask, headers: dict[str, str]
) -> None:
    # A chunked upload declares no length: the limit must hold while reading.
    # Valid JSON padded with whitespace: cut at the limit, it would still parse.
    body = b'{"as_of": "2026-01-31"}' + b" " * (DEFAULT_LIMIT * 4)
    response = scored_app.test_client().post(
        "/api/rfm/calculate/",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn sets it
    )
    assert_detail_error(response, 413)


def test_a_small_body_without_content_length_is_read_whole(
    scored_app: Flask, headers: dict[str, str]
) -> None:
    response = scored_app.test_client().post(
        "/api/rfm/calculate/",
        input_stream=io.BytesIO(b'{"as_of": "2026-01-31"}'),
        content_type="application/json",
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["as_of"] == "2026-01-31"


# -- SQL-looking input ------------------------------------------------------------------


def test_sql_looking_query_values_get_4xx_and_change_nothing(
    scored_app: Flask, headers: dict[str, str]
) -> None:
    before = snapshot(scored_app)
    client = scored_app.test_client()

    for text in INJECTIONS:
        value = quote(text, safe="")
        for url in (
            f"/api/rfm/?ordering={value}",
            f"/api/rfm/?segment={value}",
            f"/api/rfm/by-segment/?segment={value}",
            f"/api/rfm/by-segment/?segment=champions&ordering={value}",
            f"/api/rfm/?page={value}",
            f"/api/rfm/?page_size={value}",
            f"/api/rfm/jobs/?page={value}",
        ):
            assert_detail_error(client.get(url, headers=headers), 400)
        for url in (f"/api/rfm/{value}/", f"/api/rfm/jobs/{value}/"):
            assert_detail_error(client.get(url, headers=headers), 404)

    assert snapshot(scored_app) == before


def test_sql_looking_as_of_values_get_400_and_start_nothing(
    scored_app: Flask, headers: dict[str, str]
) -> None:
    before = snapshot(scored_app)
    client = scored_app.test_client()

    for text in [*INJECTIONS, "2026-01-31'; DROP TABLE orders; --", "2026-01-31 OR 1=1"]:
        response = client.post("/api/rfm/calculate/", json={"as_of": text}, headers=headers)
        assert_detail_error(response, 400)
    # Not an object at all, and SQL text as a whole body.
    raw = client.post(
        "/api/rfm/calculate/",
        data=json.dumps("'; DROP TABLE orders; --"),
        content_type="application/json",
        headers=headers,
    )
    assert_detail_error(raw, 400)

    assert snapshot(scored_app) == before


def test_every_documented_query_parameter_survives_sql_looking_values(
    scored_app: Flask, headers: dict[str, str]
) -> None:
    # Walks the OpenAPI document, so parameters added later are covered too.
    client = scored_app.test_client()
    spec = client.get("/api/openapi.json").get_json()
    before = snapshot(scored_app)
    sent = 0
    for path, item in spec["paths"].items():
        if "{" in path or "get" not in item:
            continue
        for parameter in item["get"].get("parameters", []):
            if parameter["in"] != "query":
                continue
            for text in INJECTIONS:
                response = client.get(
                    f"{path}?{parameter['name']}={quote(text, safe='')}", headers=headers
                )
                assert response.status_code < 500, (path, parameter["name"], text)
                sent += 1
    assert sent >= 6 * len(INJECTIONS)
    assert snapshot(scored_app) == before


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"],
)
def test_an_empty_form_post_cannot_start_a_calculation(app: Flask, content_type: str) -> None:
    """What a cross-site HTML form can send (CSRF with cached Basic credentials)."""
    response = app.test_client().post(
        "/api/rfm/calculate/", data=b"", headers={"Content-Type": content_type}
    )
    assert response.status_code == 415
    assert "must be JSON" in response.get_json()["detail"]
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(RFMRun)).scalar() == 0


def test_an_empty_post_without_content_type_still_uses_today(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/api/rfm/calculate/")
    assert response.status_code == 202
    assert response.get_json()["as_of"] == dt.datetime.now(dt.UTC).date().isoformat()
    # Let the in-process run finish: it must not outlive this test's tables.
    deadline = time.monotonic() + 30
    while client.get(response.get_json()["status_url"]).get_json()["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)
