"""Liveness (no I/O) and readiness (database, its schema and, when used, Redis)."""

from __future__ import annotations

from flask import Blueprint, current_app

from .extensions import db
from .schema_version import schema_problem

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez() -> dict[str, str]:
    return {"status": "ok"}


def _check_database() -> tuple[str, str | None]:
    """The database's state and, when it answers, why this release cannot work
    with its schema (None: it can). One connection, one pair of reads."""
    try:
        with db.engine.connect() as conn:
            problem = schema_problem(conn)
    except Exception as exc:
        return f"down: {type(exc).__name__}", None
    return "ok", problem


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
    database, schema = _check_database()
    checks = {"database": database, "redis": _check_redis()}
    down = [name for name, state in checks.items() if state.startswith("down")]
    problems = [f"{' and '.join(down)} unreachable"] if down else []
    if database == "ok":
        checks["schema"] = "ok" if schema is None else f"mismatch: {schema}"
        if schema is not None:
            problems.append(schema)
    body: dict[str, object] = {"status": "ok" if not problems else "unavailable", "checks": checks}
    if problems:
        body["detail"] = "; ".join(problems)
    return body, 503 if problems else 200
