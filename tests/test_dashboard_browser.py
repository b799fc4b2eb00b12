"""The dashboard in a real headless Chromium against a real server, on SQLite
and PostgreSQL: every chart shows the database's numbers, the segment filter
changes the table, Recalculate ends in a succeeded run shown on the page.

Expected numbers are computed here in Python from the raw score rows (no
service code), so a wrong GROUP BY in ``insights`` would show.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import demo_data, executor
from rfm_service.extensions import db

from .browser_support import chromium, live_server, require_chromium, screenshot
from .conftest import empty_tables, make_app
from .test_api import calculate

END = dt.date(2026, 1, 31)  # the demo orders' last day
EARLY = END - dt.timedelta(days=30)
NONE = "(none)"


@dataclass
class Dashboard:
    app: Flask
    base: str
    driver: Any
    backend: str
    early: int
    late: int


def score_rows(app: Flask, run_id: int) -> dict[int, tuple[Any, ...]]:
    """customer_id -> (recency_days, frequency, monetary, R, F, M, segment), raw."""
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT customer_id, recency_days, frequency, monetary, recency_score, "
                "frequency_score, monetary_score, segment FROM rfm_scores WHERE run_id = :r"
            ),
            {"r": run_id},
        )
        return {
            r[0]: (r[1], r[2], Decimal(str(r[3])).quantize(Decimal("0.01")), *r[4:]) for r in rows
        }


def scalar(app: Flask, sql: str) -> Any:
    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dashboard(request: pytest.FixtureRequest, browser: Any) -> Iterator[Dashboard]:
    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    app = make_app(url)
    empty_tables(app)
    with app.app_context():
        demo_data.seed(db.engine, demo_data.DemoSpec(1200, 42, 5.0, END))
    early, late = calculate(app, EARLY)["id"], calculate(app, END)["id"]
    try:
        with live_server(app) as base:
            yield Dashboard(app, base, browser, request.param, early, late)
    finally:
        executor.shutdown(app)
        with app.app_context():
            db.engine.dispose()


def open_page(d: Dashboard, path: str = "/") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d.driver.get(d.base + path)
    WebDriverWait(d.driver, 15).until(lambda drv: drv.find_elements(By.TAG_NAME, "footer"))


def css(d: Dashboard, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return d.driver.find_elements(By.CSS_SELECTOR, selector)


def no_console_errors(d: Dashboard) -> None:
    errors = [e for e in d.driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


# What the page shows, read in one round trip (a WebDriver call per cell is slow).
READ_PAGE = """
const all = (sel, root) => Array.from((root || document).querySelectorAll(sel));
const text = (sel) => document.querySelector(sel).innerText.trim();
return {
  scored: text('#customers-scored'), without: text('#customers-without-orders'),
  revenue: text('#revenue'), asOf: text('#as-of'),
  lastRun: [text('#last-run-status'), document.querySelector('#last-run-status').dataset.run],
  bars: Object.fromEntries(['customers', 'revenue'].map((chart) => [chart,
    all(`#chart-${chart} .bar-row`).map((row) => [row.dataset.segment,
      row.querySelector('.bar-value').innerText.trim().split(/\\s+/)[0],
      Number(row.querySelector('rect.fill').getAttribute('width'))])])),
  grid: all('#rf-grid td').map((td) => [Number(td.dataset.r), Number(td.dataset.f),
    td.querySelector('strong').innerText, td.dataset.mean, td.innerText]),
  thresholds: Object.fromEntries(['recency', 'frequency', 'monetary'].map((name) => [name,
    all(`#threshold-${name} tr[data-score]`).map((tr) => [Number(tr.dataset.score),
      Number(tr.dataset.customers), tr.dataset.min, tr.dataset.max])])),
  matrix: [document.querySelector('#movement-matrix').dataset.fromRun,
    all('#movement-matrix td').map((td) => [td.dataset.from, td.dataset.to,
      Number(td.dataset.count), td.innerText.trim()])],
  runs: all('#runs tbody tr').map((tr) => [Number(tr.dataset.run), tr.dataset.status]),
};
"""


def test_every_chart_shows_the_database_figures(dashboard: Dashboard) -> None:
    d = dashboard
    late, early = score_rows(d.app, d.late), score_rows(d.app, d.early)
    open_page(d)
    no_console_errors(d)
    page = d.driver.execute_script(READ_PAGE)

    # Headline figures.
    customers = scalar(d.app, "SELECT COUNT(*) FROM customers")
    revenue = sum(row[2] for row in late.values())
    assert page["scored"] == f"{len(late):,}"
    assert page["without"] == f"{customers - len(late):,}"
    assert page["revenue"] == f"{revenue:,.2f}"
    assert page["asOf"] == END.isoformat()
    assert page["lastRun"] == ["succeeded", str(d.late)]

    # Segment charts: customers and revenue per segment, bars scaled to the largest.
    counts = Counter(row[6] for row in late.values())
    money: dict[str, Decimal] = defaultdict(Decimal)
    for row in late.values():
        money[row[6]] += row[2]
    for chart, expected in (("customers", counts), ("revenue", money)):
        bars = page["bars"][chart]
        assert len(bars) == 12
        largest = max(expected.values())
        for name, shown, width in bars:
            value = expected.get(name, 0)
            assert shown == (f"{value:,}" if chart == "customers" else f"{value:,.2f}"), name
            assert width == pytest.approx(100 * float(value) / float(largest), abs=0.01), name

    # R x F grid: count and mean monetary per cell.
    cells: dict[tuple[int, int], list[Decimal]] = defaultdict(list)
    for row in late.values():
        cells[(row[3], row[4])].append(row[2])
    assert len(page["grid"]) == 25
    for r, f, shown, mean, cell_text in page["grid"]:
        members = cells.get((r, f), [])
        assert shown == f"{len(members):,}", (r, f)
        if members:
            assert abs(Decimal(mean) - sum(members) / len(members)) <= Decimal("0.005"), (r, f)
            assert f"{Decimal(mean):,.2f}" in cell_text

    # Score thresholds: each score's raw range.
    for index, dimension in enumerate(("recency", "frequency", "monetary")):
        rows = page["thresholds"][dimension]
        assert [score for score, *_ in rows] == [1, 2, 3, 4, 5]
        for score, n, low, high in rows:
            values = [row[index] for row in late.values() if row[3 + index] == score]
            assert (n, low, high) == (len(values), str(min(values)), str(max(values)))

    # Movement from the earlier run to the current one, "(none)" for absent customers.
    expected_moves = Counter(
        (early[c][6] if c in early else NONE, late[c][6] if c in late else NONE)
        for c in early.keys() | late.keys()
    )
    assert any(source == NONE for source, _ in expected_moves)  # customers entered
    from_run, matrix = page["matrix"]
    assert from_run == str(d.early)
    assert {(f, t): n for f, t, n, _ in matrix if n} == dict(expected_moves)
    assert all(shown == (f"{n:,}" if n else "·") for _, _, n, shown in matrix)

    # Run history, newest first.
    with d.app.app_context(), db.engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT id, status FROM rfm_runs ORDER BY id DESC")).all()
    assert page["runs"] == [list(r) for r in runs]

    screenshot(d.driver, f"dashboard-desktop-{d.backend}.png", 1280)
    screenshot(d.driver, f"dashboard-phone-{d.backend}.png", 375, mobile=True)


def test_phone_width_has_no_page_wide_scrolling(dashboard: Dashboard) -> None:
    d = dashboard
    d.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        open_page(d)
        assert d.driver.execute_script("return window.innerWidth") == 375
        # Wide tables scroll inside their own boxes; the page itself does not.
        assert d.driver.execute_script("return document.documentElement.scrollWidth") <= 375
        assert css(d, "#recalculate")[0].is_displayed()
    finally:
        d.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_segment_filter_changes_the_table(dashboard: Dashboard) -> None:
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d = dashboard
    late = score_rows(d.app, d.late)
    open_page(d)
    before = [tr.get_attribute("data-customer") for tr in css(d, "#score-table tbody tr")]
    segment, n = Counter(row[6] for row in late.values()).most_common()[1]
    Select(css(d, "#segment")[0]).select_by_value(segment)  # submits on change
    WebDriverWait(d.driver, 15).until(lambda drv: "segment=" in drv.current_url)
    open_page(d, d.driver.current_url.removeprefix(d.base))  # fully loaded
    summary = css(d, "#scores-summary")[0]
    assert summary.get_attribute("data-segment") == segment
    assert int(summary.get_attribute("data-count")) == n
    rows = css(d, "#score-table tbody tr")
    assert len(rows) == min(n, 25)
    assert {tr.get_attribute("data-segment") for tr in rows} == {segment}
    ids = [int(tr.get_attribute("data-customer")) for tr in rows]
    expected = sorted(
        (c for c, row in late.items() if row[6] == segment), key=lambda c: (-late[c][2], c)
    )
    assert ids == expected[:25]
    assert ids != before


def test_recalculate_ends_in_a_succeeded_run_on_the_page(dashboard: Dashboard) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    d = dashboard
    open_page(d)
    css(d, "#recalculate")[0].click()
    WebDriverWait(d.driver, 60).until(lambda drv: css(d, "#finished"))
    open_page(d, d.driver.current_url.removeprefix(d.base))
    finished = css(d, "#finished")[0]
    new_id = int(finished.get_attribute("data-run"))
    assert new_id > d.late
    assert finished.get_attribute("data-status") == "succeeded", finished.text
    today = dt.datetime.now(dt.UTC).date()
    scored = scalar(d.app, f"SELECT COUNT(*) FROM rfm_scores WHERE run_id = {new_id}")
    assert f"Run {new_id} succeeded: {scored:,} customers scored as of {today}" in finished.text
    assert css(d, "#as-of")[0].text == today.isoformat()
    assert css(d, "#customers-scored")[0].text == f"{scored:,}"
    first = css(d, "#runs tbody tr")[0]
    assert (first.get_attribute("data-run"), first.get_attribute("data-status")) == (
        str(new_id),
        "succeeded",
    )
    assert css(d, "#last-run-status")[0].get_attribute("data-run") == str(new_id)
    assert css(d, "#movement-matrix")[0].get_attribute("data-to-run") == str(new_id)
    no_console_errors(d)
