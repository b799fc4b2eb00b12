"""Access control: API tokens with read/write scope, on SQLite and PostgreSQL.

Tokens are created and revoked through the real CLI commands; requests go
through the test client with ``Authorization`` headers as a client sends
them. Expected statuses come from the access rules as documented in the
README, not from the code's own tables.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import ConfigError, auth, create_app, executor
from rfm_service.extensions import db
from rfm_service.models import ApiToken

from .auth_support import DATABASES, bearer, database_url, issue_token, secured_app

TOKEN_SHAPE = re.compile(r"rfm_[A-Za-z0-9_-]{43}")
CHALLENGES = ['Bearer realm="rfm"', 'Basic realm="rfm"']


@pytest.fixture(params=DATABASES)
def secure_app(request: pytest.FixtureRequest) -> Iterator[Flask]:
    yield from secured_app(database_url(request))


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=list(args))


def create_via_cli(app: Flask, name: str, scope: str) -> str:
    result = cli(app, "create-api-token", "--name", name, "--scope", scope)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def assert_detail(response: Any, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"]
    return body["detail"]


def assert_unauthorized(response: Any) -> None:
    assert_detail(response, 401)
    assert response.headers.getlist("WWW-Authenticate") == CHALLENGES


@pytest.fixture
def app_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog that sees the app's logger: alembic's fileConfig (run by the
    session's ``flask db upgrade``) disables loggers that existed before it."""
    logging.getLogger("rfm_service").disabled = False
    return caplog


