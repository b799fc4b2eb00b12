"""A command the database fails ends in one line and exit 1, never a
traceback (SPEC §5): a server that is down, a database never migrated, a
statement past its time limit."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask import current_app
from sqlalchemy.exc import DBAPIError

from . import calculation
from .extensions import db
from .schema_version import SchemaMismatch, schema_problem

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(command: F) -> F:
    """Wrap a command's function; it runs inside the app context
    (``with_appcontext`` above it)."""

    @functools.wraps(command)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SchemaMismatch as exc:
            raise click.ClickException(str(exc)) from None
        except DBAPIError as exc:
            raise click.ClickException(database_failure(exc)) from None

    return wrapped  # type: ignore[return-value]


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def database_failure(exc: DBAPIError) -> str:
    """Why the database failed the command, in one line with the remedy
    where there is one. A failed statement is often only the symptom (no
    tables yet, tables of an older release): a fresh connection asks."""
    if calculation.is_time_limit(exc):
        limit = current_app.config["RFM_TIME_LIMIT"]
        return f"the statement exceeded the time limit of {limit} s (RFM_TIME_LIMIT)"
    if "database is locked" in first_line(exc):  # SQLite, past its busy timeout
        return (
            "the database stayed locked by another writer (on SQLite, a calculation "
            "holds the write lock while it scores); try again when it has finished"
        )
    url = db.engine.url.render_as_string(hide_password=True)
    try:
        with db.engine.connect() as conn:
            problem = schema_problem(conn)
    except DBAPIError as again:
        return f"cannot use the database {url}: {first_line(again)}"
    return problem or f"the database failed: {first_line(exc)}"
