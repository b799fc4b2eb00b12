"""Unbound extension objects (``create_app`` binds them), and the pooled
connection that single-statement reads use."""

from collections.abc import Iterator
from contextlib import contextmanager

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Connection, Engine, MetaData
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names from the first migration on, so later migrations
# (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()


@contextmanager
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A pooled connection for reads of one statement each, which need no
    transaction. On psycopg2 it runs them in autocommit: no BEGIN before and
    no ROLLBACK after, two round trips fewer per request. psycopg2's flag is
    client-side, so switching it costs nothing (SQLAlchemy's
    ``isolation_level="AUTOCOMMIT"`` would send a SET on every return to
    the pool). Errors, disconnects included, are SQLAlchemy's as usual."""
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        switch = conn.dialect.driver == "psycopg2" and raw is not None
        if switch:
            raw.autocommit = True
        try:
            yield conn
        finally:
            # Back to transactions for the next user of the pooled connection
            # (a connection invalidated by a disconnect is closed and dropped).
            if switch and not raw.closed:
                raw.autocommit = False
