"""A release against a database its migrations have not reached: a
calculation fails with the remedy and changes nothing, ``/readyz`` says
why, and ``flask db upgrade`` mends both. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade

from rfm_service import runs
from rfm_service.extensions import db
from rfm_service.schema_version import MIGRATIONS_DIR, release_head

from .conftest import add_orders, close_app, make_app


def parents() -> dict[str, str | None]:
    """Each revision's parent, read from the migration files themselves."""
    found: dict[str, str | None] = {}
    for path in Path(MIGRATIONS_DIR, "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision = re.search(r"^revision = '(\w+)'", text, re.M).group(1)  # type: ignore[union-attr]
        parent = re.search(r"^down_revision = '(\w+)'", text, re.M)
        found[revision] = parent.group(1) if parent else None
    return found


def newest_revision() -> str:
    """The one revision no other names as its parent."""
    history = parents()
    (newest,) = set(history) - set(history.values())
    return newest


# A database one migration behind this release.
PREVIOUS = parents()[newest_revision()]


@pytest.fixture
def blank_app(blank_url: str) -> Iterator[Flask]:
    app = make_app(blank_url)
    yield app
    close_app(app)


def test_release_head_is_the_newest_migration() -> None:
    assert release_head() == newest_revision()
    assert PREVIOUS is not None  # else the tests below have no older schema to start from


def test_a_database_behind_the_release_fails_runs_with_the_remedy(blank_app: Flask) -> None:
    client = blank_app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["detail"] == "the database has no schema yet: run `flask db upgrade`"

    with blank_app.app_context():
        upgrade(revision=PREVIOUS)
    add_orders(blank_app, [(1, dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC), "10.00")])
    reason = (
        f"the database schema is at revision {PREVIOUS} and this release needs "
        f"{release_head()}: run `flask db upgrade`"
    )
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["schema"] == f"mismatch: {reason}"
    assert ready.get_json()["detail"] == reason

    cli = blank_app.test_cli_runner().invoke(args=["calculate-rfm", "--as-of", "2026-01-31"])
    assert cli.exit_code == 1
    assert cli.output.strip() == f"Error: run 1 failed: {reason}"
    with blank_app.app_context(), db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status, error FROM rfm_runs")).all() == [
            ("failed", reason)
        ]
        assert conn.execute(sa.text("SELECT count(*) FROM rfm_scores")).scalar() == 0
        if conn.dialect.name == "postgresql":  # and no partition left behind
            assert not conn.execute(
                sa.text("SELECT relname FROM pg_class WHERE relname LIKE 'rfm_scores_r%'")
            ).all()

    with blank_app.app_context():
        upgrade()
    assert client.get("/readyz").get_json()["checks"]["schema"] == "ok"
    assert client.get("/readyz").status_code == 200
    with blank_app.app_context():
        run = runs.calculate_now(db.engine, runs.RunSettings.from_app(blank_app), "cli")
    assert run["status"] == "succeeded", run["error"]


def test_api_requests_against_an_older_schema_get_503_with_the_remedy(blank_url: str) -> None:
    """The service started before `flask db upgrade`: every read said 500
    "internal server error" on PostgreSQL (a missing table is a
    ProgrammingError there) and "the database is unavailable" on SQLite,
    though the database was up; now it is /readyz's reason, as a 503."""
    app = make_app(blank_url, RFM_AUTH="on")
    try:
        client = app.test_client()
        token = {"Authorization": "Bearer rfm_whatever"}
        reason = "the database has no schema yet: run `flask db upgrade`"
        for path in ("/api/rfm/", "/api/rfm/export.csv", "/api/rfm/statistics/"):
            answer = client.get(path, headers=token)
            assert (answer.status_code, answer.get_json()) == (503, {"detail": reason}), path
        # The first release's schema has no api_tokens: the token lookup fails.
        first = min(h for h, parent in parents().items() if parent is None)
        with app.app_context():
            upgrade(revision=first)
        answer = client.get("/api/rfm/export.csv", headers=token)
        assert answer.status_code == 503
        assert answer.get_json()["detail"] == (
            f"the database schema is at revision {first} and this release needs "
            f"{release_head()}: run `flask db upgrade`"
        )
    finally:
        close_app(app)


def test_a_database_ahead_of_the_release_does_not_say_upgrade(blank_app: Flask) -> None:
    """A revision this release does not ship (a newer release migrated the
    database, then this one was deployed): `flask db upgrade` cannot help,
    it fails with "Can't locate revision", so the reason must not offer it."""
    with blank_app.app_context():
        upgrade()
        with db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"))
    add_orders(blank_app, [(1, dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC), "10.00")])
    ready = blank_app.test_client().get("/readyz")
    assert ready.status_code == 503
    reason = ready.get_json()["detail"]
    assert "f00dfeedbeef" in reason and "newer than this release" in reason
    assert "flask db upgrade" not in reason
    cli = blank_app.test_cli_runner().invoke(args=["calculate-rfm", "--as-of", "2026-01-31"])
    assert cli.exit_code == 1
    assert cli.output.strip() == f"Error: run 1 failed: {reason}"
