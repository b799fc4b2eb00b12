"""Whether the database's schema is the one this release was written for.

A release that changes the schema ships a migration. Run against a database
nobody upgraded, its code fails in ways that name a constraint, not the
cause (a run's partition whose keys the parent's do not match, say). So a
calculation checks first and fails with the remedy, and ``/readyz`` reports
the mismatch.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


class SchemaMismatch(RuntimeError):
    """The database is not at this release's migration head."""


@cache
def _scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    return ScriptDirectory.from_config(config)


@cache
def release_head() -> str:
    """The newest migration this release ships (read once per process)."""
    head = _scripts().get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}")
    return head


@cache
def release_revisions() -> frozenset[str]:
    """Every migration this release ships."""
    return frozenset(script.revision for script in _scripts().walk_revisions())


def database_revision(conn: Connection) -> str | None:
    """The revision ``flask db upgrade`` last brought the database to."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def schema_problem(conn: Connection) -> str | None:
    """None when the schema is this release's; otherwise the one-line reason."""
    have, want = database_revision(conn), release_head()
    if have == want:
        return None
    if have is None:
        return "the database has no schema yet: run `flask db upgrade`"
    if have not in release_revisions():
        # A newer release migrated it (or it is another application's):
        # `flask db upgrade` of this release cannot reach it.
        return (
            f"the database schema is at revision {have}, which this release does not know "
            f"(its newest is {want}): the database is newer than this release; deploy the "
            "release that migrated it"
        )
    return (
        f"the database schema is at revision {have} and this release needs {want}: "
        "run `flask db upgrade`"
    )


def check_schema(conn: Connection) -> None:
    """Raise ``SchemaMismatch`` with the reason unless the schema is this release's."""
    problem = schema_problem(conn)
    if problem is not None:
        raise SchemaMismatch(problem)
