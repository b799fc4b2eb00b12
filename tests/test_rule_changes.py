"""A deployment changes its segment rule file between two runs: every reader
resolves a segment among the segments of the run it reads (those of the rule
file that run was calculated with), never among the configured file's alone.

Run A is calculated with the SPEC table, run B with a file that renames
"At Risk", drops "Hibernating" and adds a name with URL-unsafe characters.
Each reader is then asked by an app configured with B's file (B current,
A pinned by the links a client follows) and by one configured with the SPEC
table again (the file changed back, no recalculation yet)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask

from .conftest import add_orders, close_app, make_app
from .test_api import all_results, assert_error, calculate, get_json
from .test_insights import AS_OF, EARLY, order_book

VIP = "At Risk/VIP"
ODD = "a&b %#? 名前"  # slug a-b-名前
RULES_B = f"""
[[segment]]
name = "Champions"
r = [4, 5]
f = [4, 5]
m = [3, 5]

[[segment]]
name = "{VIP}"
r = [1, 2]
f = [3, 5]
m = [1, 5]

[[segment]]
name = "{ODD}"
r = [1, 3]
f = [1, 2]
m = [1, 5]
"""


def _counts(app: Flask, run_id: int) -> dict[str, int]:
    return get_json(app.test_client(), f"/api/rfm/jobs/{run_id}/")["segment_counts"]


@pytest.fixture
def changed(app: Flask, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Run A under the SPEC table (``app``), run B under RULES_B (``b_app``)."""
    path = tmp_path / "rules.toml"
    path.write_text(RULES_B, encoding="utf-8")
    add_orders(app, order_book())
    first = calculate(app, EARLY)
    b_app = make_app(app.config["SQLALCHEMY_DATABASE_URI"], RFM_SEGMENT_RULES=str(path))
    try:
        second = calculate(b_app, AS_OF)
        assert first["status"] == second["status"] == "succeeded"
        a, b = first["id"], second["id"]
        counts_a, counts_b = _counts(app, a), _counts(app, b)
        assert counts_a["At Risk"] and counts_a["Hibernating"], counts_a
        assert counts_b[VIP] and counts_b[ODD], counts_b
        yield {"app": app, "b_app": b_app, "a": a, "b": b, "ca": counts_a, "cb": counts_b}
    finally:
        close_app(b_app)


def test_a_pinned_run_is_read_by_its_own_segment_names(changed: dict[str, Any]) -> None:
    """The `next` link of run A's "At Risk" page (run=A) was a 400 "unknown
    segment" once the rule file renamed it, and run A's page of "At Risk/VIP",
    a segment it never had, was an empty 200."""
    client = changed["b_app"].test_client()
    a, b, counts_a = changed["a"], changed["b"], changed["ca"]
    for text, name in (("At Risk", "At Risk"), ("at-risk", "At Risk"), ("hibernating", None)):
        name = name or "Hibernating"
        for base in ("/api/rfm/by-segment/", "/api/rfm/"):
            rows = all_results(client, f"{base}?segment={quote(text)}&run={a}&page_size=3")
            assert len(rows) == counts_a[name]
            assert {r["segment"] for r in rows} == {name}
    assert_error(
        client.get(f"/api/rfm/by-segment/?segment={quote(VIP)}&run={a}"),
        400,
        f"unknown segment '{VIP}'",
        f"valid segments of run {a}",
        "Hibernating",
        f"run {a} was calculated with another segment rule file",
    )
    # The current run B: its names, and those of A's table are unknown.
    assert_error(
        client.get("/api/rfm/by-segment/?segment=hibernating"),
        400,
        "unknown segment 'hibernating'",
        f"valid segments of run {b}",
        VIP,
    )
    rows = all_results(client, f"/api/rfm/by-segment/?segment={quote(ODD)}&page_size=2")
    assert len(rows) == changed["cb"][ODD]
    assert get_json(client, f"/api/rfm/?run={b}&segment=a-b-名前")["count"] == changed["cb"][ODD]


