"""Celery wiring (the Flask docs' pattern): tasks run inside the app context."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.schedules import crontab
from flask import Flask


def schedule_from_crontab(expression: str) -> crontab:
    """``"m h dom mon dow"`` (UTC) to a Celery crontab; ValueError if malformed."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"RFM_SCHEDULE needs 5 crontab fields, got {expression!r}")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except Exception as exc:  # celery raises ValueError or its own ParseException
        raise ValueError(f"RFM_SCHEDULE {expression!r} is not a valid crontab: {exc}") from None


def celery_config(app: Flask) -> dict[str, Any]:
    time_limit = app.config["RFM_TIME_LIMIT"]
    return {
        "broker_url": app.config["REDIS_URL"],
        "task_ignore_result": True,  # status lives in rfm_runs
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": time_limit,
        "task_time_limit": time_limit + 60,
        # Fail fast when Redis is down instead of blocking the request.
        "broker_connection_timeout": 2,
        "broker_connection_retry_on_startup": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        "broker_transport_options": {
            # Above the hard limit, or Redis redelivers a task still running.
            "visibility_timeout": time_limit + 600,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "rfm-scheduled-calculation": {
                "task": "rfm.scheduled",
                "schedule": schedule_from_crontab(app.config["RFM_SCHEDULE"]),
            }
        },
    }


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_config(app))
    celery_app.set_default()
    from . import tasks  # noqa: F401  (registers the shared tasks)

    app.extensions["celery"] = celery_app
    return celery_app
