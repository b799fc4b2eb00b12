"""The API's calculation jobs through real Redis and the real Celery worker
that ``celery_support`` starts: POST → queued → worker → succeeded."""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service.extensions import db
from tests.celery_support import scalar
from tests.conftest import add_orders

pytestmark = pytest.mark.celery


def orders(shift_days: int) -> list[tuple[int, dt.datetime, Decimal]]:
    base = dt.datetime(2026, 2, 1, 12, tzinfo=dt.UTC)
    return [
        (c, base + dt.timedelta(days=(c * 5 + shift_days) % 27), Decimal(c % 11) + 1)
        for c in range(1, 41)
    ]


def wait_for_job(client: Any, run_id: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/rfm/jobs/{run_id}/").get_json()
        if job["status"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"run {run_id} still {job['status']}"
        time.sleep(0.05)


def test_post_calculate_runs_on_the_worker_and_the_list_shows_the_new_scores(
    worker_app: Flask,
) -> None:
    add_orders(worker_app, orders(0))
    client = worker_app.test_client()

    started = time.monotonic()
    first = client.post("/api/rfm/calculate/", json={"as_of": "2026-03-01"})
    assert first.status_code == 202 and time.monotonic() - started < 1.0
    assert first.get_json()["status"] == "queued"
    job = wait_for_job(client, first.get_json()["id"])
    assert job["status"] == "succeeded", job
    assert job["trigger"] == "api" and job["customers_scored"] == 40
    assert job["started_at"] and job["finished_at"]
    listed = client.get("/api/rfm/?page_size=1").get_json()
    assert listed["count"] == 40
    first_calculated_at = listed["results"][0]["calculated_at"]

    second = client.post("/api/rfm/calculate/", json={"as_of": "2026-03-02"})
    job = wait_for_job(client, second.get_json()["id"])
    assert job["status"] == "succeeded"
    after = client.get("/api/rfm/?page_size=1").get_json()["results"][0]["calculated_at"]
    assert after > first_calculated_at
    stats = client.get("/api/rfm/statistics/").get_json()
    assert (stats["run_id"], stats["as_of"]) == (job["id"], "2026-03-02")
    # The worker, not this process, ran it.
    assert scalar(worker_app, "SELECT worker FROM rfm_runs WHERE id = :i", i=job["id"])


def test_twenty_concurrent_posts_start_exactly_one_run(worker_app: Flask) -> None:
    add_orders(worker_app, orders(3))
    barrier = threading.Barrier(20)
    answers: list[tuple[int, int]] = []
    lock = threading.Lock()

    def post() -> None:
        client = worker_app.test_client()
        barrier.wait(10)
        response = client.post("/api/rfm/calculate/", json={"as_of": "2026-03-01"})
        with lock:
            answers.append((response.status_code, response.get_json()["id"]))

    # A real table lock keeps the run active while all twenty arrive; without
    # it the worker may finish before the last POST, which then rightly
    # starts a second run.
    with worker_app.app_context(), db.engine.connect() as blocker:
        blocker.execute(sa.text("LOCK TABLE rfm_scores IN SHARE MODE"))
        threads = [threading.Thread(target=post) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        blocker.rollback()
    assert len(answers) == 20
    assert {status for status, _ in answers} == {202}
    assert len({run_id for _, run_id in answers}) == 1
    job = wait_for_job(worker_app.test_client(), answers[0][1])
    assert job["status"] == "succeeded"
    assert scalar(worker_app, "SELECT COUNT(*) FROM rfm_runs") == 1
