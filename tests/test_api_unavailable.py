"""Dependencies down, for real (no mocks): Redis refused on port 1, a
PostgreSQL database that does not exist. Requests fail fast with a 503
``{"detail"}``, and no queued run is left to block the next request."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service.extensions import db

from .conftest import make_app

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def celery_app(app: Flask) -> Iterator[Flask]:
    """The same database as ``app``, with the Celery executor on a dead broker."""
    celery_app = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        RFM_EXECUTOR="celery",
        REDIS_URL=UNREACHABLE_REDIS,
    )
    yield celery_app
    with celery_app.app_context():
        db.engine.dispose()


def test_broker_down_answers_503_fast_and_fails_the_run(celery_app: Flask) -> None:
    client = celery_app.test_client()
    started = time.monotonic()
    response = client.post("/api/rfm/calculate/", json={"as_of": "2026-01-31"})
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.get_data(as_text=True)
    assert elapsed < 2.0
    body = response.get_json()
    assert set(body) == {"detail"} and "broker is unreachable" in body["detail"]
    assert response.headers["Retry-After"]

    jobs = client.get("/api/rfm/jobs/").get_json()
    assert jobs["count"] == 1
    run = jobs["results"][0]
    assert run["status"] == "failed"
    assert run["error"] == "the task broker is unreachable"
    assert run["finished_at"] is not None

    # Nothing is left active: the next request records a new run.
    again = client.post("/api/rfm/calculate/", json={})
    assert again.status_code == 503
    runs_now = client.get("/api/rfm/jobs/").get_json()["results"]
    assert [r["status"] for r in runs_now] == ["failed", "failed"]
    assert runs_now[0]["id"] != run["id"]


def test_database_down_answers_503_with_detail(pg_url: str) -> None:
    missing = sa.make_url(pg_url).set(database="rfm_no_such_database")
    app = make_app(missing.render_as_string(hide_password=False))
    client = app.test_client()
    for path in ("/api/rfm/", "/api/rfm/1/", "/api/rfm/statistics/", "/api/rfm/jobs/"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.get_json() == {"detail": "the database is unavailable; try again later"}
    response = client.post("/api/rfm/calculate/", json={})
    assert response.status_code == 503


def test_an_exhausted_connection_pool_answers_503_not_500(pg_url: str) -> None:
    app = make_app(
        pg_url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.3},
    )
    with app.app_context():
        held = db.engine.connect()  # the pool's only connection, for real
        try:
            response = app.test_client().get("/api/rfm/")
        finally:
            held.close()
            db.engine.dispose()
    assert response.status_code == 503
    assert response.get_json() == {"detail": "the database is unavailable; try again later"}