def token_rows(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        rows = db.session.execute(sa.select(ApiToken.__table__)).mappings()
        return [dict(row) for row in rows]


# -- the commands --------------------------------------------------------------


def test_created_token_is_printed_once_and_only_its_hash_is_stored(secure_app: Flask) -> None:
    result = cli(secure_app, "create-api-token", "--name", "grafana", "--scope", "read")

    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert TOKEN_SHAPE.fullmatch(token), result.stdout  # stdout is the token alone
    assert "not shown again" in result.stderr
    [row] = token_rows(secure_app)
    assert (row["name"], row["scope"], row["revoked_at"]) == ("grafana", "read", None)
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {str(value) for value in row.values()}
    listing = cli(secure_app, "list-api-tokens")
    assert listing.exit_code == 0 and "grafana" in listing.output and "read" in listing.output
    assert token not in listing.output and row["token_hash"] not in listing.output


def test_two_tokens_are_never_equal(secure_app: Flask) -> None:
    first = create_via_cli(secure_app, "a", "read")
    second = create_via_cli(secure_app, "b", "read")
    assert first != second


def test_revoking_an_unknown_name_fails_with_exit_1(secure_app: Flask) -> None:
    result = cli(secure_app, "revoke-api-token", "nobody")

    assert result.exit_code == 1
    assert "no active API token named 'nobody'" in result.stderr
    assert "Traceback" not in result.output


def test_an_active_name_cannot_be_taken_twice_but_is_free_after_revoking(
    secure_app: Flask,
) -> None:
    create_via_cli(secure_app, "ci", "write")

    again = cli(secure_app, "create-api-token", "--name", "ci", "--scope", "read")
    assert again.exit_code == 1
    assert "exists already" in again.stderr and again.stdout == ""

    assert cli(secure_app, "revoke-api-token", "ci").exit_code == 0
    assert cli(secure_app, "revoke-api-token", "ci").exit_code == 1  # already revoked
    create_via_cli(secure_app, "ci", "read")
    assert sorted((r["scope"], r["revoked_at"] is None) for r in token_rows(secure_app)) == [
        ("read", True),
        ("write", False),
    ]


@pytest.mark.parametrize(
    "args,exit_code,words",
    [
        (["--name", "x", "--scope", "admin"], 2, "'admin' is not one of"),
        (["--name", "has space", "--scope", "read"], 1, "invalid token name"),
        (["--name", "", "--scope", "read"], 1, "invalid token name"),
        (["--name", "x" * 101, "--scope", "read"], 1, "invalid token name"),
        (["--scope", "read"], 2, "Missing option '--name'"),
    ],
)
def test_bad_create_arguments_are_refused(
    secure_app: Flask, args: list[str], exit_code: int, words: str
) -> None:
    result = cli(secure_app, "create-api-token", *args)

    assert result.exit_code == exit_code, result.output
    assert words in result.stderr
    assert token_rows(secure_app) == []


# -- requests ----------------------------------------------------------------------


def test_a_read_token_reads_but_cannot_start_a_calculation(secure_app: Flask) -> None:
    token = create_via_cli(secure_app, "reader", "read")
    client = secure_app.test_client()

    assert client.get("/api/rfm/", headers=bearer(token)).status_code == 200
    assert client.get("/api/rfm/jobs/", headers=bearer(token)).status_code == 200
    detail = assert_detail(
        client.post("/api/rfm/calculate/", json={"as_of": "2026-01-31"}, headers=bearer(token)),
        403,
    )
    assert "write" in detail
    assert client.get("/api/rfm/jobs/", headers=bearer(token)).get_json()["count"] == 0


def test_a_write_token_starts_a_calculation_and_reads(secure_app: Flask) -> None:
    token = create_via_cli(secure_app, "deployer", "write")
    client = secure_app.test_client()
    try:
        response = client.post(
            "/api/rfm/calculate/", json={"as_of": "2026-01-31"}, headers=bearer(token)
        )
        assert response.status_code == 202, response.get_data(as_text=True)
        run_url = f"/api/rfm/jobs/{response.get_json()['id']}/"
        assert client.get(run_url, headers=bearer(token)).status_code == 200
    finally:
        executor.shutdown(secure_app)  # let the background run finish before teardown


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer rfm_" + "A" * 43},  # the right shape, never issued
        {"Authorization": "Token something"},  # an unsupported scheme
        {"Authorization": "Basic !!!not-base64!!!"},
        basic(""),
        basic("rfm_wrong"),
        {"Authorization": "Bearer ' OR '1'='1"},
        {"Authorization": "Basic \xff\xfe=="},  # not ASCII: werkzeug's b64decode raises
    ],
    ids=[
        "none",
        "bearer-empty",
        "unknown",
        "other-scheme",
        "basic-garbled",
        "basic-empty",
        "basic-wrong",
        "sql-ish",
        "basic-not-ascii",
    ],
)
def test_a_missing_or_wrong_token_gets_401_with_both_challenges(
    secure_app: Flask, headers: dict[str, str]
) -> None:
    issue_token(secure_app, "write")  # a real token exists; these are not it
    client = secure_app.test_client()

    assert_unauthorized(client.get("/api/rfm/", headers=headers))
    assert_unauthorized(client.post("/api/rfm/calculate/", json={}, headers=headers))
    assert token_rows(secure_app)[0]["name"] == "test-write"  # the table is intact


def test_http_basic_takes_the_token_as_password_with_any_user_name(secure_app: Flask) -> None:
    token = issue_token(secure_app, "read")
    client = secure_app.test_client()

    for user in ("alice", "", "rfm"):
        assert client.get("/api/rfm/", headers=basic(token, user)).status_code == 200


def test_a_revoked_token_stops_working_at_once(secure_app: Flask) -> None:
    token = create_via_cli(secure_app, "laptop", "write")
    client = secure_app.test_client()
    assert client.get("/api/rfm/", headers=bearer(token)).status_code == 200

    result = cli(secure_app, "revoke-api-token", "laptop")

    assert result.exit_code == 0, result.output
    assert_unauthorized(client.get("/api/rfm/", headers=bearer(token)))
    assert_unauthorized(client.get("/api/rfm/", headers=basic(token)))
    listing = cli(secure_app, "list-api-tokens").output
    assert re.search(r"laptop\s+write\s+\S+\s+\d{4}-\d\d-\d\dT", listing), listing


def test_health_and_api_docs_are_open(secure_app: Flask) -> None:
    client = secure_app.test_client()

    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)  # 503 only if a dependency is down
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/docs").status_code == 200


