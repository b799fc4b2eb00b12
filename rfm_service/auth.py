"""Access control: API tokens with a scope, ``read`` or ``write``.

A token is ``rfm_`` + 32 random bytes (URL-safe base64). Only its SHA-256
is stored (``api_tokens``), so a token is shown once, when it is created,
and a copy of the database does not hold working credentials. The hash of a
high-entropy secret is looked up directly: no timing oracle to guard.

Clients send ``Authorization: Bearer <token>``, or HTTP Basic with the token
as the password (any user name), which lets a browser open the dashboard.

Which scope a request needs is one rule, ``required_scope``, that both the
``before_request`` hook and the OpenAPI document follow. Everything is
protected unless listed as open (default deny, so a new endpoint cannot be
published unprotected by mistake): reads need ``read``, anything that is not
GET/HEAD/OPTIONS needs ``write``, ``/admin`` needs ``write``. ``write``
implies ``read``. With ``RFM_AUTH=off`` (embedded profile only) nothing is
checked.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from apispec import BasePlugin
from flask import Flask, current_app, g, request
from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import Forbidden, Unauthorized

from .extensions import autocommit, db
from .models import API_SCOPES, ApiToken
from .timeutil import utcnow

TOKEN_PREFIX = "rfm_"
REALM = "rfm"
CHALLENGES = (f'Bearer realm="{REALM}"', f'Basic realm="{REALM}"')
OFF_WARNING = "authentication is OFF (embedded profile); serve on 127.0.0.1 only"

# Open to anyone: health probes and the API's documentation.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/api/openapi.json", "/api/docs", "/api/docs/"})
# Operator pages: they may change things, so a read token is not enough.
WRITE_ONLY_PREFIXES = ("/admin",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_RANK = {"read": 1, "write": 2}  # write implies read
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}")
_PUBLIC_ATTR = "_rfm_public"

table = ApiToken.__table__
F = TypeVar("F", bound=Callable[..., Any])


class TokenError(Exception):
    """A token command cannot be carried out; the message says why."""


# -- tokens -----------------------------------------------------------------


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise TokenError(
            f"invalid token name {name!r}: 1-100 characters, letters, digits and . _ @ : - "
            "(starting with a letter or digit)"
        )
    return name


def check_scope(scope: str) -> str:
    if scope not in API_SCOPES:
        raise TokenError(f"invalid scope {scope!r}: use {' or '.join(API_SCOPES)}")
    return scope


def create_token(engine: Engine, name: str, scope: str) -> str:
    """Store a new token's hash and return the token (the only time it exists)."""
    check_name(name)
    check_scope(scope)
    token = generate_token()
    try:
        with engine.begin() as conn:
            conn.execute(
                table.insert().values(
                    name=name, scope=scope, token_hash=hash_token(token), created_at=utcnow()
                )
            )
    except IntegrityError:  # the partial unique index: one active token per name
        raise TokenError(
            f"an API token named {name!r} exists already; revoke it first or pick another name"
        ) from None
    return token


