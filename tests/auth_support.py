"""Helpers for tests that run with authentication on (RFM_AUTH=on).

conftest's ``empty_tables`` does not know ``api_tokens``; these helpers
empty it themselves, before and after each test that uses them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import auth
from rfm_service.extensions import db
from rfm_service.models import ApiToken

from .conftest import close_app, empty_tables, make_app


def clear_tokens(app: Flask) -> None:
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.delete(ApiToken))


def secured_app(url: str) -> Iterator[Flask]:
    """An app on ``url`` with authentication on, empty tables, no tokens."""
    app = make_app(url, RFM_AUTH="on")
    empty_tables(app)
    clear_tokens(app)
    yield app
    clear_tokens(app)
    close_app(app)  # a calculation a test started finishes here, not in the next test


def issue_token(app: Flask, scope: str, name: str | None = None) -> str:
    with app.app_context():
        return auth.create_token(db.engine, name or f"test-{scope}", scope)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


DATABASES = ["sqlite", "postgresql"]


def database_url(request: pytest.FixtureRequest) -> str:
    """The session database for a ``params=DATABASES`` fixture's parameter."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
