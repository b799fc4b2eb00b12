"""Flower against the test worker's broker: never open, and it sees the worker."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask

from tests.celery_support import (
    Service,
    Worker,
    free_port,
    http_get,
    service_env,
    start_service,
    wait_for_run,
)
from tests.conftest import add_orders

pytest_plugins = ["tests.celery_support"]
pytestmark = pytest.mark.celery

CREDENTIALS = ("rfm-admin", "s3cret:with-colon")


@pytest.fixture(scope="module")
def flower(celery_worker: Worker, service_logs: Path) -> Iterator[tuple[Service, str]]:
    port = free_port()
    argv = [
        "celery", "-A", "worker", "flower", "--address=127.0.0.1", f"--port={port}",
        f"--basic-auth={CREDENTIALS[0]}:{CREDENTIALS[1]}",
    ]  # fmt: skip
    with start_service("flower", argv, celery_worker.env, service_logs) as service:
        url = f"http://127.0.0.1:{port}"
        service.wait_for("Flower to listen", lambda: http_get(f"{url}/healthcheck")[0] == 200)
        yield service, url


@pytest.mark.parametrize("path", ["/", "/workers", "/tasks", "/api/workers", "/api/tasks"])
@pytest.mark.parametrize("auth", [None, (CREDENTIALS[0], "wrong"), ("intruder", CREDENTIALS[1])])
def test_flower_refuses_requests_without_valid_credentials(
    flower: tuple[Service, str], path: str, auth: tuple[str, str] | None
) -> None:
    _, url = flower
    status, _ = http_get(url + path, auth=auth)
    assert status == 401


def test_flower_api_lists_the_running_worker(
    flower: tuple[Service, str], celery_worker: Worker
) -> None:
    service, url = flower
    found: dict[str, object] = {}

    def worker_listed() -> bool:
        # refresh=1 makes Flower ask the workers now (an inspect broadcast).
        status, body = http_get(f"{url}/api/workers?refresh=1", auth=CREDENTIALS, timeout=10)
        if status == 200:
            found.update(json.loads(body))
        return celery_worker.node in found

    service.wait_for(f"{celery_worker.node} in /api/workers", worker_listed, timeout=20)
    info = found[celery_worker.node]
    assert isinstance(info, dict)
    assert "rfm.calculate" in info["registered"] and "rfm.scheduled" in info["registered"]
    assert [q["name"] for q in info["active_queues"]] == [celery_worker.queue]

    status, page = http_get(f"{url}/workers", auth=CREDENTIALS)
    assert status == 200 and "<html" in page.lower()


@pytest.mark.parametrize(
    ("flower_env", "message"),
    [
        ({}, "Flower needs authentication: set FLOWER_BASIC_AUTH=user:password"),
        ({"FLOWER_BASIC_AUTH": "no-password"}, "FLOWER_BASIC_AUTH must be user:password"),
    ],
)
def test_flower_does_not_start_without_credentials(
    pg_url: str, task_queue: str, service_logs: Path, flower_env: dict[str, str], message: str
) -> None:
    env = service_env(pg_url, task_queue, **flower_env)
    argv = ["celery", "-A", "worker", "flower", "--address=127.0.0.1", f"--port={free_port()}"]
    with start_service("flower-open", argv, env, service_logs) as service:
        code = service.wait_for_exit(timeout=20)

    assert code != 0
    assert message in service.log()


def test_flower_takes_its_credentials_from_flower_basic_auth(
    pg_url: str, task_queue: str, service_logs: Path
) -> None:
    """The deployment's way: the password in the environment, not on the
    command line where `ps` shows it."""
    port = free_port()
    env = service_env(pg_url, task_queue, FLOWER_BASIC_AUTH="ops:pa55")
    argv = ["celery", "-A", "worker", "flower", "--address=127.0.0.1", f"--port={port}"]
    with start_service("flower-env-auth", argv, env, service_logs) as service:
        url = f"http://127.0.0.1:{port}"
        service.wait_for("Flower to listen", lambda: http_get(f"{url}/healthcheck")[0] == 200)

        assert http_get(f"{url}/")[0] == 401
        assert http_get(f"{url}/", auth=("ops", "pa55"))[0] == 200


def test_a_calculation_posted_to_the_api_shows_in_flower(
    flower: tuple[Service, str], worker_app: Flask
) -> None:
    service, url = flower
    add_orders(worker_app, [(1, dt.datetime(2026, 2, 1, tzinfo=dt.UTC), Decimal("9.99"))])
    posted = worker_app.test_client().post("/api/rfm/calculate/", json={"as_of": "2026-03-01"})
    run_id = posted.get_json()["id"]
    assert wait_for_run(worker_app, run_id)["status"] == "succeeded"
    seen: dict[str, dict[str, object]] = {}

    def task_succeeded_in_flower() -> bool:
        status, body = http_get(f"{url}/api/tasks", auth=CREDENTIALS, timeout=10)
        if status == 200:
            seen.update(json.loads(body))
        return any(
            t["name"] == "rfm.calculate" and t["args"] == f"({run_id},)" and t["state"] == "SUCCESS"
            for t in seen.values()
        )

    service.wait_for(f"run {run_id}'s task in Flower", task_succeeded_in_flower, timeout=20)


@pytest.mark.parametrize(
    "argv",
    [
        ["--auth="],
        ["--auth", ""],
        ["--basic-auth="],
        ["--basic_auth="],
        ["--basic-auth=admin:"],
        ["--basic-auth=:secret"],
        ["--basic-auth", "--port=5555"],
    ],
)
def test_an_empty_or_malformed_auth_option_does_not_open_flower(argv: list[str]) -> None:
    """`--auth=` (say `--auth=$UNSET_VAR` in a script) had Flower serve its
    pages to anyone: the guard only looked at the option's name."""
    from rfm_service.celery_app import flower_auth_problem

    assert flower_auth_problem("", argv) is not None


@pytest.mark.parametrize(
    "argv",
    [["--basic-auth=ops:pa55"], ["--basic-auth", "ops:pa55"], ["--auth=.*@example\\.com"]],
)
def test_a_complete_auth_option_lets_flower_start(argv: list[str]) -> None:
    from rfm_service.celery_app import flower_auth_problem

    assert flower_auth_problem("", argv) is None
