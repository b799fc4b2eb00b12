"""Liveness (no I/O) and readiness (database and, when used, Redis)."""

from __future__ import annotations

from flask import Blueprint, current_app
from sqlalchemy import text

from .extensions import db

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
    body: dict[str, object] = {"status": "ok" if not down else "unavailable", "checks": checks}
    if down:
        body["detail"] = f"{' and '.join(down)} unreachable"
    return body, 503 if down else 200
