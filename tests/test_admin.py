"""The read-only admin (Flask-Admin) at /admin, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import gc
import io
from collections import Counter
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service.admin import ACCESS_HOOK, ScoreView
from rfm_service.extensions import db

from .conftest import add_orders
from .reference import reference_scores
from .test_api import assert_error, calculate
from .test_insights import AS_OF, EARLY, order_book


class ListRows(HTMLParser):
    """The rows of a Flask-Admin list: ``<td class="col-NAME">`` cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self._column: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        column = next((c[4:] for c in classes if c.startswith("col-")), None)
        if tag == "tr":
            self._row: dict[str, str] = {}
        elif tag == "td" and column:
            self._column = column
            self._row[column] = ""

    def handle_data(self, data: str) -> None:
        if self._column:
            self._row[self._column] += data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._column = None
        elif tag == "tr" and getattr(self, "_row", None):
            self.rows.append(self._row)
            self._row = {}


def rows_of(app: Flask, url: str) -> list[dict[str, str]]:
    response = app.test_client().get(url)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    parser = ListRows()
    parser.feed(response.get_data(as_text=True))
    return parser.rows


@pytest.fixture
def admin_app(app: Flask) -> dict[str, Any]:
    orders = order_book(40)
    add_orders(app, orders)
    early, late = calculate(app, EARLY)["id"], calculate(app, AS_OF)["id"]
    reference = {row[0]: row for row in reference_scores(orders, AS_OF)}
    return {"app": app, "early": early, "late": late, "reference": reference, "orders": orders}


def test_scores_list_shows_the_current_run(admin_app: dict[str, Any]) -> None:
    rows = rows_of(admin_app["app"], "/admin/scores/")
    reference = admin_app["reference"]
    assert {r["run_id"] for r in rows} == {str(admin_app["late"])}
    assert [int(r["customer_id"]) for r in rows] == sorted(reference)  # default: by customer
    for r in rows:
        _, recency, frequency, monetary, rs, fs, ms, segment = reference[int(r["customer_id"])]
        assert (r["segment"], r["rfm_score"], r["recency_days"], r["frequency"]) == (
            segment,
            f"{rs}{fs}{ms}",
            str(recency),
            str(frequency),
        )
        assert r["monetary"] == str(monetary.quantize(Decimal("0.01")))
    # Another run only when asked for.
    early = rows_of(admin_app["app"], f"/admin/scores/?flt0_run_equals={admin_app['early']}")
    assert {r["run_id"] for r in early} == {str(admin_app["early"])}
    assert len(early) == len(reference_scores(admin_app["orders"], EARLY))
    # A Run filter Flask-Admin drops as invalid leaves the current run, not every run.
    for value in ("abc", ""):
        shown = rows_of(admin_app["app"], f"/admin/scores/?flt0_run_equals={value}")
        assert {r["run_id"] for r in shown} == {str(admin_app["late"])}, value
        assert len(shown) == len(reference)


def test_search_filter_and_sort(admin_app: dict[str, Any]) -> None:
    app, reference = admin_app["app"], admin_app["reference"]
    customer = sorted(reference)[7]
    found = rows_of(app, f"/admin/scores/?search={customer}")
    assert [int(r["customer_id"]) for r in found] == [customer]  # exact, not "7" in "17"
    assert rows_of(app, "/admin/scores/?search=seven") == []
    assert rows_of(app, "/admin/scores/?search=%C2%B2") == []  # '²': isdigit(), but not int()

    segment, n = Counter(row[7] for row in reference.values()).most_common(1)[0]
    filtered = rows_of(app, f"/admin/scores/?flt0_segment_equals={segment}")
    assert len(filtered) == n and {r["segment"] for r in filtered} == {segment}
    r5 = rows_of(app, "/admin/scores/?flt0_r_equals=5&flt1_f_equals=1")
    assert sorted(int(r["customer_id"]) for r in r5) == sorted(
        c for c, row in reference.items() if row[4] == 5 and row[5] == 1
    )

    monetary = ScoreView.column_list.index("monetary")
    ranked = rows_of(app, f"/admin/scores/?sort={monetary}&desc=1")
    values = [Decimal(r["monetary"]) for r in ranked]
    assert values == sorted((row[3] for row in reference.values()), reverse=True)


def test_scores_list_never_counts(admin_app: dict[str, Any]) -> None:
    app = admin_app["app"]
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.lower())

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        rows_of(app, "/admin/scores/")
        rows_of(app, "/admin/scores/?flt0_segment_equals=Others&search=3")
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    selects = [s for s in statements if "rfm_scores" in s]
    assert selects and not any("count(" in s for s in selects), selects


