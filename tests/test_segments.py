"""Segment rules: the SPEC table, the generated SQL CASE, and rule files."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service import ConfigError, create_app
from rfm_service.extensions import db
from rfm_service.segments import DEFAULT_RULES, case_sql, cell_map, resolve_segment, slugify
from tests.reference import spec_segment

CELLS = list(itertools.product(range(1, 6), repeat=3))


def test_each_of_the_125_cells_maps_to_the_spec_segment() -> None:
    assert cell_map(DEFAULT_RULES) == {cell: spec_segment(*cell) for cell in CELLS}


def test_every_named_segment_is_reachable_and_others_gets_54_cells() -> None:
    counts = Counter(cell_map(DEFAULT_RULES).values())
    assert counts["Others"] == 54
    assert set(counts) == {rule.name for rule in DEFAULT_RULES} | {"Others"}
    assert counts["Lost"] == 1 and counts["New Customers"] == 4


def test_generated_sql_case_agrees_on_all_125_cells(app: Flask) -> None:
    case, params = case_sql(DEFAULT_RULES, "r", "f", "m")
    cells = " UNION ALL ".join(f"SELECT {r} AS r, {f} AS f, {m} AS m" for r, f, m in CELLS)
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT r, f, m, {case} FROM ({cells}) AS c"), params)
        found = {(r, f, m): seg for r, f, m, seg in rows}
    assert found == {cell: spec_segment(*cell) for cell in CELLS}
    assert "Champions" not in case  # names are bound, never formatted into SQL


def test_segment_names_resolve_case_insensitively_and_by_slug() -> None:
    assert resolve_segment(DEFAULT_RULES, "at-risk") == "At Risk"
    assert resolve_segment(DEFAULT_RULES, "CANNOT LOSE THEM") == "Cannot Lose Them"
    assert resolve_segment(DEFAULT_RULES, "others") == "Others"
    assert resolve_segment(DEFAULT_RULES, "Nobody") is None
    assert slugify("Loyal Customers") == "loyal-customers"


def test_names_in_other_scripts_get_slugs_of_their_own(tmp_path: Path) -> None:
    """Two Cyrillic names once both slugged to '' and were refused as duplicates."""
    body = GOOD.replace('"Best"', '"Лояльные клиенты"').replace('"Sleeping"', '"Потерянные"')
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": "sqlite://"},
        env={"RFM_SEGMENT_RULES": write_rules(tmp_path, body)},
    )
    rules = app.extensions["rfm_rules"]
    assert slugify("Лояльные клиенты") == "лояльные-клиенты"
    assert resolve_segment(rules, "лояльные-клиенты") == "Лояльные клиенты"
    assert resolve_segment(rules, "ПОТЕРЯННЫЕ") == "Потерянные"
    assert slugify("!!!") == "" and resolve_segment(rules, "") is None


def write_rules(tmp_path: Path, body: str, suffix: str = ".toml") -> str:
    path = tmp_path / f"rules{suffix}"
    path.write_text(body, encoding="utf-8")
    return str(path)


GOOD = """
[[segment]]
name = "Best"
r = [4, 5]
f = [4, 5]
m = [4, 5]

[[segment]]
name = "Sleeping"
r = 1
f = [1, 5]
m = [1, 5]
"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (GOOD.replace("r = 1\n", "r = 6\n"), "scores must be 1-5"),
        (GOOD.replace("m = [4, 5]", "m = [5, 4]"), "empty range"),
        (GOOD.replace('"Sleeping"', '"best"'), "duplicate of 'Best'"),
        (GOOD.replace('"Sleeping"', '"Others"'), "duplicate of 'Others'"),
        # "(none)" is the transitions' pseudo-segment (not scored in a run).
        (GOOD.replace('"Sleeping"', '"(none)"'), "duplicate of '(none)'"),
        (GOOD.replace('"Sleeping"', '"None"'), "duplicate of '(none)'"),
        (
            GOOD.replace("r = 1\n", "r = [4, 5]\n")
            .replace("f = [1, 5]", "f = [4, 5]")
            .replace("m = [1, 5]", "m = [5, 5]"),
            "can never match",
        ),
        (  # exactly the cells of the rule above it: covered as much as a subset is
            GOOD.replace("r = 1\n", "r = [4, 5]\n")
            .replace("f = [1, 5]", "f = [4, 5]")
            .replace("m = [1, 5]", "m = [4, 5]"),
            "rule 2 ('Sleeping') can never match",
        ),
        ("[[segment]]\nname = 'x'\nr = [1, 2]\n", "expected a score or a [low, high] pair"),
        ("this is = not toml [", "not valid TOML"),
        ("[[rules]]\nname = 'x'\n", "expected a list of segments ([[segment]] tables in TOML"),
        # Names go into CSV exports, where a spreadsheet would run these.
        (GOOD.replace('"Best"', '"=HYPERLINK(1)"'), "may not start with '='"),
        (GOOD.replace('"Best"', '" +cmd"'), "may not start with '+'"),
        (GOOD.replace('"Best"', '"-1"'), "may not start with '-'"),
        (GOOD.replace('"Best"', '"@SUM(1)"'), "may not start with '@'"),
        # PostgreSQL refuses NUL in text: every calculation failed (SQLite stored it).
        (GOOD.replace('"Best"', '"Be\\u0000st"'), "control or separator character U+0000"),
        # A line break split the one-line messages naming the segment.
        (GOOD.replace('"Best"', '"Be\\nst"'), "control or separator character U+000A"),
        (GOOD.replace('"Best"', '"Be\\tst"'), "control or separator character U+0009"),
        (GOOD.replace('"Best"', '"Be\\u2028st"'), "control or separator character U+2028"),
    ],
)
def test_invalid_rule_file_stops_the_app_at_start(tmp_path: Path, body: str, message: str) -> None:
    path = write_rules(tmp_path, body)
    with pytest.raises(ConfigError) as error:
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, env={"RFM_SEGMENT_RULES": path})
    assert message in str(error.value)
    assert str(error.value).startswith("invalid segment rules:")