def test_dashboard_and_admin_pages_need_their_scopes(secure_app: Flask) -> None:
    reader, writer = issue_token(secure_app, "read"), issue_token(secure_app, "write")
    client = secure_app.test_client()

    for path in ("/", "/admin", "/admin/runs"):
        assert_unauthorized(client.get(path))
    # Whatever the pages answer once they exist, it is not an auth refusal.
    assert client.get("/", headers=basic(reader)).status_code not in (401, 403)
    assert_detail(client.get("/admin", headers=basic(reader)), 403)
    assert_detail(client.get("/admin/runs", headers=basic(reader)), 403)
    assert client.get("/admin", headers=basic(writer)).status_code not in (401, 403)


def test_every_api_route_refuses_a_request_without_a_token(secure_app: Flask) -> None:
    # Walks the real URL map, so an endpoint added later is checked too.
    samples = {"customer_id": 1, "run_id": 1}
    client = secure_app.test_client()
    checked = 0
    for rule in secure_app.url_map.iter_rules():
        if not rule.rule.startswith("/api/rfm"):
            continue
        path = rule.build({arg: samples.get(arg, "x") for arg in rule.arguments})[1]
        for method in sorted((rule.methods or set()) - {"OPTIONS", "HEAD"}):
            assert_unauthorized(client.open(path, method=method))
            checked += 1
        if "HEAD" in (rule.methods or set()):  # no body, same status and challenges
            head = client.head(path)
            assert head.status_code == 401
            assert head.headers.getlist("WWW-Authenticate") == CHALLENGES
    assert checked >= 7  # the seven documented operations at least


def test_views_can_ask_for_more_or_be_opened(secure_app: Flask) -> None:
    # For other modules' views: @auth.require(scope) and @auth.public.
    secure_app.add_url_rule("/ops/rotate", "rotate", auth.require("write")(lambda: {"done": True}))
    secure_app.add_url_rule("/ops/ping", "ping", auth.public(lambda: {"pong": True}))
    reader, writer = issue_token(secure_app, "read"), issue_token(secure_app, "write")
    client = secure_app.test_client()

    assert client.get("/ops/ping").get_json() == {"pong": True}
    assert_unauthorized(client.get("/ops/rotate"))
    assert_detail(client.get("/ops/rotate", headers=bearer(reader)), 403)
    assert client.get("/ops/rotate", headers=bearer(writer)).get_json() == {"done": True}


def test_with_auth_off_the_api_needs_no_token(app: Flask) -> None:
    # conftest's app: the embedded profile's default.
    assert app.config["RFM_AUTH"] == "off"
    assert app.test_client().get("/api/rfm/").status_code == 200


def test_the_token_is_never_logged(secure_app: Flask, app_logs: pytest.LogCaptureFixture) -> None:
    caplog = app_logs
    token = issue_token(secure_app, "write")
    client = secure_app.test_client()
    # No level set here: the app logs write access at INFO by itself (the
    # root logger's WARNING, as under gunicorn and flask, once hid it).
    assert logging.getLogger().getEffectiveLevel() == logging.WARNING
    try:
        client.get("/api/rfm/", headers=bearer(token))
        client.post("/api/rfm/calculate/", json={"as_of": "2026-01-31"}, headers=basic(token))
    finally:
        executor.shutdown(secure_app)
    assert "by API token 'test-write'" in caplog.text  # write access is logged by name
    assert token not in caplog.text


# -- the OpenAPI document --------------------------------------------------------------


def test_openapi_documents_both_schemes_and_each_operations_scope(secure_app: Flask) -> None:
    spec = secure_app.test_client().get("/api/openapi.json").get_json()

    schemes = spec["components"]["securitySchemes"]
    assert {(s["type"], s["scheme"]) for s in schemes.values()} == {
        ("http", "bearer"),
        ("http", "basic"),
    }
    operations = {
        (method.upper(), path): op
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert ("POST", "/api/rfm/calculate/") in operations
    for (method, path), op in operations.items():
        expected = "write" if method != "GET" else "read"
        assert op["x-required-scope"] == expected, (method, path)
        assert {next(iter(r)) for r in op["security"]} == set(schemes), (method, path)
        assert "401" in op["responses"], (method, path)
        assert ("403" in op["responses"]) == (expected == "write"), (method, path)


# -- configuration -----------------------------------------------------------------------


def _sqlite_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'c.sqlite3'}", **extra}


