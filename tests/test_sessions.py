"""The session interface skips Flask's signer when there is no session
cookie; everything a client can see must stay Flask's own behaviour."""

from __future__ import annotations

from flask import Flask, session
from flask.sessions import SecureCookieSessionInterface

from tests.conftest import make_app


def app_with_session_routes(url: str) -> Flask:
    app = make_app(url)

    @app.get("/_test/session/set")
    def set_value() -> str:
        session["seen"] = "yes"
        return "set"

    @app.get("/_test/session/get")
    def get_value() -> str:
        return session.get("seen", "nothing")

    @app.get("/_test/session/clear")
    def clear() -> str:
        session.clear()
        return "cleared"

    return app


def test_an_api_response_without_a_session_cookie_sets_none(sqlite_url: str) -> None:
    client = make_app(sqlite_url).test_client()
    response = client.get("/api/rfm/")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.headers.get("Vary", "")


def test_sessions_still_round_trip_and_reject_forged_cookies(sqlite_url: str) -> None:
    app = app_with_session_routes(sqlite_url)
    client = app.test_client()
    assert client.get("/_test/session/get").text == "nothing"
    set_response = client.get("/_test/session/set")
    assert "session=" in set_response.headers["Set-Cookie"]
    assert client.get("/_test/session/get").text == "yes"
    # The cookie the service signed reads back in Flask's stock interface too.
    cookie = client.get_cookie("session").value
    assert SecureCookieSessionInterface().get_signing_serializer(app).loads(cookie) == {
        "seen": "yes"
    }
    cleared = client.get("/_test/session/clear")
    assert "session=;" in cleared.headers["Set-Cookie"]  # deleted, as Flask does
    forged = app.test_client()
    forged.set_cookie("session", cookie[:-2] + "xx")
    assert forged.get("/_test/session/get").text == "nothing"


def test_headers_match_flasks_own_interface_for_every_route(sqlite_url: str) -> None:
    """Reading an empty session still answers ``Vary: Cookie`` (caches must
    key on the cookie), exactly as the stock interface does."""
    ours = app_with_session_routes(sqlite_url)
    stock = app_with_session_routes(sqlite_url)
    stock.session_interface = SecureCookieSessionInterface()
    for path in ("/_test/session/get", "/_test/session/set", "/_test/session/clear", "/api/rfm/"):
        got, expected = ours.test_client().get(path), stock.test_client().get(path)
        for header in ("Vary", "Set-Cookie"):
            assert got.headers.get(header) == expected.headers.get(header), (path, header)
    assert "Cookie" in ours.test_client().get("/_test/session/get").headers["Vary"]
