"""Celery tasks: JSON-safe arguments only (run ids), logic in ``runs``."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.utils.log import get_task_logger
from flask import current_app

from . import executor, runs
from .extensions import db

log = get_task_logger(__name__)


def _settings() -> runs.RunSettings:
    return runs.RunSettings.from_app(current_app)


def _summary(run: runs.RunRecord) -> dict[str, Any]:
    return {"run_id": run["id"], "status": run["status"], "error": run["error"]}


@shared_task(name="rfm.calculate")
def calculate(run_id: int) -> dict[str, Any]:
    """Execute a queued run; a duplicate delivery finds it done or locked."""
    if runs.get_run_by_id(db.engine, run_id) is None:
        # Runs are committed before they are published, so a missing run was
        # deleted or belongs to another database. Retrying cannot help, and
        # raising would only add a traceback: log it and drop the message.
        log.warning("rfm.calculate: run %s does not exist; nothing to do", run_id)
        return {"run_id": run_id, "status": "missing", "error": None}
    return _summary(runs.execute_run(db.engine, _settings(), run_id))


@shared_task(name="rfm.scheduled")
def scheduled() -> dict[str, Any]:
    """Beat tick: queue a run unless one is active, and send it to
    ``rfm.calculate`` like any other. Executed there, a run whose worker is
    killed is redelivered and taken over (at most ``MAX_ATTEMPTS`` times);
    a redelivered tick would only have queued another run."""
    run, created = runs.request_run(db.engine, _settings(), "schedule")
    if not created:
        log.info("rfm.scheduled: run %s is %s; this tick is skipped", run["id"], run["status"])
        return {"run_id": run["id"], "status": run["status"], "skipped": True}
    executor.publish(current_app._get_current_object(), run["id"])  # type: ignore[attr-defined]
    return _summary(run)
