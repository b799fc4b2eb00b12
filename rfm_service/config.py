"""Configuration: documented defaults, overridden by environment variables.

Read inside ``create_app`` (never at import), so tests can pass a mapping
instead of touching the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROFILES = ("embedded", "production")


def normalise_database_url(url: str) -> str:
    """A plain ``postgresql://`` or ``postgres://`` URL means the driver we
    install (psycopg2); SQLAlchemy 2.1 would otherwise pick psycopg 3 and
    rejects ``postgres://`` outright."""
    for plain in ("postgres://", "postgresql://"):
        if url.startswith(plain):
            return "postgresql+psycopg2://" + url[len(plain) :]
    return url


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from exc


def load_config(instance_path: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the app config from ``env`` (default: ``os.environ``).

    Every key here is documented in the README's configuration table.
    """
    env = os.environ if env is None else env
    profile = env.get("RFM_PROFILE", "embedded")
    if profile not in PROFILES:
        raise ValueError(f"RFM_PROFILE must be one of {', '.join(PROFILES)}, got {profile!r}")
    default_db = "sqlite:///" + str(Path(instance_path) / "rfm.sqlite3")
    embedded = profile == "embedded"
    return {
        "RFM_PROFILE": profile,
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(env.get("DATABASE_URL", default_db)),
        "REDIS_URL": env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "SECRET_KEY": env.get("SECRET_KEY", "dev-only-not-secret" if embedded else ""),
        # "thread" runs API-triggered calculations in-process (no Redis needed);
        # "celery" sends them to the worker through Redis.
        "RFM_EXECUTOR": env.get("RFM_EXECUTOR", "thread" if embedded else "celery"),
        "RFM_SEGMENT_RULES": env.get("RFM_SEGMENT_RULES") or None,
        "RFM_KEEP_RUNS": _int(env, "RFM_KEEP_RUNS", 12),
        "RFM_WORK_MEM": env.get("RFM_WORK_MEM", "256MB"),
        # 0: the calculation's index builds stay on one core, leaving the others
        # to the API's reads (calculation.tune_session says why).
        "RFM_INDEX_WORKERS": _int(env, "RFM_INDEX_WORKERS", 0),
        # Parallel workers for the scoring statement's scan and aggregation
        # (calculation.tune_session says what they bought).
        "RFM_QUERY_WORKERS": _int(env, "RFM_QUERY_WORKERS", 1),
        "RFM_TIME_LIMIT": _int(env, "RFM_TIME_LIMIT", 3600),
        "RFM_QUEUED_TIMEOUT": _int(env, "RFM_QUEUED_TIMEOUT", 3600),
        "RFM_SCHEDULE": env.get("RFM_SCHEDULE", "0 2 * * *"),
        # The Celery queue this deployment's API, beat and worker share; give
        # deployments (or test runs) on one Redis their own so none steals tasks.
        "RFM_TASK_QUEUE": env.get("RFM_TASK_QUEUE") or "rfm",
        "FLOWER_BASIC_AUTH": env.get("FLOWER_BASIC_AUTH", ""),
        "MAX_CONTENT_LENGTH": _int(env, "RFM_MAX_BODY_BYTES", 64 * 1024),
        # API tokens (auth.py): "on" or "off"; off only for a local embedded
        # service, and the production profile refuses to start with it off.
        "RFM_AUTH": (env.get("RFM_AUTH") or ("off" if embedded else "on")).strip().lower(),
        # No pre-ping: a round trip on every checkout (issue #4). A pooled
        # connection found dead after a PostgreSQL restart fails its request
        # (503) and the pool then replaces all older ones (tests/test_faults.py).
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": False},
        # The session cookie only carries the admin's flash messages. Never
        # sent with another site's requests; in production only over HTTPS.
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": not embedded,
    }
