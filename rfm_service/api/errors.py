"""Every error the service answers is ``{"detail": "..."}`` (SPEC §4).

flask-smorest registers one handler for all ``HTTPException``s (so Flask's
404/405/413 too, and the 500 Flask makes from an unhandled exception);
``RFMApi`` overrides it. Validation errors from webargs become a 400 whose
one-line detail names the field. Domain exceptions from the run service map
to statuses here, so views stay free of try/except.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn

import marshmallow as ma
from flask import Flask, Response, current_app, jsonify, request
from flask_smorest import Api
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.datastructures import Headers
from werkzeug.exceptions import (
    HTTPException,
    InternalServerError,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    abort,
)
from werkzeug.routing import RoutingException

from .. import runs
from ..executor import ExecutorUnavailable
from ..extensions import db
from ..models import MAX_ID
from ..schema_version import schema_problem

# Where webargs found a bad value, as a user would name it.
_LOCATION_NAMES = {"json": "request body", "query": "query string", "view_args": "path"}


# Where a path segment stands for an id: /api/rfm/{customer_id}/ and
# /api/rfm/jobs/{run_id}/.
_ID_PATH = re.compile(r"/api/rfm/(jobs/)?([^/]+)/?")


class DetailSchema(ma.Schema):
    detail = ma.fields.String(required=True, metadata={"example": "Invalid page."})


def fail(status: int, detail: str) -> NoReturn:
    """Abort the request with ``{"detail": detail}``."""
    abort(status, description=detail)


def _flatten(messages: Any, field: str | None, whole: str) -> list[str]:
    """``{"page": ["Must be ..."]}`` -> ``["page: Must be ..."]``, nested too;
    messages about the whole object (``_schema``, or a bare list) say ``whole``."""
    if isinstance(messages, Mapping):
        out: list[str] = []
        for key, value in messages.items():
            if key == "_schema":
                out.extend(_flatten(value, field, whole))
            else:
                out.extend(_flatten(value, f"{field}.{key}" if field else str(key), whole))
        return out
    if isinstance(messages, list | tuple):
        return [line for item in messages for line in _flatten(item, field, whole)]
    return [f"{field or whole}: {messages}"]


def validation_detail(messages: Any) -> str:
    """One line naming each bad field; webargs nests messages by location."""
    if not isinstance(messages, Mapping):
        return "; ".join(_flatten(messages, None, "request"))
    lines = [
        line
        for location, inner in messages.items()
        for line in _flatten(inner, None, _LOCATION_NAMES.get(str(location), str(location)))
    ]
    return "; ".join(lines) or "invalid request"


def _slashless_method_not_allowed(error: HTTPException) -> HTTPException:
    """A wrong method on a path written without its trailing slash
    (``POST /api/rfm/1``, ``GET /api/rfm/calculate``): werkzeug's
    ``strict_slashes=False`` fallback answers 404 there, where the path
    with the slash answers 405. Answer the same 405."""
    if not isinstance(error, NotFound) or request.url_rule is not None:
        return error
    if request.path.endswith("/"):
        return error
    adapter = current_app.url_map.bind_to_environ(request.environ)
    try:
        adapter.match(request.path + "/", method=request.method)
    except MethodNotAllowed as exc:
        return exc
    except (HTTPException, RoutingException):
        pass
    return error


def _error_response(error: HTTPException) -> tuple[Response, int, Headers]:
    error = _slashless_method_not_allowed(error)
    code = error.code or 500
    data = getattr(error, "data", None) or {}
    if "messages" in data or "errors" in data:
        detail = validation_detail(data.get("errors", data.get("messages")))
        code = 400 if code == 422 else code  # SPEC §4: bad input is a 400
    elif "message" in data:
        detail = str(data["message"])
    elif isinstance(error, InternalServerError):
        detail = "internal server error"  # never the original exception's text
    elif isinstance(error, RequestEntityTooLarge) and current_app.config.get("MAX_CONTENT_LENGTH"):
        detail = f"the request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    elif isinstance(error, NotFound) and (unmatched := _unmatched_id()):
        detail = unmatched
    else:
        detail = error.description or error.name
    # Keep headers such as Allow (405) and Retry-After, drop the HTML type.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    headers += list((data.get("headers") or {}).items())
    # Headers, not a list: Flask would keep only the last of repeated names
    # (a 401 sends one WWW-Authenticate per scheme).
    return jsonify(detail=detail), code, Headers(headers)


def _unmatched_id() -> str | None:
    """Why no route took an id that is not one (``/api/rfm/abc/``): the
    routes only take whole numbers in the columns' range."""
    if request.url_rule is not None:
        return None  # a view's own 404 says what it did not find
    match = _ID_PATH.fullmatch(request.path)
    if match is None:
        return None
    what = "run" if match[1] else "customer"
    return f"not found: {match[2]!r} is not a {what} id (a whole number from 1 to {MAX_ID})"


