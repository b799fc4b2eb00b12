"""``flask import-orders`` (SPEC §5) on SQLite and PostgreSQL.

Expectations are written out by hand or computed from the rows the test
itself wrote, never read back from the importer.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import random
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask

from rfm_service import ingest, order_csv
from rfm_service.extensions import db
from rfm_service.models import Customer, Order
from tests.conftest import add_orders

UTC = dt.UTC
HEADER = "customer_id,ordered_at,total_amount,order_id\n"


def write(tmp_path: Path, content: str | bytes, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def run_import(app: Flask, path: Path) -> Result:
    return app.test_cli_runner().invoke(args=["import-orders", str(path)])


def orders_in_db(app: Flask) -> list[tuple[int, int, dt.datetime, Decimal]]:
    with app.app_context():
        rows = db.session.execute(sa.select(Order).order_by(Order.id)).scalars()
        return [(o.id, o.customer_id, o.ordered_at, o.total_amount) for o in rows]


def customers_in_db(app: Flask) -> dict[int, str]:
    with app.app_context():
        rows = db.session.execute(sa.select(Customer.id, Customer.name)).all()
        return dict(rows)


def summary_numbers(output: str) -> dict[str, int]:
    numbers = {}
    for line in output.splitlines():
        label, sep, rest = line.partition(":")
        if sep and label in ("rows read", "orders inserted", "orders skipped", "customers created"):
            numbers[label] = int(rest.split()[0].replace(",", ""))
    return numbers


def assert_rejected(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, message


def test_good_file_imports_exactly_its_rows(app: Flask, tmp_path: Path) -> None:
    expected = [
        (10, 3, dt.datetime(2024, 1, 5, 9, 30, tzinfo=UTC), Decimal("19.99")),
        (11, 4, dt.datetime(2024, 2, 1, 0, 0, tzinfo=UTC), Decimal("0.00")),
        (12, 3, dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC), Decimal("1250.50")),
        (13, 7, dt.datetime(2025, 12, 31, 12, 0, tzinfo=UTC), Decimal("5.00")),
    ]
    path = write(
        tmp_path,
        HEADER + "3,2024-01-05T09:30:00,19.99,10\n"
        "4,2024-02-01,0,11\n"
        "3,2024-02-29 23:59:59,1250.5,12\n"
        "7,2025-12-31T12:00:00Z,5,13\n",
    )

    result = run_import(app, path)

    assert result.exit_code == 0, result.output
    assert orders_in_db(app) == expected
    assert customers_in_db(app) == {3: "Customer 3", 4: "Customer 4", 7: "Customer 7"}
    assert summary_numbers(result.output) == {
        "rows read": 4,
        "orders inserted": 4,
        "orders skipped": 0,
        "customers created": 3,
    }


def test_naive_and_aware_timestamps_are_stored_as_the_right_utc_instant(
    app: Flask, tmp_path: Path
) -> None:
    cases = {
        "2024-03-10T12:00:00": dt.datetime(2024, 3, 10, 12, 0, tzinfo=UTC),
        "2024-03-10T12:00:00+02:00": dt.datetime(2024, 3, 10, 10, 0, tzinfo=UTC),
        "2024-03-10T12:00:00Z": dt.datetime(2024, 3, 10, 12, 0, tzinfo=UTC),
        "2024-03-10": dt.datetime(2024, 3, 10, 0, 0, tzinfo=UTC),
        # Crosses into the next UTC day: matters for recency.
        "2024-03-10T23:30:00-05:00": dt.datetime(2024, 3, 11, 4, 30, tzinfo=UTC),
        "2024-03-10 08:15:30.250000+05:30": dt.datetime(2024, 3, 10, 2, 45, 30, 250000, UTC),
    }
    lines = [f"1,{raw},1.00,{i}" for i, raw in enumerate(cases, start=1)]
    result = run_import(app, write(tmp_path, HEADER + "\n".join(lines) + "\n"))

    assert result.exit_code == 0, result.output
    stored = {order_id: at for order_id, _, at, _ in orders_in_db(app)}
    assert stored == dict(enumerate(cases.values(), start=1))


def test_imported_rows_are_stored_exactly_as_the_orm_stores_them(
    app: Flask, tmp_path: Path
) -> None:
    # On SQLite timestamps compare as text and amounts are floats: the bulk
    # path must write the same bytes as the ORM, or the engine misorders.
    at = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    result = run_import(
        app, write(tmp_path, HEADER + "1,2024-05-06T09:08:09.123456+02:00,0.10,1\n")
    )
    assert result.exit_code == 0, result.output
    with app.app_context():
        db.session.add(Order(id=2, customer_id=1, ordered_at=at, total_amount=Decimal("0.10")))
        db.session.commit()
        raw = db.session.execute(
            sa.text("SELECT ordered_at, total_amount FROM orders ORDER BY id")
        ).all()
    assert raw[0] == raw[1]


def test_a_bad_row_in_the_middle_writes_nothing(app: Flask, tmp_path: Path) -> None:
    add_orders(app, [(1, dt.datetime(2023, 1, 1, tzinfo=UTC), "9.99")])
    before_orders, before_customers = orders_in_db(app), customers_in_db(app)
    rows = [f"{100 + n},2024-01-{n:02d},{n}.50," for n in range(1, 11)]
    rows[5] = "105,2024-01-06,-3,"  # file line 7: header is line 1
    result = run_import(app, write(tmp_path, HEADER + "\n".join(rows) + "\n"))

    assert_rejected(result, "line 7, column total_amount: '-3' is negative", "nothing")
    assert orders_in_db(app) == before_orders
    assert customers_in_db(app) == before_customers


BROKEN_FILES = {
    "empty file": (b"", "the file is empty"),
    "only blank lines": (b"\n\n", "the file is empty"),
    "no header": ("1,2024-01-01,5\n2,2024-01-02,6\n", "line 1: no header row found"),
    "missing column": (
        "customer_id,ordered_at\n1,2024-01-01\n",
        "line 1: missing column(s) total_amount",
    ),
    "unknown column": (
        "customer_id,ordered_at,total_amount,coupon\n1,2024-01-01,5,X\n",
        "line 1: unknown column(s) coupon",
    ),
    "column twice": (
        "customer_id,ordered_at,total_amount,customer_id\n1,2024-01-01,5,1\n",
        "named twice: customer_id",
    ),
    "unknown column after blank lines": (
        "\n\ncustomer_id,ordered_at,total_amount,coupon\n1,2024-01-01,5,X\n",
        "line 3: unknown column(s) coupon",
    ),
    "trailing comma in the header": (
        "customer_id,ordered_at,total_amount,\n1,2024-01-01,5,\n",
        "line 1: unknown column(s) '' (expected",
    ),
    "latin-1": (
        b"customer_id,ordered_at,total_amount\n1,2024-01-01,5\n1,2024-01-01,5\xe9\n",
        "line 3, column total_amount: not valid UTF-8 (byte 0xe9)",
    ),
    "latin-1 in the header": (
        b"customer_id,ordered_at,total_amount\xe9\n1,2024-01-01,5\n",
        "line 1: not valid UTF-8 (byte 0xe9)",
    ),
    "a value longer than the csv module reads": (
        "customer_id,ordered_at,total_amount\n1,2024-01-01,5\n1," + "2" * 200_000 + ",5\n",
        "line 3, column ordered_at: a value longer than 131,072 characters",
    ),
    "utf-16": ("customer_id,ordered_at,total_amount\n".encode("utf-16"), "UTF-16"),
    # Not "NUL bytes, the file looks UTF-16 encoded".
    "gzip": (
        gzip.compress(b"customer_id,ordered_at,total_amount\n1,2024-01-01,5\n"),
        "the file is gzip-compressed; decompress it first",
    ),
    "too many fields": (
        "customer_id,ordered_at,total_amount\n1,2024-01-01,5\n1,2024-01-01,5,9\n",
        "line 3: expected 3 fields, found 4",
    ),
    "too few fields": (
        "customer_id,ordered_at,total_amount\n1,2024-01-01\n",
        "line 2: expected 3 fields, found 2",
    ),
    "impossible date": (
        "customer_id,ordered_at,total_amount\n1,2024-01-01,5\n1,2026-02-30,5\n",
        "line 3, column ordered_at: '2026-02-30' is not an ISO 8601 date",
    ),
    "not a date": (
        "customer_id,ordered_at,total_amount\n1,yesterday,5\n",
        "line 2, column ordered_at: 'yesterday'",
    ),
    "missing date": ("customer_id,ordered_at,total_amount\n1,,5\n", "column ordered_at: a value"),
    "customer id text": (
        "customer_id,ordered_at,total_amount\nabc,2024-01-01,5\n",
        "line 2, column customer_id: 'abc' is not a whole number",
    ),
    "customer id zero": (
        "customer_id,ordered_at,total_amount\n0,2024-01-01,5\n",
        "column customer_id: '0' must be at least 1",
    ),
    "customer id too large": (
        "customer_id,ordered_at,total_amount\n2147483648,2024-01-01,5\n",
        "column customer_id: '2147483648' is too large",
    ),
    "three decimals": (
        "customer_id,ordered_at,total_amount\n1,2024-01-01,1.234\n",
        "column total_amount: '1.234' has more than 2 decimal places",
    ),
    "amount too large": (
        "customer_id,ordered_at,total_amount\n1,2024-01-01,10000000000\n",
        "column total_amount: '10000000000' is too large",
    ),
    "amount NaN": (
        "customer_id,ordered_at,total_amount\n1,2024-01-01,NaN\n",
        "column total_amount: 'NaN' is not a decimal number",
    ),
    "amount with comma": (
        'customer_id,ordered_at,total_amount\n1,2024-01-01,"1,50"\n',
        "column total_amount: '1,50' is not a decimal number",
    ),
    "order id zero": (HEADER + "1,2024-01-01,5,0\n", "line 2, column order_id: '0' must be"),
    "bad quoting": (
        'customer_id,ordered_at,total_amount\n1,"2024-01-01"x,5\n',
        "line 2: malformed CSV",
    ),
}


@pytest.mark.parametrize("content,message", BROKEN_FILES.values(), ids=BROKEN_FILES.keys())
def test_broken_file_is_rejected_with_a_clear_one_line_error(
    app: Flask, tmp_path: Path, content: str | bytes, message: str
) -> None:
    result = run_import(app, write(tmp_path, content))

    assert_rejected(result, message)
    assert orders_in_db(app) == []
    assert customers_in_db(app) == {}


def test_utf8_bom_crlf_and_quoted_fields_are_accepted(app: Flask, tmp_path: Path) -> None:
    content = b'\xef\xbb\xbfcustomer_id,ordered_at,total_amount\r\n"5", 2024-01-01 ,"7.25"\r\n'

    result = run_import(app, write(tmp_path, content))

    assert result.exit_code == 0, result.output
    assert orders_in_db(app) == [(1, 5, dt.datetime(2024, 1, 1, tzinfo=UTC), Decimal("7.25"))]


def test_duplicate_order_id_in_the_file_names_both_lines(app: Flask, tmp_path: Path) -> None:
    rows = ["1,2024-01-01,1,7", "1,2024-01-02,2,8", "2,2024-01-03,3,9", "2,2024-01-04,4,7"]
    result = run_import(app, write(tmp_path, HEADER + "\n".join(rows) + "\n"))

    assert_rejected(result, "line 5, column order_id: 7 is already used on line 2")
    assert orders_in_db(app) == []
    assert customers_in_db(app) == {}


def test_reimporting_the_same_file_adds_nothing(app: Flask, tmp_path: Path) -> None:
    rows = [f"{n % 4 + 1},2024-02-{n:02d}T10:00:00,{n}.0{n % 10},{1000 + n}" for n in range(1, 21)]
    path = write(tmp_path, HEADER + "\n".join(rows) + "\n")
    assert run_import(app, path).exit_code == 0
    orders, customers = orders_in_db(app), customers_in_db(app)

    again = run_import(app, path)

    assert again.exit_code == 0, again.output
    assert orders_in_db(app) == orders
    assert customers_in_db(app) == customers
    assert summary_numbers(again.output) == {
        "rows read": 20,
        "orders inserted": 0,
        "orders skipped": 20,
        "customers created": 0,
    }


def test_skipped_rows_do_not_create_customers(app: Flask, tmp_path: Path) -> None:
    add_orders(app, [(1, dt.datetime(2023, 1, 1, tzinfo=UTC), "9.99")])
    existing_id = orders_in_db(app)[0][0]
    path = write(tmp_path, HEADER + f"99,2024-01-01,5,{existing_id}\n")

    result = run_import(app, path)

    assert result.exit_code == 0, result.output
    assert customers_in_db(app) == {1: "Customer 1"}
    assert summary_numbers(result.output)["orders skipped"] == 1


def test_rows_without_order_id_get_new_ids_in_file_order(app: Flask, tmp_path: Path) -> None:
    add_orders(
        app,
        [
            (1, dt.datetime(2023, 1, 1, tzinfo=UTC), "1"),
            (1, dt.datetime(2023, 1, 2, tzinfo=UTC), "2"),
        ],
    )
    rows = ["2,2024-01-01,10,", "2,2024-01-02,20,50", "3,2024-01-03,30,", "2,2024-01-04,40,"]
    result = run_import(app, write(tmp_path, HEADER + "\n".join(rows) + "\n"))

    assert result.exit_code == 0, result.output
    imported = [(i, c, amount) for i, c, _, amount in orders_in_db(app) if c != 1]
    # Explicit ids go in first, so generated ids start above all of them.
    assert imported == [
        (50, 2, Decimal("20")),
        (51, 2, Decimal("10")),
        (52, 3, Decimal("30")),
        (53, 2, Decimal("40")),
    ]


def test_rows_without_order_id_are_refused_once_no_ids_are_left(app: Flask, tmp_path: Path) -> None:
    # SQLite picked random unused ids past its largest rowid; PostgreSQL's
    # sequence failed with a database error. Both refuse alike now.
    largest = 2**63 - 1
    first = write(tmp_path, HEADER + f"1,2024-01-01,1.00,{largest - 2}\n", "first.csv")
    assert run_import(app, first).exit_code == 0
    rows = ["1,2024-01-02,2.00,", "2,2024-01-03,3.00,", "3,2024-01-04,4.00,"]
    result = run_import(app, write(tmp_path, HEADER + "\n".join(rows) + "\n"))

    assert_rejected(
        result,
        "no order ids are left for the 3 rows without order_id: "
        f"the largest order id is {largest - 2}",
    )
    assert [o[0] for o in orders_in_db(app)] == [largest - 2]
    assert customers_in_db(app) == {1: "Customer 1"}

    two = write(tmp_path, HEADER + "\n".join(rows[:2]) + "\n", "two.csv")
    assert run_import(app, two).exit_code == 0
    assert [o[0] for o in orders_in_db(app)] == [largest - 2, largest - 1, largest]


def test_later_inserts_without_ids_do_not_collide_with_imported_ids(
    app: Flask, tmp_path: Path
) -> None:
    path = write(tmp_path, HEADER + "500,2024-01-01,5,1000\n400,2024-01-02,6,999\n")
    assert run_import(app, path).exit_code == 0

    with app.app_context():
        customer = Customer(name="Walk-in")
        db.session.add(customer)
        db.session.flush()
        order = Order(
            customer_id=customer.id, ordered_at=dt.datetime(2024, 2, 1), total_amount=Decimal(1)
        )
        db.session.add(order)
        db.session.commit()
        assert (customer.id, order.id) == (501, 1001)


def test_existing_customers_are_kept_and_new_ones_start_at_their_first_order(
    app: Flask, tmp_path: Path
) -> None:
    with app.app_context():
        db.session.add(Customer(id=1, name="Ada Lovelace", email="ada@example.com"))
        db.session.commit()
    rows = ["1,2024-01-01,1,", "2,2024-03-05T10:00:00,2,", "2,2024-03-01T08:00:00+01:00,3,"]
    result = run_import(app, write(tmp_path, HEADER + "\n".join(rows) + "\n"))

    assert result.exit_code == 0, result.output
    with app.app_context():
        ada, new = db.session.execute(sa.select(Customer).order_by(Customer.id)).scalars()
        assert (ada.name, ada.email) == ("Ada Lovelace", "ada@example.com")
        assert (new.id, new.name, new.email) == (2, "Customer 2", None)
        assert new.created_at == dt.datetime(2024, 3, 1, 7, 0, tzinfo=UTC)
    assert summary_numbers(result.output)["customers created"] == 1


def test_a_long_file_streams_through_several_chunks(app: Flask, tmp_path: Path) -> None:
    rng = random.Random(1)
    count = 2 * ingest.CHUNK + 123
    amounts = [Decimal(rng.randrange(0, 100_000)) / 100 for _ in range(count)]
    customers = [rng.randrange(1, 500) for _ in range(count)]
    lines = [
        f"{c},2024-01-01T00:00:{n % 60:02d},{a},{n + 1}"
        for n, (c, a) in enumerate(zip(customers, amounts, strict=True))
    ]
    path = write(tmp_path, HEADER + "\n".join(lines) + "\n")
    reported: list[int] = []

    with app.app_context(), path.open("rb") as raw:
        summary = ingest.import_orders(db.engine, raw, progress=reported.append)

    assert sum(reported) == path.stat().st_size
    assert summary.orders_inserted == count
    stored = orders_in_db(app)
    assert [o[0] for o in stored] == list(range(1, count + 1))
    assert sum(o[3] for o in stored) == sum(amounts)
    assert sorted(customers_in_db(app)) == sorted(set(customers))


@pytest.mark.parametrize(
    "line,message",
    [
        (b"1,2024-01-01," + b"9" * (20 << 20), "line 2, column total_amount: a value longer than"),
        (b"1," * (10 << 20), "line 2: a line longer than 1,048,576 bytes"),
    ],
    ids=["one long value", "endless fields"],
)
def test_an_endless_line_is_refused_from_its_first_bytes(
    monkeypatch: pytest.MonkeyPatch, line: bytes, message: str
) -> None:
    # A 2 GB file without line ends was read whole, several times over
    # (7 GB of memory for 1 GB); memory must stay flat whatever the file.
    monkeypatch.setattr(order_csv, "MAX_LINE_BYTES", 1 << 20, raising=False)
    raw = io.BytesIO(b"customer_id,ordered_at,total_amount\n" + line + b"\n")
    with pytest.raises(order_csv.ImportFailed) as failed:
        order_csv.stage_file(raw, io.StringIO(), "sqlite", None)
    assert str(failed.value).startswith(message)
    assert raw.tell() <= (1 << 20) + 100  # the line's first bytes only