def test_production_refuses_to_start_with_auth_off(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path, RFM_PROFILE="production", SECRET_KEY="s3cret", RFM_AUTH="off")
    with pytest.raises(ConfigError, match="RFM_AUTH=off is refused in the production profile"):
        create_app(env=env)


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(env=_sqlite_env(tmp_path, RFM_PROFILE="production"))


def test_production_turns_auth_on_by_default(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path, RFM_PROFILE="production", SECRET_KEY="s3cret")
    assert create_app(env=env).config["RFM_AUTH"] == "on"


def test_embedded_default_is_off_and_says_so_at_start(
    tmp_path: Path, app_logs: pytest.LogCaptureFixture
) -> None:
    caplog = app_logs
    with caplog.at_level(logging.WARNING):
        app = create_app(env=_sqlite_env(tmp_path))
    assert app.config["RFM_AUTH"] == "off"
    assert "authentication is OFF (embedded profile); serve on 127.0.0.1 only" in caplog.text


def test_embedded_with_auth_on_gives_no_warning(
    tmp_path: Path, app_logs: pytest.LogCaptureFixture
) -> None:
    caplog = app_logs
    with caplog.at_level(logging.WARNING):
        app = create_app(env=_sqlite_env(tmp_path, RFM_AUTH="on"))
    assert app.config["RFM_AUTH"] == "on"
    assert "authentication is OFF" not in caplog.text


def test_an_unknown_rfm_auth_value_stops_the_app(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RFM_AUTH must be 'on' or 'off'"):
        create_app(env=_sqlite_env(tmp_path, RFM_AUTH="maybe"))


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_write_from_another_sites_page_is_refused(secure_app: Flask, site: str) -> None:
    """A page elsewhere can make the browser POST with its cached Basic
    credentials and no body (no CORS preflight); the browser says so."""
    token = issue_token(secure_app, "write")
    client = secure_app.test_client()
    headers = {**basic(token), "Sec-Fetch-Site": site, "Origin": "https://elsewhere.example"}

    response = client.post("/api/rfm/calculate/", headers=headers)

    assert assert_detail(response, 403) == "a request from another site's page is refused"
    assert client.get("/api/rfm/jobs/", headers=bearer(token)).get_json()["count"] == 0
    # Reads from anywhere, and writes from the service's own pages, go on.
    assert client.get("/api/rfm/", headers=headers).status_code == 200
    own = {**basic(token), "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/rfm/calculate/", headers=own).status_code == 202


def test_with_auth_off_a_write_from_another_sites_page_is_refused_too(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/api/rfm/calculate/", headers={"Sec-Fetch-Site": "cross-site"})
    assert assert_detail(response, 403) == "a request from another site's page is refused"


def test_every_answer_forbids_framing_and_sniffing(secure_app: Flask) -> None:
    client = secure_app.test_client()
    token = issue_token(secure_app, "write")
    for path in ("/", "/admin/", "/api/docs", "/api/rfm/", "/livez", "/nowhere"):
        response = client.get(path, headers=bearer(token))
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'", path


def test_the_session_cookie_is_same_site_and_in_production_https_only(tmp_path: Path) -> None:
    embedded = create_app(env=_sqlite_env(tmp_path)).config
    production = create_app(
        env=_sqlite_env(tmp_path, RFM_PROFILE="production", SECRET_KEY="s3cret")
    ).config
    assert embedded["SESSION_COOKIE_SAMESITE"] == production["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert (embedded["SESSION_COOKIE_SECURE"], production["SESSION_COOKIE_SECURE"]) == (False, True)