def test_the_current_run_keeps_its_names_when_the_rule_file_changes_back(
    changed: dict[str, Any], tmp_path: Path
) -> None:
    """Rule file changed, no recalculation yet: the current run's segments
    (the ones statistics and the dashboard's bars show) were 400 "unknown"
    in the API, the export and the dashboard, and a name of the new file
    the run does not have was an empty segment."""
    app, b, counts_b = changed["app"], changed["b"], changed["cb"]
    client = app.test_client()
    for text in (VIP, "at-risk-vip", ODD, "A-B-名前"):
        body = get_json(client, f"/api/rfm/by-segment/?segment={quote(text)}")
        assert body["count"] == counts_b[VIP if "vip" in text.lower() else ODD]
    assert_error(
        client.get("/api/rfm/?segment=hibernating"),
        400,
        f"valid segments of run {b}",
        f"run {b} was calculated with another segment rule file",
    )
    response = client.get(f"/api/rfm/export.csv?segment={quote('at-risk-vip')}")
    assert response.status_code == 200, response.get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == counts_b[VIP] and {r["segment"] for r in rows} == {VIP}
    assert_error(client.get("/api/rfm/export.csv?segment=hibernating"), 400, VIP)
    out = tmp_path / "odd.csv"
    result = app.test_cli_runner().invoke(args=["export-rfm", str(out), "--segment", "a-b-名前"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == counts_b[ODD] + 1

    # The dashboard: every segment bar's own link filters the table.
    html = client.get("/").get_data(as_text=True)
    links = sorted(set(re.findall(r'class="bar-label" href="\?segment=([^"#]+)#scores"', html)))
    assert len(links) == len(counts_b)
    for link in links:
        page = client.get(f"/?segment={link}").get_data(as_text=True)
        assert "Unknown segment" not in page, link
        summary = re.search(r'id="scores-summary" data-count="(\d+)" data-segment="([^"]*)"', page)
        assert summary is not None
        name = summary.group(2).replace("&amp;", "&")
        assert int(summary.group(1)) == counts_b[name], link
    page = client.get("/?segment=hibernating").get_data(as_text=True)
    assert "Unknown segment &#39;hibernating&#39;; showing all segments." in page


def test_the_dashboard_pages_a_pinned_run_by_its_own_names(changed: dict[str, Any]) -> None:
    client = changed["b_app"].test_client()
    a, counts_a = changed["a"], changed["ca"]
    page = client.get(f"/?segment=at-risk&run={a}").get_data(as_text=True)
    assert "Unknown segment" not in page
    assert f'data-count="{counts_a["At Risk"]}" data-segment="At Risk" data-run="{a}"' in page
    page = client.get(f"/?segment=at-risk-vip&run={a}").get_data(as_text=True)
    assert "Unknown segment &#39;at-risk-vip&#39;; showing all segments." in page


def _admin_segment_options(html: str) -> list[str]:
    found = re.search(r'id="filter-groups-data" class="d-none">([^<]*)<', html)
    assert found is not None
    groups = json.loads(found.group(1).replace("&#34;", '"').replace("&amp;", "&"))
    return [value for value, _ in groups["Segment"][0]["options"]]


def test_the_admin_segment_filter_offers_the_kept_runs_segments(changed: dict[str, Any]) -> None:
    """It offered the configured file's names only: after the file changed
    back, none of the current run's renamed segments could be chosen, and
    each choice of the new file listed nobody."""
    for app in (changed["app"], changed["b_app"]):
        html = app.test_client().get("/admin/scores/").get_data(as_text=True)
        options = _admin_segment_options(html)
        assert {VIP, ODD, "At Risk", "Hibernating", "Others"} <= set(options)
        assert options[-1] == "Others" and len(options) == len(set(options))
    client = changed["app"].test_client()
    html = client.get(f"/admin/scores/?flt0_segment_equals={quote(ODD)}").get_data(as_text=True)
    cells = re.findall(r'<td class="col-segment">\s*([^<]*?)\s*</td>', html)
    assert len(cells) == changed["cb"][ODD]  # fewer than a page
    assert set(cells) == {ODD.replace("&", "&amp;")}