class RFMApi(Api):
    """flask-smorest's Api with ``{"detail"}`` errors, in docs and in answers."""

    ERROR_SCHEMA = DetailSchema

    def handle_http_exception(self, error: HTTPException) -> Any:
        return _error_response(error)

    def _register_pagination_header(self) -> None:
        """Skipped: pages here are DRF-style bodies, not an X-Pagination header."""


def _executor_unavailable(exc: ExecutorUnavailable) -> tuple[Response, int, dict[str, str]]:
    return jsonify(detail=str(exc)), 503, {"Retry-After": "30"}


# A table or column the statement names is missing: PostgreSQL's
# undefined_table / undefined_column, SQLite's words for them.
_MISSING_PGCODES = frozenset({"42P01", "42703"})
_MISSING_SQLITE = ("no such table", "no such column")


def _schema_reason(exc: BaseException) -> str | None:
    """Why a statement failed when the cause is a schema this release was
    not written for (`flask db upgrade` forgotten): the same one-line
    reason `/readyz` gives. None for any other failure."""
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    missing = getattr(orig, "pgcode", None) in _MISSING_PGCODES or any(
        words in str(orig) for words in _MISSING_SQLITE
    )
    if not missing:
        return None
    try:
        with db.engine.connect() as conn:
            return schema_problem(conn)
    except SQLAlchemyError:
        return None


def _schema_mismatch(reason: str) -> tuple[Response, int, dict[str, str]]:
    return jsonify(detail=reason), 503, {"Retry-After": "30"}


def _database_error(exc: ProgrammingError) -> Any:
    reason = _schema_reason(exc)
    if reason is not None:
        return _schema_mismatch(reason)
    current_app.logger.error("database error", exc_info=exc)
    return _error_response(InternalServerError(original_exception=exc))


def _database_unavailable(
    exc: OperationalError | PoolTimeout,
) -> tuple[Response, int, dict[str, str]]:
    reason = _schema_reason(exc)
    if reason is not None:
        return _schema_mismatch(reason)
    # Connection refused, server restarting, too many clients, every pooled
    # connection busy: transient, so
    # a 503 the client may retry rather than a 500 (logged, never shown).
    current_app.logger.error("database error: %s", exc)
    return jsonify(detail="the database is unavailable; try again later"), 503, {"Retry-After": "5"}


def _invalid_as_of(exc: runs.InvalidAsOf) -> tuple[Response, int]:
    return jsonify(detail=str(exc)), 400  # the reason starts with "as_of" itself


def _busy(exc: runs.CalculationBusy) -> tuple[Response, int]:
    return jsonify(detail=str(exc)), 409


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ExecutorUnavailable, _executor_unavailable)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(ProgrammingError, _database_error)
    app.register_error_handler(PoolTimeout, _database_unavailable)
    app.register_error_handler(runs.InvalidAsOf, _invalid_as_of)
    app.register_error_handler(runs.CalculationBusy, _busy)
