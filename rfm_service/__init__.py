"""RFM customer segmentation service: the app factory."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from sqlalchemy import event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError

from .config import load_config
from .extensions import db, migrate
from .schema_version import MIGRATIONS_DIR
from .segments import load_rules
from .sessions import CookieFirstSessionInterface


class ConfigError(RuntimeError):
    """Invalid configuration: the service refuses to start."""


MAX_WORKERS = 1024  # PostgreSQL's largest max_parallel_(maintenance_)workers(_per_gather)
MEMORY = re.compile(r"([0-9]+) ?(B|kB|MB|GB|TB)?")  # as PostgreSQL reads work_mem
# RFM_WORK_MEM sets work_mem and maintenance_work_mem; both must accept it.
# maintenance_work_mem's range (in kB) is the narrower one.
MEMORY_KB_RANGE = (1024, 2147483647)
MEMORY_UNIT_BYTES = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _memory_kb(size: str) -> int | None:
    """The size in kB as PostgreSQL reads it (no unit: kB; rounded), or None."""
    match = MEMORY.fullmatch(size)
    if match is None:
        return None
    number, unit = int(match.group(1)), match.group(2) or "kB"
    return round(number * MEMORY_UNIT_BYTES[unit] / 1024)


# The password of a URL: after "//user:" and before the last "@" of its netloc.
_URL_PASSWORD = re.compile(r"(?P<keep>//[^/?#@:]*:)[^/?#]*@")


def without_password(url: str) -> str:
    """``url`` for a message or a log: its password masked, even when the URL
    is too malformed for SQLAlchemy to parse (and so to mask). Without the
    "//user:" it expects, all before the last "@" is masked."""
    masked = _URL_PASSWORD.sub(lambda m: m.group("keep") + "***@", url)
    if masked == url and "@" in url:
        return "***@" + url.rpartition("@")[2]
    return masked


def check_database_url(url: str) -> None:
    """A URL SQLAlchemy reads, of a database the engine supports."""
    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"DATABASE_URL is not a database URL: {without_password(url)!r}"
        ) from None
    if backend not in ("postgresql", "sqlite"):
        raise ConfigError(f"DATABASE_URL must be a PostgreSQL or SQLite URL, got {backend}://")


def create_app(
    config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Flask:
    """Build the app. ``env`` defaults to ``os.environ``; ``config`` overrides it."""
    app = Flask(__name__, instance_relative_config=True)
    app.session_interface = CookieFirstSessionInterface()
    os.makedirs(app.instance_path, exist_ok=True)
    configure(app, config, env)
    if app.logger.level == logging.NOTSET:
        # INFO, not the root logger's WARNING (gunicorn's, flask's): write
        # requests are logged with their token's name (auth.py).
        app.logger.setLevel(logging.INFO)
    register_extensions(app)
    register_rules(app)
    register_celery(app)
    register_auth(app)
    register_blueprints(app)
    register_ui(app)
    register_cli(app)
    register_security_headers(app)
    return app


def configure(app: Flask, config: Mapping[str, Any] | None, env: Mapping[str, str] | None) -> None:
    try:
        app.config.update(load_config(app.instance_path, env))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    app.config.update(config or {})
    if app.config["RFM_PROFILE"] == "production" and not app.config["SECRET_KEY"]:
        raise ConfigError("SECRET_KEY must be set in the production profile")
    if app.config["RFM_EXECUTOR"] not in ("thread", "celery"):
        raise ConfigError("RFM_EXECUTOR must be 'thread' or 'celery'")
    for workers in ("RFM_INDEX_WORKERS", "RFM_QUERY_WORKERS"):
        if app.config[workers] < 0:
            raise ConfigError(f"{workers} must be 0 or more")
        if app.config[workers] > MAX_WORKERS:
            raise ConfigError(f"{workers} must be at most {MAX_WORKERS} (PostgreSQL's limit)")
    # Config key -> the environment variable that sets it.
    positive = {
        "RFM_TIME_LIMIT": "RFM_TIME_LIMIT",
        "RFM_QUEUED_TIMEOUT": "RFM_QUEUED_TIMEOUT",
        "MAX_CONTENT_LENGTH": "RFM_MAX_BODY_BYTES",
    }
    for key, name in positive.items():
        if app.config[key] < 1:
            raise ConfigError(f"{name} must be 1 or more, got {app.config[key]}")
    # A run's readers may still be paging the previous run (runs.py).
    if app.config["RFM_KEEP_RUNS"] < 2:
        raise ConfigError(f"RFM_KEEP_RUNS must be 2 or more, got {app.config['RFM_KEEP_RUNS']}")
    work_mem_kb = _memory_kb(app.config["RFM_WORK_MEM"])
    if work_mem_kb is None:
        raise ConfigError(
            f"RFM_WORK_MEM must be a PostgreSQL memory size such as 256MB, "
            f"got {app.config['RFM_WORK_MEM']!r}"
        )
    low, high = MEMORY_KB_RANGE
    if not low <= work_mem_kb <= high:
        raise ConfigError(
            f"RFM_WORK_MEM must be from 1MB to 2147483647kB (PostgreSQL's range for "
            f"maintenance_work_mem), got {app.config['RFM_WORK_MEM']!r}"
        )
    check_database_url(app.config["SQLALCHEMY_DATABASE_URI"])
    # redis-py (the API's publish and /readyz) reads only these; Celery would
    # take anything else for another broker (a bare host name as amqp://) and
    # retry it forever, and POST /api/rfm/calculate/ answered 500.
    if app.config["REDIS_URL"].split("://", 1)[0] not in ("redis", "rediss", "unix"):
        raise ConfigError(
            "REDIS_URL must be a redis://, rediss:// or unix:// URL, "
            f"got {without_password(app.config['REDIS_URL'])!r}"
        )
    if app.config["RFM_AUTH"] not in ("on", "off"):
        raise ConfigError(f"RFM_AUTH must be 'on' or 'off', got {app.config['RFM_AUTH']!r}")
    if app.config["RFM_PROFILE"] == "production" and app.config["RFM_AUTH"] != "on":
        raise ConfigError(
            "RFM_AUTH=off is refused in the production profile: the API would be open "
            "to anyone who can reach it (create tokens with flask create-api-token)"
        )


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers go on while a calculation writes; busy_timeout makes a
    # second writer wait instead of failing at once.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


def register_rules(app: Flask) -> None:
    from .segments import RuleError

    try:
        app.extensions["rfm_rules"] = load_rules(app.config["RFM_SEGMENT_RULES"])
    except RuleError as exc:
        raise ConfigError(f"invalid segment rules: {exc}") from None


def register_celery(app: Flask) -> None:
    from .celery_app import celery_init_app

    try:
        celery_init_app(app)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def register_auth(app: Flask) -> None:
    from . import auth

    auth.init_app(app)


def register_blueprints(app: Flask) -> None:
    from .health import bp as health_bp

    app.register_blueprint(health_bp)
    try:
        from .api import register_api
    except ImportError:  # the API lands in its own change
        return
    register_api(app)


def register_ui(app: Flask) -> None:
    """The dashboard at / and the read-only admin at /admin."""
    from .admin import init_admin
    from .dashboard import bp as dashboard_bp

    app.register_blueprint(dashboard_bp)
    init_admin(app)


# On every answer: no content-type guessing, and no page of this service
# inside another site's frame (a Recalculate button could be clicked there).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "same-origin",
}


def register_security_headers(app: Flask) -> None:
    def add(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    app.after_request(add)


def register_cli(app: Flask) -> None:
    from .cli import commands

    for command in commands():
        app.cli.add_command(command)
