"""``flask seed-demo`` (SPEC §5) on SQLite and PostgreSQL: reproducible,
written in time order, about the requested size, heterogeneous."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask

from rfm_service.extensions import db
from rfm_service.models import Customer, Order
from tests.conftest import add_orders, empty_tables

UTC = dt.UTC
END = dt.date(2026, 1, 31)
END_ARGS = ["--end-date", END.isoformat()]


def seed(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["seed-demo", *args])


def raw_snapshot(app: Flask) -> tuple[list[Any], list[Any]]:
    """Stored values as the database returns them, for byte-level comparison."""
    with app.app_context():
        customers = db.session.execute(
            sa.text("SELECT id, name, email, created_at FROM customers ORDER BY id")
        ).all()
        orders = db.session.execute(
            sa.text("SELECT id, customer_id, ordered_at, total_amount FROM orders ORDER BY id")
        ).all()
    return [tuple(r) for r in customers], [tuple(r) for r in orders]


def all_orders(app: Flask) -> list[Order]:
    with app.app_context():
        orders = db.session.execute(sa.select(Order).order_by(Order.id)).scalars().all()
        db.session.expunge_all()
        return list(orders)


def all_customers(app: Flask) -> list[Customer]:
    with app.app_context():
        customers = db.session.execute(sa.select(Customer).order_by(Customer.id)).scalars().all()
        db.session.expunge_all()
        return list(customers)


def test_the_same_seed_gives_identical_data_and_another_seed_does_not(app: Flask) -> None:
    args = ["--customers", "200", "--seed", "7", *END_ARGS]
    assert seed(app, *args).exit_code == 0
    first = raw_snapshot(app)
    empty_tables(app)

    assert seed(app, *args).exit_code == 0
    second = raw_snapshot(app)
    empty_tables(app)
    assert seed(app, "--customers", "200", "--seed", "8", *END_ARGS).exit_code == 0
    other = raw_snapshot(app)

    assert first == second
    assert len(first[0]) == 200 and len(first[1]) > 0
    assert first[0] != other[0] and first[1] != other[1]


def test_without_seed_the_printed_seed_reproduces_the_data(app: Flask) -> None:
    result = seed(app, "--customers", "50", *END_ARGS)
    assert result.exit_code == 0, result.output
    printed = re.search(r"--seed (\d+)", result.output)
    assert printed, result.output
    first = raw_snapshot(app)
    empty_tables(app)

    assert seed(app, "--customers", "50", "--seed", printed.group(1), *END_ARGS).exit_code == 0
    assert raw_snapshot(app) == first


def test_orders_are_written_in_time_order(app: Flask) -> None:
    assert seed(app, "--customers", "300", "--seed", "3", *END_ARGS).exit_code == 0
    orders = all_orders(app)

    assert [o.id for o in orders] == list(range(1, len(orders) + 1))
    times = [o.ordered_at for o in orders]
    assert times == sorted(times)
    # Time order, not customer order: one customer's orders are scattered.
    assert [o.customer_id for o in orders] != sorted(o.customer_id for o in orders)


@pytest.mark.parametrize("per_customer", [10, 3])
def test_total_orders_are_about_customers_times_orders_per_customer(
    app: Flask, per_customer: int
) -> None:
    customers = 1000
    result = seed(
        app,
        *("--customers", str(customers), "--seed", "11", *END_ARGS),
        *("--orders-per-customer", str(per_customer)),
    )
    assert result.exit_code == 0, result.output

    orders = all_orders(app)
    assert len(all_customers(app)) == customers
    assert 0.85 * customers * per_customer <= len(orders) <= 1.15 * customers * per_customer
    assert f"{len(orders):,} orders" in result.output


def test_demo_data_is_realistic_and_heterogeneous(app: Flask) -> None:
    assert seed(app, "--customers", "1000", "--seed", "5", *END_ARGS).exit_code == 0
    customers, orders = all_customers(app), all_orders(app)
    end = dt.datetime(2026, 2, 1, tzinfo=UTC)  # the end of END, exclusive
    per_customer: dict[int, list[Order]] = {}
    for order in orders:
        per_customer.setdefault(order.customer_id, []).append(order)

    # About two years of orders, none after end-date; amounts are money.
    assert min(o.ordered_at for o in orders) >= end - dt.timedelta(days=730)
    assert max(o.ordered_at for o in orders) < end
    assert max(o.ordered_at for o in orders) > end - dt.timedelta(days=2)
    assert all(o.total_amount >= Decimal("1.00") for o in orders)
    assert all(o.total_amount == o.total_amount.quantize(Decimal("0.01")) for o in orders)
    assert len({o.total_amount for o in orders}) > len(orders) // 4

    # Customers signed up before their first order; names and some emails.
    by_id = {c.id: c for c in customers}
    assert all(
        by_id[c].created_at <= min(o.ordered_at for o in os) for c, os in per_customer.items()
    )
    assert len({c.name for c in customers}) > 200
    emails = [c.email for c in customers if c.email is not None]
    assert 0.5 * len(customers) < len(emails) < 0.9 * len(customers)
    assert len(set(emails)) == len(emails)

    # Heterogeneous: never-buyers, churned, new and heavy buyers all exist.
    buyers = len(per_customer)
    assert 0.02 * len(customers) < len(customers) - buyers < 0.10 * len(customers)
    churned = sum(
        max(o.ordered_at for o in os) < end - dt.timedelta(days=180) for os in per_customer.values()
    )
    assert churned > 0.10 * buyers
    new = sum(c.created_at > end - dt.timedelta(days=90) for c in customers)
    assert new > 0.05 * len(customers)
    counts = sorted((len(os) for os in per_customer.values()), reverse=True)
    assert sum(counts[: buyers // 10]) > 0.3 * len(orders)
    assert Counter(counts)[1] > 0.05 * buyers  # one-off buyers too


def test_seeded_values_are_stored_exactly_as_the_orm_stores_them(app: Flask) -> None:
    assert seed(app, "--customers", "20", "--seed", "2", *END_ARGS).exit_code == 0
    first = all_orders(app)[0]
    with app.app_context():
        db.session.add(
            Order(
                id=10**6,
                customer_id=first.customer_id,
                ordered_at=first.ordered_at,
                total_amount=first.total_amount,
            )
        )
        db.session.commit()
        raw = db.session.execute(
            sa.text("SELECT ordered_at, total_amount FROM orders WHERE id IN (:a, :b)"),
            {"a": first.id, "b": 10**6},
        ).all()
    assert raw[0] == raw[1]


def test_seeding_refuses_a_database_with_customers(app: Flask) -> None:
    add_orders(app, [(1, dt.datetime(2024, 1, 1, tzinfo=UTC), "5.00")])
    before = raw_snapshot(app)

    result = seed(app, "--customers", "10", "--seed", "1", *END_ARGS)

    assert result.exit_code != 0
    assert "already has customers (1)" in result.stderr
    assert "--append" in result.stderr
    assert raw_snapshot(app) == before


def test_if_empty_seeds_an_empty_database_and_leaves_a_full_one_alone(app: Flask) -> None:
    first = seed(app, "--customers", "10", "--seed", "1", "--if-empty", *END_ARGS)
    assert first.exit_code == 0, first.output
    seeded = raw_snapshot(app)
    assert len(seeded[0]) == 10

    again = seed(app, "--customers", "10", "--seed", "2", "--if-empty", *END_ARGS)

    assert again.exit_code == 0, again.output
    assert "not seeding (--if-empty)" in again.output
    assert raw_snapshot(app) == seeded


def test_append_adds_customers_after_the_existing_ids(app: Flask) -> None:
    add_orders(app, [(5, dt.datetime(2024, 1, 1, tzinfo=UTC), "5.00")])

    result = seed(app, "--customers", "20", "--seed", "1", "--append", *END_ARGS)

    assert result.exit_code == 0, result.output
    assert [c.id for c in all_customers(app)] == [5, *range(6, 26)]
    with app.app_context():  # the id sequence moved past the explicit ids
        customer = Customer(name="Walk-in")
        db.session.add(customer)
        db.session.commit()
        assert customer.id == 26


def test_append_refuses_ids_past_the_largest(app: Flask) -> None:
    add_orders(app, [(2**31 - 2, dt.datetime(2024, 1, 1, tzinfo=UTC), "5.00")])
    before = raw_snapshot(app)

    assert seed(app, "--customers", "1", "--seed", "1", "--append", *END_ARGS).exit_code == 0
    result = seed(app, "--customers", "1", "--seed", "1", "--append", *END_ARGS)

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: 1 customers after id 2,147,483,647 would pass the largest customer id, "
        "2,147,483,647"
    )
    assert [c.id for c in all_customers(app)] == [2**31 - 2, 2**31 - 1]
    assert raw_snapshot(app)[0][0] == before[0][0]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--customers", "0"], "--customers"),
        (["--customers", "2147483648"], "--customers"),
        (["--customers", "5", "--end-date", "2026-W05-1"], "not a valid date"),
        (["--customers", "5", "--end-date", "2026-02-30"], "not a valid date"),
        # Past the last date a day after it exists; before year 4 a signup lands in year 0.
        (["--customers", "5", "--end-date", "9999-12-31"], "outside 1900-01-01 .. 9999-12-30"),
        (["--customers", "5", "--end-date", "0001-01-01"], "outside 1900-01-01 .. 9999-12-30"),
        (["--customers", "5", "--orders-per-customer", "0.5"], "--orders-per-customer"),
        ([], "--customers"),
    ],
)
def test_bad_arguments_are_rejected(app: Flask, args: list[str], message: str) -> None:
    result = seed(app, *args)

    assert result.exit_code == 2
    assert message in result.stderr
    assert raw_snapshot(app) == ([], [])
