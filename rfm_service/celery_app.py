"""Celery wiring (the Flask docs' pattern): tasks run inside the app context."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import click
from celery import Celery, Task
from celery.beat import PersistentScheduler, ScheduleEntry
from celery.schedules import crontab, crontab_parser
from flask import Flask

SCHEDULE_ENTRY = "rfm-scheduled-calculation"
# (name, values, lowest) of the five crontab fields, in crontab order.
_CRONTAB_FIELDS = (
    ("minute", 60, 0),
    ("hour", 24, 0),
    ("day-of-month", 31, 1),
    ("month", 12, 1),
    ("day-of-week", 7, 0),
)
# Days in each month, February of a leap year.
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def schedule_from_crontab(expression: str) -> crontab:
    """``"m h dom mon dow"`` (UTC) to a Celery crontab; ValueError if malformed."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"RFM_SCHEDULE needs 5 crontab fields (minute hour day-of-month month "
            f"day-of-week), got {expression!r}"
        )
    # Parse field by field first so the message names the bad field.
    for (name, size, lowest), value in zip(_CRONTAB_FIELDS, fields, strict=True):
        try:
            crontab_parser(size, lowest).parse(value)
        except Exception as exc:  # celery raises ValueError or its own ParseException
            raise ValueError(
                f"RFM_SCHEDULE {expression!r} is not a valid crontab: {name} field {value!r}: {exc}"
            ) from None
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        schedule = crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except Exception as exc:
        raise ValueError(f"RFM_SCHEDULE {expression!r} is not a valid crontab: {exc}") from None
    # Each field alone is fine, but "31 in February" never comes (Celery 5.7
    # refuses it; 5.6, which requirements.txt pins, would accept it).
    if not any(
        day <= _DAYS_IN_MONTH[month - 1]
        for month in schedule.month_of_year
        for day in schedule.day_of_month
    ):
        raise ValueError(
            f"RFM_SCHEDULE {expression!r} is not a valid crontab: day-of-month "
            f"{day_of_month!r} never occurs in month {month_of_year!r}"
        )
    return schedule


def celery_config(app: Flask) -> dict[str, Any]:
    time_limit = app.config["RFM_TIME_LIMIT"]
    queue = app.config["RFM_TASK_QUEUE"]
    return {
        "broker_url": app.config["REDIS_URL"],
        # API, beat and worker of one deployment share this queue; another
        # deployment (or a test run) on the same Redis uses its own.
        "task_default_queue": queue,
        "task_ignore_result": True,  # status lives in rfm_runs
        # No results stored, so nothing to expire: without this beat adds a
        # daily `celery.backend_cleanup` task to the schedule.
        "result_expires": None,
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
        # Task events, so Flower shows each calculation (received, started,
        # succeeded) and not only the worker's totals.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            SCHEDULE_ENTRY: {
                "task": "rfm.scheduled",
                "schedule": schedule_from_crontab(app.config["RFM_SCHEDULE"]),
            }
        },
        "beat_scheduler": "rfm_service.celery_app:TickScheduler",
    }


class TickScheduler(PersistentScheduler):
    """Beat's scheduler, each tick expiring when the next one is due. A tick
    waits in the queue while the worker is busy or down; without an expiry,
    every tick sent meanwhile would start a run once it is free (with
    ``* * * * *`` and a 130 s run: two more runs back to back)."""

    def apply_async(
        self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        if entry.name == SCHEDULE_ENTRY:
            entry.options["expires"] = tick_expiry(entry.schedule, self.app.now())
        return super().apply_async(entry, producer, advance, **kwargs)


def tick_expiry(schedule: crontab, sent_at: dt.datetime) -> float:
    """Seconds from ``sent_at`` until the schedule's next tick after it."""
    return max(1.0, schedule.remaining_estimate(sent_at).total_seconds())


def flower_auth_problem(configured: str, argv: Sequence[str]) -> str | None:
    """Why Flower must not start, or None. Flower can revoke tasks and shut
    workers down, so it never runs open: it needs ``FLOWER_BASIC_AUTH``
    (``user:password``, which Flower reads from the environment itself) or an
    explicit ``--basic-auth`` / ``--auth`` option."""
    options = _auth_options(argv)
    if options.get("--auth"):
        return None
    if "--basic-auth" in options:
        # An empty or malformed value would have Flower serve its pages open.
        if _credentials_problem(options["--basic-auth"]):
            return "--basic-auth must be user:password (comma-separated for several)"
        return None
    if "--auth" in options:  # given, but empty: Flower would serve its pages open
        return "--auth needs a value (an email pattern for OAuth); or set FLOWER_BASIC_AUTH"
    if not configured:
        return "Flower needs authentication: set FLOWER_BASIC_AUTH=user:password"
    if _credentials_problem(configured):
        return "FLOWER_BASIC_AUTH must be user:password (comma-separated for several)"
    return None


def _credentials_problem(value: str) -> bool:
    for credential in value.split(","):
        user, _, password = credential.partition(":")
        if not user or not password:
            return True
    return False


def _auth_options(argv: Sequence[str]) -> dict[str, str]:
    """The values of Flower's authentication options in ``argv``
    (``--opt=value`` or ``--opt value``), by their dashed names."""
    found: dict[str, str] = {}
    for i, arg in enumerate(argv):
        name, has_value, value = arg.partition("=")
        name = name.replace("_", "-")
        if name not in ("--basic-auth", "--auth"):
            continue
        if not has_value:
            following = argv[i + 1] if i + 1 < len(argv) else ""
            value = "" if following.startswith("--") else following
        found[name] = value.strip()
    return found


def _flower_auth_guard(app: Flask) -> click.Option:
    # Celery adds "preload" options to every subcommand, plugins included, so
    # this callback sees the `flower` subcommand before Flower starts serving.
    def check(ctx: click.Context, param: click.Parameter, _value: object) -> None:
        if ctx.info_name != "flower":
            # Celery 5.6 hands every preload option's value to the commands it
            # wraps (worker, beat, inspect: each takes **kwargs) and fails with
            # KeyError on one that is missing. Flower's command is not wrapped
            # and takes no such keyword, so it gets no value.
            ctx.params[str(param.name)] = None
            return
        argv = [str(arg) for arg in ctx.params.get("tornado_argv") or ()]
        problem = flower_auth_problem(app.config["FLOWER_BASIC_AUTH"], argv)
        if problem:
            raise click.UsageError(problem, ctx)

    return click.Option(
        ["--rfm-flower-auth-guard"], is_flag=True, hidden=True, expose_value=False, callback=check
    )


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_config(app))
    celery_app.user_options["preload"].add(_flower_auth_guard(app))
    celery_app.set_default()
    from . import tasks  # noqa: F401  (registers the shared tasks)

    app.extensions["celery"] = celery_app
    return celery_app
