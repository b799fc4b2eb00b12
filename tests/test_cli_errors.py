"""Every command the database fails ends in one line and exit 1, never a
traceback (SPEC §5): a server nobody listens on, a database never migrated,
a statement past its time limit."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service.extensions import db
from tests.conftest import add_orders, close_app, make_app
from tests.test_cli_calculate import ORDERS

COMMANDS = [
    ["calculate-rfm", "--as-of", "2026-03-01"],
    ["calculate-rfm", "--as-of", "2026-03-01", "--dry-run"],
    ["import-orders", "{orders}"],
    ["seed-demo", "--customers", "5", "--seed", "1"],
    ["export-rfm", "-"],
    ["create-api-token", "--name", "ci", "--scope", "read"],
    ["revoke-api-token", "ci"],
    ["list-api-tokens"],
]


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening, then closed: refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def invoke(app: Flask, args: list[str], tmp_path: Path) -> tuple[int, list[str]]:
    orders = tmp_path / "orders.csv"
    orders.write_text("customer_id,ordered_at,total_amount\n1,2026-01-01,5.00\n")
    args = [arg.format(orders=orders) for arg in args]
    result = app.test_cli_runner().invoke(args=args)
    # seed-demo's progress label is on stderr before the error
    lines = [line for line in result.stderr.splitlines() if line != "generating"]
    assert "Traceback" not in result.stderr + result.stdout
    return result.exit_code, lines


def app_at(url: str) -> Iterator[Flask]:
    app = make_app(url)  # no migrations, no tables emptied: there may be none
    yield app
    close_app(app)


@pytest.fixture
def unreachable() -> Iterator[Flask]:
    yield from app_at(f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port()}/rfm")


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_an_unreachable_server_is_one_line(
    unreachable: Flask, args: list[str], tmp_path: Path
) -> None:
    code, lines = invoke(unreachable, args, tmp_path)
    assert code == 1 and len(lines) == 1, lines
    url = unreachable.config["SQLALCHEMY_DATABASE_URI"]
    assert lines[0].startswith(f"Error: cannot use the database {url}: connection to server")
    assert "Connection refused" in lines[0]


@pytest.fixture
def never_migrated(blank_url: str) -> Iterator[Flask]:
    yield from app_at(blank_url)


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_database_never_migrated_says_to_migrate(
    never_migrated: Flask, args: list[str], tmp_path: Path
) -> None:
    code, lines = invoke(never_migrated, args, tmp_path)
    assert (code, lines) == (1, ["Error: the database has no schema yet: run `flask db upgrade`"])


def test_a_dry_run_past_its_time_limit_is_one_line(pg_app: Flask, tmp_path: Path) -> None:
    add_orders(pg_app, ORDERS)
    pg_app.config["RFM_TIME_LIMIT"] = 1
    with pg_app.app_context(), db.engine.connect() as blocker:
        blocker.execute(sa.text("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"))  # a real stall
        code, lines = invoke(pg_app, COMMANDS[1], tmp_path)
        blocker.rollback()
    assert (code, lines) == (
        1,
        ["Error: the statement exceeded the time limit of 1 s (RFM_TIME_LIMIT)"],
    )


def test_a_sqlite_dry_run_past_its_time_limit_is_one_line(
    sqlite_app: Flask, tmp_path: Path
) -> None:
    when = dt.datetime(2026, 2, 1, 12, tzinfo=dt.UTC)
    add_orders(sqlite_app, [(c, when, f"{c % 97}.50") for c in range(1, 2001)])
    sqlite_app.config["RFM_TIME_LIMIT"] = 0  # below what the configuration accepts: at once
    code, lines = invoke(sqlite_app, COMMANDS[1], tmp_path)
    assert (code, lines) == (
        1,
        ["Error: the statement exceeded the time limit of 0 s (RFM_TIME_LIMIT)"],
    )
    sqlite_app.config["RFM_TIME_LIMIT"] = 3600
    assert invoke(sqlite_app, COMMANDS[1], tmp_path)[0] == 0


@pytest.mark.parametrize(
    "as_of, reason",
    [
        ("2026-W09-7", "'2026-W09-7' is not a valid date (expected YYYY-MM-DD)"),
        ("1899-12-31", "as_of 1899-12-31 is outside 1900-01-01 .. 9999-12-30"),
        ("9999-12-31", "as_of 9999-12-31 is outside 1900-01-01 .. 9999-12-30"),
    ],
)
def test_an_as_of_calculate_rfm_cannot_take_is_a_bad_option(
    app: Flask, as_of: str, reason: str
) -> None:
    add_orders(app, ORDERS)
    result = app.test_cli_runner().invoke(args=["calculate-rfm", "--as-of", as_of])
    assert result.exit_code == 2
    assert reason in result.stderr
    with app.app_context():
        assert db.session.execute(sa.text("SELECT COUNT(*) FROM rfm_runs")).scalar() == 0