def test_rule_file_replaces_the_table_and_rfm_rules_prints_cells(tmp_path: Path) -> None:
    path = write_rules(tmp_path, GOOD)
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, env={"RFM_SEGMENT_RULES": path})
    assert [rule.name for rule in app.extensions["rfm_rules"]] == ["Best", "Sleeping"]
    result = app.test_cli_runner().invoke(args=["rfm-rules"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:4]]
    assert rows == [
        ["1", "Best", "4-5", "4-5", "4-5", "8"],
        ["2", "Sleeping", "1", "1-5", "1-5", "25"],
        ["Others", "92"],
    ]
    assert "Best: 444 445 454 455 544 545 554 555" in result.output


def test_json_rule_files_are_accepted(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path, '[{"name": "All", "r": [1, 5], "f": [1, 5], "m": [1, 5]}]', ".json"
    )
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, env={"RFM_SEGMENT_RULES": path})
    assert Counter(cell_map(app.extensions["rfm_rules"]).values()) == {"All": 125}


def test_a_lone_surrogate_in_a_json_name_stops_the_app_at_start(tmp_path: Path) -> None:
    """UTF-8 cannot encode it: every calculation, and the dry run, ended in a
    traceback (UnicodeEncodeError) on both databases."""
    path = write_rules(tmp_path, '[{"name": "A\\ud800", "r": 1, "f": 1, "m": 1}]', ".json")
    with pytest.raises(ConfigError, match="control or separator character U\\+D800"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, env={"RFM_SEGMENT_RULES": path})


def test_names_in_other_scripts_keep_their_joiners(tmp_path: Path) -> None:
    """Format characters are letters' business (Persian writes words with a
    zero-width non-joiner); only controls and separators are refused."""
    path = write_rules(
        tmp_path, GOOD.replace('"Best"', '"\u0645\u06cc\u200c\u062e\u0648\u0627\u0645"')
    )
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, env={"RFM_SEGMENT_RULES": path})
    assert app.extensions["rfm_rules"][0].name == "\u0645\u06cc\u200c\u062e\u0648\u0627\u0645"


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_a_rule_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path, suffix: str) -> None:
    """tomllib and json refused it ("Invalid statement", "Unexpected UTF-8 BOM")."""
    body = GOOD if suffix == ".toml" else '[{"name": "All", "r": [1, 5], "f": [1, 5], "m": [1, 5]}]'
    path = tmp_path / f"rules{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, env={"RFM_SEGMENT_RULES": str(path)})
    names = [rule.name for rule in app.extensions["rfm_rules"]]
    assert names == (["Best", "Sleeping"] if suffix == ".toml" else ["All"])


def test_a_rule_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    """It was a UnicodeDecodeError traceback (exit 1 from flask, 2 from celery)."""
    path = tmp_path / "rules.json"
    path.write_bytes(b'[{"name": "Caf\xe9", "r": 1, "f": 1, "m": 1}]')
    with pytest.raises(ConfigError) as error:
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, env={"RFM_SEGMENT_RULES": str(path)})
    assert str(error.value) == (
        f"invalid segment rules: {path}: not valid UTF-8 (byte 0xe9 at offset 14)"
    )


def test_missing_rule_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read segment rules file"):
        create_app(
            {"SQLALCHEMY_DATABASE_URI": "sqlite://"},
            env={"RFM_SEGMENT_RULES": str(tmp_path / "nope.toml")},
        )


def test_default_rfm_rules_output_lists_the_spec_counts() -> None:
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}, env={})
    output = app.test_cli_runner().invoke(args=["rfm-rules"]).output
    counts = Counter(cell_map(DEFAULT_RULES).values())
    for name, n in counts.items():
        row = next(line for line in output.splitlines() if f" {name} " in f"{line} ")
        assert row.split()[-1] == str(n)
