"""The dashboard's scores pager through the test client, on SQLite and
PostgreSQL: its links name the run, so paging never switches runs."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from flask import Flask

from .conftest import add_orders
from .test_api import calculate
from .test_insights import AS_OF, EARLY, order_book


def page(app: Flask, url: str) -> tuple[str, list[str], str | None]:
    response = app.test_client().get(url)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    html = response.get_data(as_text=True)
    customers = re.findall(r'<tr data-customer="(\d+)"', html)
    found = re.search(r'<a rel="next" href="([^"]+)"', html)
    return html, customers, unescape(found.group(1)) if found else None


def api_page(app: Flask, query: str) -> list[str]:
    body: Any = app.test_client().get(f"/api/rfm/?ordering=-monetary&page_size=25&{query}").json
    return [str(r["customer_id"]) for r in body["results"]]


def test_next_page_stays_on_the_run_it_was_opened_with(app: Flask) -> None:
    add_orders(app, order_book(70))
    first = calculate(app, EARLY)["id"]
    opened = calculate(app, AS_OF)["id"]
    _, rows1, next_url = page(app, "/")
    assert rows1 == api_page(app, f"run={opened}&page=1")
    assert next_url is not None and f"run={opened}" in next_url

    newer = calculate(app, EARLY)["id"]  # finishes while the reader looks at page 1
    html, rows2, _ = page(app, next_url)
    assert rows2 == api_page(app, f"run={opened}&page=2")
    assert not set(rows1) & set(rows2)
    assert f"run {newer} is current now" in unescape(html)

    # Without a run (a fresh look), and for a run without scores: the current run.
    assert page(app, "/?page=2")[1] == api_page(app, f"run={newer}&page=2")
    html, rows, _ = page(app, f"/?page=1&run={first + 100}")
    assert rows == api_page(app, f"run={newer}&page=1")
    assert f"Ignored run {first + 100}" in unescape(html)


def test_movement_with_one_run_says_so_in_the_ui_s_words(app: Flask) -> None:
    add_orders(app, order_book(10))
    calculate(app, AS_OF)
    html, _, _ = page(app, "/")
    note = re.search(r'<p class="hint" id="movement-note">([^<]*)</p>', html)
    assert note is not None
    assert unescape(note.group(1)) == (
        "There is no earlier succeeded run with kept scores to compare with. "
        "Movement needs two succeeded runs."
    )