def revoke_token(engine: Engine, name: str) -> None:
    """Revoke the active token called ``name``; it stops working at once
    (every request looks its token up)."""
    with engine.begin() as conn:
        revoked = conn.execute(
            update(table)
            .where(table.c.name == name, table.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        ).rowcount
    if not revoked:
        raise TokenError(f"no active API token named {name!r}")


def list_tokens(engine: Engine) -> list[dict[str, Any]]:
    """Name, scope and dates of every token, revoked ones too; never hashes."""
    query = select(table.c.name, table.c.scope, table.c.created_at, table.c.revoked_at).order_by(
        table.c.revoked_at.is_not(None), table.c.name, table.c.id
    )
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


# Built once: every request with a token runs it.
_LOOKUP = select(table.c.name, table.c.scope).where(
    table.c.token_hash == bindparam("token_hash"), table.c.revoked_at.is_(None)
)


def lookup(engine: Engine, token: str) -> tuple[str, str] | None:
    """``(name, scope)`` of an active token, or None."""
    with autocommit(engine) as conn:  # one statement: no transaction needed
        row = conn.execute(_LOOKUP, {"token_hash": hash_token(token)}).first()
    return (row.name, row.scope) if row else None


# -- the request check --------------------------------------------------------


def required_scope(path: str, method: str) -> str | None:
    """The scope a request needs; None for an open path."""
    if path in OPEN_PATHS:
        return None
    if any(path == p or path.startswith(p + "/") for p in WRITE_ONLY_PREFIXES):
        return "write"
    return "read" if method.upper() in SAFE_METHODS else "write"


def satisfies(granted: str, needed: str) -> bool:
    return _RANK.get(granted, 0) >= _RANK[needed]


def enabled(app: Flask) -> bool:
    return app.config.get("RFM_AUTH") == "on"


class AuthenticationRequired(Unauthorized):
    """A 401 carrying both challenges, so browsers offer a Basic login."""

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [
            *super().get_headers(*args, **kwargs),
            *(("WWW-Authenticate", challenge) for challenge in CHALLENGES),
        ]


def presented_token() -> str | None:
    """The token from ``Authorization: Bearer`` or a Basic password."""
    try:
        credentials = request.authorization
    except ValueError:  # werkzeug's b64decode refuses non-ASCII Basic credentials
        return None
    if credentials is None:
        return None
    if credentials.type == "bearer":
        return credentials.token or None
    if credentials.type == "basic":
        return credentials.password or None
    return None


def authenticate(scope: str) -> str | None:
    """Abort with 401 (no or unknown token) or 403 (scope too small) unless
    the request may use ``scope``; returns the token's name (None when
    authentication is off)."""
    if not enabled(current_app):
        return None
    found: tuple[str, str] | None = g.get("rfm_token")
    if found is None:
        token = presented_token()
        if token is None:
            raise AuthenticationRequired(
                "authentication required: send 'Authorization: Bearer <token>' "
                "(or HTTP Basic with the token as password)"
            )
        found = lookup(db.engine, token)
        if found is None:
            raise AuthenticationRequired("invalid or revoked API token")
        g.rfm_token = found
    name, granted = found
    if not satisfies(granted, scope):
        raise Forbidden(f"API token {name!r} has scope {granted!r}; this needs {scope!r}")
    return name


def require(scope: str) -> Callable[[F], F]:
    """Decorator for a view that needs more than the path rule gives it
    (say, a GET that needs ``write``)."""
    check_scope(scope)

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            authenticate(scope)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


def public(view: F) -> F:
    """Mark a view as open to anyone (the hook skips it)."""
    setattr(view, _PUBLIC_ATTR, True)
    return view


def _is_open_endpoint() -> bool:
    endpoint = request.endpoint
    if endpoint is None:  # 404/405: still behind the check, reveals nothing
        return False
    if endpoint == "static" or endpoint.endswith(".static"):
        return True  # CSS, scripts and images of pages: no data in them
    return bool(getattr(current_app.view_functions.get(endpoint), _PUBLIC_ATTR, False))


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _refuse_cross_site() -> None:
    """Another site's page may make the browser send a write with its cached
    Basic credentials (``fetch(..., {mode: "no-cors", credentials:
    "include"})`` with no body needs no CORS preflight), or to a loopback
    service with no credentials at all. Browsers say where a request comes
    from in ``Sec-Fetch-Site``; API clients send no such header."""
    if request.method in _SAFE_METHODS:
        return
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        raise Forbidden(description="a request from another site's page is refused")


def _check_request() -> None:
    _refuse_cross_site()  # auth on or off: a loopback service has no token to steal
    if not enabled(current_app) or _is_open_endpoint():
        return
    scope = required_scope(request.path, request.method)
    if scope is not None:
        name = authenticate(scope)
        if scope == "write":
            current_app.logger.info("%s %s by API token %r", request.method, request.path, name)


def init_app(app: Flask) -> None:
    app.before_request(_check_request)
    if not enabled(app):
        app.logger.warning(OFF_WARNING)


# -- the OpenAPI document ----------------------------------------------------------

SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (flask create-api-token): Authorization: Bearer rfm_...",
    },
    "basicAuth": {
        "type": "http",
        "scheme": "basic",
        "description": "HTTP Basic with the API token as the password and any user name "
        "(for browsers).",
    },
}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class OpenAPISecurity(BasePlugin):
    """Documents each operation's security from ``required_scope``, the rule
    the hook enforces, so the document and the service cannot disagree.
    (Scopes of HTTP schemes cannot be listed in OpenAPI 3.0 security
    requirements, hence ``x-required-scope`` and a sentence.)"""

    def init_spec(self, spec: Any) -> None:
        super().init_spec(spec)
        for name, scheme in SECURITY_SCHEMES.items():
            spec.components.security_scheme(name, scheme)

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **_: Any
    ) -> None:
        for method, operation in (operations or {}).items():
            scope = required_scope(path or "", method) if method in _METHODS else None
            if scope is None:
                continue
            operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            operation["x-required-scope"] = scope
            note = f"Needs an API token with scope `{scope}`."
            operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", "UNAUTHORIZED")  # components from flask-smorest
            if scope == "write":  # every token can read
                responses.setdefault("403", "FORBIDDEN")