def test_export_csv_of_the_filtered_list(admin_app: dict[str, Any]) -> None:
    app, reference = admin_app["app"], admin_app["reference"]
    segment, n = Counter(row[7] for row in reference.values()).most_common(1)[0]
    response = app.test_client().get(f"/admin/scores/export/csv/?flt0_segment_equals={segment}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == n and {r["Segment"] for r in rows} == {segment}
    assert {r["Run"] for r in rows} == {str(admin_app["late"])}
    assert sorted(int(r["Customer Id"]) for r in rows) == sorted(
        c for c, row in reference.items() if row[7] == segment
    )


def test_export_csv_gives_its_connection_back(admin_app: dict[str, Any]) -> None:
    """The export's rows are read after the view's own teardown has closed
    the request session; the stream must release what it used itself, not
    leave an open transaction (holding locks that block a run's DROP) for
    the garbage collector to find."""
    app = admin_app["app"]
    with app.app_context():
        pool = db.engine.pool
    url = "/admin/scores/export/csv/"
    gc.disable()  # what the collector would tidy is what this test looks for
    try:
        response = app.test_client().get(url)
        assert response.get_data(as_text=True).count("\n") == len(admin_app["reference"]) + 1
        assert pool.checkedout() == 0
        # A download abandoned part way: the server closes the body early.
        stream = app.test_client().get(url, buffered=False)
        pieces = iter(stream.response)
        next(pieces), next(pieces)  # the header, then the first row
        assert pool.checkedout() == 1
        stream.close()
        assert pool.checkedout() == 0
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "url",
    [
        "/admin/scores/details/?id=1",  # the key is (run_id, customer_id)
        "/admin/scores/details/?id=1,2,3",
        "/admin/scores/details/?id=x,y",
        "/admin/scores/details/?id=%FF",
        "/admin/scores/details/?id=99999999999,1",
        "/admin/runs/details/?id=abc",
        "/admin/runs/details/?id=2,1",
        "/admin/runs/details/?id=99999999999",
    ],
)
def test_a_hand_edited_record_id_is_a_record_that_does_not_exist(
    admin_app: dict[str, Any], url: str
) -> None:
    response = admin_app["app"].test_client().get(url)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    assert response.headers["Location"].startswith("/admin/")


@pytest.mark.parametrize("page", ["-1", "99999999999999999999", "abc"])
def test_any_list_page_number_answers(admin_app: dict[str, Any], page: str) -> None:
    for view in ("scores", "runs"):
        response = admin_app["app"].test_client().get(f"/admin/{view}/?page={page}")
        assert response.status_code == 200, (view, response.get_data(as_text=True)[:300])


def test_admin_is_read_only(admin_app: dict[str, Any]) -> None:
    app = admin_app["app"]
    client = app.test_client()
    key = f"{admin_app['late']},1"
    html = client.get("/admin/scores/").get_data(as_text=True)
    assert "/admin/scores/new/" not in html and "/admin/scores/edit/" not in html
    assert "/admin/scores/delete/" not in html
    for view in ("scores", "runs"):
        for path in ("new/", f"edit/?id={key}"):
            assert client.get(f"/admin/{view}/{path}").status_code in (302, 403, 404)
        client.post(f"/admin/{view}/new/", data={"segment": "Hacked", "run_id": 9})
        client.post(f"/admin/{view}/edit/?id={key}", data={"segment": "Hacked"})
        client.post(f"/admin/{view}/delete/", data={"id": key})
        client.post(f"/admin/{view}/action/", data={"action": "delete", "rowid": key})
    with app.app_context(), db.engine.connect() as conn:
        segments = conn.execute(sa.text("SELECT DISTINCT segment FROM rfm_scores")).scalars()
        assert "Hacked" not in set(segments)
        assert conn.execute(sa.text("SELECT COUNT(*) FROM rfm_runs")).scalar_one() == 2
    details = client.get(f"/admin/scores/details/?id={key}")
    assert details.status_code == 200 and admin_app["reference"][1][7] in details.get_data(
        as_text=True
    )


def test_runs_view_lists_history(admin_app: dict[str, Any]) -> None:
    rows = rows_of(admin_app["app"], "/admin/runs/")
    assert [r["id"] for r in rows] == [str(admin_app["late"]), str(admin_app["early"])]
    assert {r["status"] for r in rows} == {"succeeded"}
    assert [r["as_of"] for r in rows] == [AS_OF.isoformat(), EARLY.isoformat()]


def test_access_hook_can_refuse(admin_app: dict[str, Any]) -> None:
    app = admin_app["app"]
    app.extensions[ACCESS_HOOK] = lambda: False
    for url in ("/admin/scores/", "/admin/runs/", "/admin/scores/export/csv/"):
        assert_error(app.test_client().get(url), 403, "admin")
    app.extensions[ACCESS_HOOK] = lambda: True
    assert app.test_client().get("/admin/scores/").status_code == 200


def test_admin_home_links_the_views(admin_app: dict[str, Any]) -> None:
    html = admin_app["app"].test_client().get("/admin/").get_data(as_text=True)
    assert 'href="/admin/scores/"' in html and 'href="/admin/runs/"' in html
    assert "read-only" in html.lower()


@pytest.mark.parametrize("path", ["/admin/", "/admin/scores/", "/admin/runs/"])
def test_admin_pages_name_no_favicon_to_fetch(admin_app: dict[str, Any], path: str) -> None:
    # Without one the browser asks for /favicon.ico: a 404 in its console.
    html = admin_app["app"].test_client().get(path).get_data(as_text=True)
    assert '<link rel="icon" href="data:,">' in html


@pytest.mark.parametrize(
    "query",
    [
        "flt0_run_equals=99999999999999999999",
        "flt0_run_equals=-9223372036854775809",
        "flt0_r_equals=9999999999999999999999",
        "flt0_segment_equals=%00",
        "flt0_segment_equals=Lost%00",
    ],
)
def test_a_filter_value_no_database_can_bind_is_ignored(
    admin_app: dict[str, Any], query: str
) -> None:
    """Integers beyond 64 bits (SQLite: OverflowError) and NUL characters
    (psycopg2: ValueError) were a 500; Flask-Admin's notice drops them, and
    the list stays on the current run."""
    rows = rows_of(admin_app["app"], f"/admin/scores/?{query}")  # asserts a 200
    assert {r["run_id"] for r in rows} <= {str(admin_app["late"])}


@pytest.mark.parametrize("query", ["flt0_status_equals=%00", "flt0_trigger_equals=x%00"])
def test_a_run_filter_value_with_a_nul_is_ignored(admin_app: dict[str, Any], query: str) -> None:
    response = admin_app["app"].test_client().get(f"/admin/runs/?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
