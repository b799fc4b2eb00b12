"""Celery tasks: JSON-safe arguments only (run ids), logic in ``runs``."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from flask import current_app

from . import runs
from .extensions import db


def _settings() -> runs.RunSettings:
    return runs.RunSettings.from_app(current_app)


def _summary(run: runs.RunRecord) -> dict[str, Any]:
    return {"run_id": run["id"], "status": run["status"], "error": run["error"]}


@shared_task(name="rfm.calculate")
def calculate(run_id: int) -> dict[str, Any]:
    """Execute a queued run; a duplicate delivery finds it done or locked."""
    return _summary(runs.execute_run(db.engine, _settings(), run_id))


@shared_task(name="rfm.scheduled")
def scheduled() -> dict[str, Any]:
    """Beat tick: start a run unless one is active (ticks never stack)."""
    run, created = runs.request_run(db.engine, _settings(), "schedule")
    if not created:
        return {"run_id": run["id"], "status": run["status"], "skipped": True}
    return _summary(runs.execute_run(db.engine, _settings(), run["id"]))
