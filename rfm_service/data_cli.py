"""Click commands for data (SPEC §5): ``import-orders`` and ``seed-demo``.

Thin edges: argument parsing, progress bars and summaries here; the work is
in ``ingest`` and ``demo_data``.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from . import demo_data, ingest
from .cli import date_option
from .cli_errors import one_line_errors
from .extensions import db
from .models import MAX_ID
from .timeutil import today_utc

PROGRESS_FROM_BYTES = 1 << 20  # smaller files finish before a bar would help
# Orders span two years and signups three before --end-date; the calculation
# takes as_of up to 9999-12-30 (runs.check_as_of).
END_DATES = (dt.date(1900, 1, 1), dt.date(9999, 12, 30))


def end_date_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dt.date | None:
    """``date_option`` within the days seed-demo can generate for (exit 2 outside)."""
    day = date_option(ctx, param, value)
    if day is not None and not END_DATES[0] <= day <= END_DATES[1]:
        low, high = (d.isoformat() for d in END_DATES)
        raise click.BadParameter(f"{day.isoformat()} is outside {low} .. {high}")
    return day


def _stderr_bar(length: int, label: str, hidden: bool = False):
    # stderr, so the summary on stdout stays clean for scripts.
    return click.progressbar(length=length, label=label, hidden=hidden, file=sys.stderr)


@click.command("import-orders")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
@one_line_errors
def import_orders(csv_file: Path) -> None:
    """Import orders from CSV_FILE (UTF-8, header row), all or nothing.

    \b
    Columns:
      customer_id   integer >= 1; a missing customer is created as
                    "Customer <id>", created at its first imported order
      ordered_at    ISO 8601 date or date-time; naive means UTC
      total_amount  decimal >= 0, at most 2 decimal places
      order_id      optional integer >= 1; a row whose order_id exists
                    already is skipped, so a re-import adds nothing
                    (rows without one get new ids and are always added)

    One bad row rejects the whole file: nothing is written and the error
    names the line and the column.
    """
    size = csv_file.stat().st_size
    started = time.perf_counter()
    try:
        with (
            csv_file.open("rb") as raw,
            _stderr_bar(size, "validating", hidden=size < PROGRESS_FROM_BYTES) as bar,
        ):
            summary = ingest.import_orders(
                db.engine,
                raw,
                progress=bar.update,
                work_mem=current_app.config.get("RFM_WORK_MEM"),
            )
    except ingest.ImportFailed as exc:
        raise click.ClickException(f"{csv_file.name}: {exc}; nothing was imported") from None
    click.echo(f"rows read:          {summary.rows_read:>12,}")
    click.echo(f"orders inserted:    {summary.orders_inserted:>12,}")
    click.echo(f"orders skipped:     {summary.orders_skipped:>12,}  (order_id already present)")
    click.echo(f"customers created:  {summary.customers_created:>12,}")
    click.echo(f"took {time.perf_counter() - started:.1f} s")


@click.command("seed-demo")
@click.option(
    "--customers",
    type=click.IntRange(min=1, max=MAX_ID),
    required=True,
    help="Number of customers to create.",
)
@click.option(
    "--seed",
    type=int,
    help="Random seed: the same arguments (with --end-date) give identical data.",
)
@click.option(
    "--orders-per-customer",
    type=click.FloatRange(min=1, max=1000),
    default=10,
    show_default=True,
    help="Average; the total is about customers times this.",
)
@click.option(
    "--end-date",
    callback=end_date_option,
    metavar="YYYY-MM-DD",
    help="Last order day. Default: today (UTC). From 1900-01-01 to 9999-12-30.",
)
@click.option("--append", is_flag=True, help="Add to a database that already has customers.")
@click.option(
    "--if-empty",
    is_flag=True,
    help="Seed only an empty database; with customers present, do nothing (exit 0).",
)
@with_appcontext
@one_line_errors
def seed_demo(
    customers: int,
    seed: int | None,
    orders_per_customer: float,
    end_date: dt.date | None,
    append: bool,
    if_empty: bool,
) -> None:
    """Fill the database with realistic synthetic customers and orders.

    Customers sign up over three years, their orders span the two years up
    to --end-date, written in time order: loyal heavy buyers, regulars,
    occasional and churned customers, a few who never order. Everything is
    written in one transaction.

    An empty database is expected: with customers present the command
    refuses, unless --append is given (new customers then get ids after
    the existing ones). Without --seed a random seed is picked and printed.
    """
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    spec = demo_data.DemoSpec(customers, seed, orders_per_customer, end_date or today_utc())
    started = time.perf_counter()
    try:
        with _stderr_bar(customers, "generating") as bar:
            summary = demo_data.seed(
                db.engine,
                spec,
                append=append,
                work_mem=current_app.config.get("RFM_WORK_MEM"),
                progress=bar.update,
            )
    except demo_data.DatabaseNotEmpty as exc:
        if if_empty:
            click.echo("the database has customers already; not seeding (--if-empty)")
            return
        raise click.ClickException(str(exc)) from None
    except demo_data.IdsExhausted as exc:
        raise click.ClickException(str(exc)) from None
    last_id = summary.first_id + summary.customers - 1
    click.echo(
        f"seeded {summary.customers:,} customers (ids {summary.first_id}-{last_id}) and "
        f"{summary.orders:,} orders up to {spec.end_date.isoformat()} "
        f"in {time.perf_counter() - started:.1f} s (--seed {seed})"
    )


def data_commands() -> list[click.Command]:
    return [import_orders, seed_demo]
