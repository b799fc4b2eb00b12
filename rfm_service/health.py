"""Liveness (no I/O) and readiness (database, its schema and, when used, Redis)."""

from __future__ import annotations

from flask import Blueprint, current_app
from sqlalchemy import text

from .extensions import db
from .schema_version import schema_problem

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez() -> dict[str, str]:
    return {"status": "ok"}


def _check_database() -> str:
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        return f"down: {type(exc).__name__}"


def _check_schema() -> str:
    """``ok``, or why this release cannot work with the database's schema."""
    try:
        with db.engine.connect() as conn:
            problem = schema_problem(conn)
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok" if problem is None else f"mismatch: {problem}"


def _check_redis() -> str:
    if current_app.config["RFM_EXECUTOR"] != "celery":
        return "not used (in-process executor)"
    import redis  # only here: see executor._check_broker

    try:
        client = redis.Redis.from_url(
            current_app.config["REDIS_URL"], socket_connect_timeout=1, socket_timeout=1
        )
        client.ping()
        return "ok"
    except Exception as exc:
        return f"down: {type(exc).__name__}"


@bp.get("/readyz")
def readyz() -> tuple[dict[str, object], int]:
    checks = {"database": _check_database(), "redis": _check_redis()}
    down = [name for name, state in checks.items() if state.startswith("down")]
    problems = [f"{' and '.join(down)} unreachable"] if down else []
    if "database" not in down:
        checks["schema"] = _check_schema()
        if checks["schema"] != "ok":
            problems.append(checks["schema"].removeprefix("mismatch: "))
    body: dict[str, object] = {"status": "ok" if not problems else "unavailable", "checks": checks}
    if problems:
        body["detail"] = "; ".join(problems)
    return body, 503 if problems else 200
