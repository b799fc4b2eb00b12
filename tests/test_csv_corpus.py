"""``flask import-orders`` against a corpus of broken and hostile files.

Each file is generated in tmp_path and imported through the CLI into a
database that already holds data, on SQLite and PostgreSQL. Every one must
end with exit code 1, one short ``Error:`` line that names the line and
the column where the file has them, no traceback, and both tables exactly
as they were.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from rfm_service.extensions import db

from .conftest import add_orders

MB = 1024 * 1024
H3 = b"customer_id,ordered_at,total_amount\n"
H4 = b"customer_id,ordered_at,total_amount,order_id\n"
GOOD = b"1,2024-01-01,5.00,1\n"  # a valid row before the bad one, where it matters


def _utf16(text: str, codec: str) -> bytes:
    return text.encode(codec)


# name -> (file content, fragments the one error line must contain)
CORPUS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    # empty and header-only
    "empty": (b"", ("the file is empty",)),
    "blank lines only": (b"\n\r\n\n", ("the file is empty",)),
    "bom only": (b"\xef\xbb\xbf", ("the file is empty",)),
    "header only": (H4, ("line 1: the file has a header row but no data rows",)),
    "header only, bom and crlf": (
        b"\xef\xbb\xbfcustomer_id,ordered_at,total_amount\r\n",
        ("line 1: the file has a header row but no data rows",),
    ),
    # columns
    "missing column": (b"customer_id,ordered_at\n1,2024-01-01\n", ("line 1", "total_amount")),
    "extra column": (
        b"customer_id,ordered_at,total_amount,coupon\n1,2024-01-01,5,X\n",
        ("line 1: unknown column(s) coupon",),
    ),
    "column named twice": (
        b"customer_id,ordered_at,total_amount,total_amount\n1,2024-01-01,5,5\n",
        ("line 1: column(s) named twice: total_amount",),
    ),
    "no header": (b"1,2024-01-01,5\n", ("line 1: no header row found",)),
    # A spreadsheet's export in some locales: said so, not "no header row found".
    "semicolons": (
        b"customer_id;ordered_at;total_amount\n1;2024-01-01;5\n",
        ("line 1: the columns are separated by semicolons, not commas",),
    ),
    "tabs": (
        b"Customer_ID\tordered_at\ttotal_amount\n1\t2024-01-01\t5\n",
        ("line 1: the columns are separated by tabs, not commas",),
    ),
    "vertical bars": (
        b"customer_id|ordered_at|total_amount\n1|2024-01-01|5\n",
        ("line 1: the columns are separated by vertical bars, not commas",),
    ),
    "data with semicolons and no header": (
        b"1;2024-01-01;5\n",
        ("line 1: no header row found",),
    ),
    "missing field": (
        H3 + b"1,2024-01-01,5\n2,2024-01-02\n",
        ("line 3: expected 3 fields, found 2",),
    ),
    "extra field": (H3 + b"1,2024-01-01,5,9\n", ("line 2: expected 3 fields, found 4",)),
    "a million unknown columns": (
        b"customer_id,ordered_at,total_amount," + b",".join(b"c%d" % i for i in range(10**6)),
        ("line 1: unknown column(s) c0, c1, c2, c3, c4 and 999,995 more",),
    ),
    # byte order marks and encodings
    "bom before a bad row": (
        b"\xef\xbb\xbf" + H4 + GOOD + b"2,2024-01-01,x,2\n",
        ("line 3, column total_amount: 'x' is not a decimal number",),
    ),
    "bom inside (two files joined)": (
        H4 + GOOD + b"\xef\xbb\xbf2,2024-01-01,5,2\n",
        ("line 3, column customer_id: '\\ufeff2' is not a whole number",),
    ),
    "latin-1": (
        H4 + GOOD + "2,2024-01-01,5,2,Müller\n".encode("latin-1"),
        ("line 3: not valid UTF-8",),
    ),
    "utf-16 with bom": (
        _utf16("customer_id,ordered_at,total_amount\n1,2024-01-01,5\n", "utf-16"),
        ("UTF-16",),
    ),
    "utf-16-be with bom": (
        b"\xfe\xff" + _utf16("customer_id,ordered_at,total_amount\n", "utf-16-be"),
        ("UTF-16",),
    ),
    "utf-16 without bom": (
        _utf16("customer_id,ordered_at,total_amount\n1,2024-01-01,5\n", "utf-16-le"),
        ("line 1: NUL bytes", "UTF-16"),
    ),
    "nul byte in a value": (H4 + b"1,2024-01-01,5\x00,1\n", ("line 2, column total_amount",)),
    # huge lines
    "10 MB field": (
        H4 + b"1,2024-01-01," + b"9" * (10 * MB) + b",1\n",
        ("line 2, column total_amount: a value longer than 131,072 characters",),
    ),
    "10 MB line of fields": (H3 + b"1," * (5 * MB) + b"\n", ("line 2: expected 3 fields",)),
    "10 MB header": (b"customer_id,ordered_at,total_amount," + b"x" * (10 * MB), ("line 1",)),
    "100 KB customer id": (
        H4 + b"9" * 100_000 + b",2024-01-01,5,1\n",
        ("line 2, column customer_id:", "(100,000 characters) is too large"),
    ),
    # amounts
    "negative amount": (
        H4 + GOOD + b"2,2024-01-01,-5.00,2\n",
        ("line 3, column total_amount: '-5.00' is negative",),
    ),
    "amount text": (H4 + b"1,2024-01-01,ten,1\n", ("line 2, column total_amount: 'ten'",)),
    "amount exponent": (H4 + b"1,2024-01-01,1e3,1\n", ("column total_amount: '1e3'",)),
    "amount NaN": (H4 + b"1,2024-01-01,NaN,1\n", ("column total_amount: 'NaN'",)),
    "amount Infinity": (H4 + b"1,2024-01-01,Infinity,1\n", ("column total_amount: 'Infinity'",)),
    "amount decimal comma": (H4 + b'1,2024-01-01,"1,50",1\n', ("column total_amount: '1,50'",)),
    "amount empty": (
        H4 + b"1,2024-01-01,,1\n",
        ("line 2, column total_amount: a value is required",),
    ),
    "amount three decimals": (H4 + b"1,2024-01-01,1.005,1\n", ("more than 2 decimal places",)),
    "amount too large": (H4 + b"1,2024-01-01,10000000000.00,1\n", ("total_amount", "too large")),
    # dates
    "30 february": (H4 + b"1,2026-02-30,5,1\n", ("line 2, column ordered_at: '2026-02-30'",)),
    "29 february, no leap year": (H4 + b"1,2023-02-29,5,1\n", ("line 2, column ordered_at",)),
    "month 13": (H4 + b"1,2025-13-01,5,1\n", ("column ordered_at", "month must be in 1..12")),
    "hour 25": (
        H4 + b"1,2025-01-01T25:00:00,5,1\n",
        ("column ordered_at", "hour must be in 0..23"),
    ),
    "year 0": (H4 + b"1,0000-01-01,5,1\n", ("column ordered_at: '0000-01-01'",)),
    "before year 1 in UTC": (H4 + b"1,0001-01-01T00:00:00+05:00,5,1\n", ("out of range in UTC",)),
    "day first": (H4 + b"1,31/12/2024,5,1\n", ("column ordered_at: '31/12/2024'",)),
    "date empty": (H4 + b"1,,5,1\n", ("line 2, column ordered_at: a value is required",)),
    # ids
    "duplicate order id": (
        H4 + GOOD + b"2,2024-01-02,6,2\n3,2024-01-03,7,1\n",
        ("line 4, column order_id: 1 is already used on line 2",),
    ),
    "customer id 0": (
        H4 + b"0,2024-01-01,5,1\n",
        ("line 2, column customer_id: '0' must be at least 1",),
    ),
    "customer id negative": (
        H4 + b"-7,2024-01-01,5,1\n",
        ("column customer_id: '-7' must be at least 1",),
    ),
    "customer id 2^31": (H4 + b"2147483648,2024-01-01,5,1\n", ("column customer_id", "too large")),
    "customer id 10^30": (
        H4 + b"1" + b"0" * 30 + b",2024-01-01,5,1\n",
        ("column customer_id", "too large"),
    ),
    "customer id decimal": (
        H4 + b"1.0,2024-01-01,5,1\n",
        ("column customer_id: '1.0' is not a whole number",),
    ),
    "customer id arabic digits": (H4 + "١,2024-01-01,5,1\n".encode(), ("column customer_id",)),
    "customer id empty": (
        H4 + b",2024-01-01,5,1\n",
        ("line 2, column customer_id: a value is required",),
    ),
    "order id 2^63": (
        H4 + b"1,2024-01-01,5,9223372036854775808\n",
        ("column order_id", "too large"),
    ),
    "order id 0": (H4 + b"1,2024-01-01,5,0\n", ("column order_id: '0' must be at least 1",)),
    # CSV syntax
    "unterminated quote": (H4 + b'1,2024-01-01,"5,1\n', ("line 2: malformed CSV",)),
    "text after a quote": (H4 + b'1,"2024-01-01"x,5,1\n', ("line 2: malformed CSV",)),
    # Named as such, not csv's "open the file in universal-newline mode?".
    "old mac line ends": (
        b"customer_id,ordered_at,total_amount\r1,2024-01-01,5\r",
        ("line 1: a line break (\\r) inside an unquoted value; lines must end in \\n or",),
    ),
    "a bare carriage return in a row": (
        H3 + b"1,2024-01-01,5\r2,2024-01-02,6\n",
        ("line 2: a line break (\\r) inside an unquoted value",),
    ),
}

TABLES = ("customers", "orders")


def snapshot(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    with app.app_context(), db.engine.connect() as conn:
        return {
            table: [
                tuple(row) for row in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))
            ]
            for table in TABLES
        }


def import_file(app: Flask, tmp_path: Path, content: bytes) -> Any:
    path = tmp_path / "orders.csv"
    path.write_bytes(content)
    return app.test_cli_runner().invoke(args=["import-orders", str(path)])


@pytest.fixture
def app_with_data(app: Flask) -> Flask:
    # Rows the file's ids collide with: a partial import would show.
    add_orders(
        app,
        [
            (1, dt.datetime(2023, 6, 1, 10, tzinfo=dt.UTC), "19.99"),
            (2, dt.datetime(2023, 6, 2, tzinfo=dt.UTC), "0.50"),
        ],
    )
    return app


@pytest.mark.parametrize("content,fragments", CORPUS.values(), ids=CORPUS.keys())
def test_a_broken_file_is_rejected_with_one_clear_error_and_nothing_written(
    app_with_data: Flask, tmp_path: Path, content: bytes, fragments: tuple[str, ...]
) -> None:
    before = snapshot(app_with_data)

    result = import_file(app_with_data, tmp_path, content)

    assert result.exit_code == 1, result.output[:2000]
    assert isinstance(result.exception, SystemExit)  # a handled error, not a crash
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    others = [line for line in result.stderr.splitlines() if not line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[:2000]
    assert all(line.startswith("validating") for line in others), others  # the progress label
    error = errors[0]
    assert len(error) < 400, error[:1000]  # short, however large the bad value
    assert error.endswith("; nothing was imported"), error
    for fragment in fragments:
        assert fragment in error, error
    assert result.stdout == ""
    assert snapshot(app_with_data) == before


def test_the_harness_sees_a_good_file_go_in(app_with_data: Flask, tmp_path: Path) -> None:
    # The same path as the corpus, with a file that is fine: BOM, CRLF, quotes.
    before = snapshot(app_with_data)
    content = (
        b'\xef\xbb\xbfcustomer_id,ordered_at,total_amount,order_id\r\n"3",2024-01-01,"7.25",10\r\n'
    )

    result = import_file(app_with_data, tmp_path, content)

    assert result.exit_code == 0, result.output
    after = snapshot(app_with_data)
    assert len(after["orders"]) == len(before["orders"]) + 1
    assert len(after["customers"]) == len(before["customers"]) + 1
