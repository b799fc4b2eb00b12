"""Click commands: thin edges over ``runs`` and ``segments``."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter

import click
from flask import current_app
from flask.cli import with_appcontext

from . import calculation, insights, runs
from .cli_errors import one_line_errors
from .extensions import db
from .insights_cli import export_rfm
from .segments import OTHERS, cell_map, segment_names
from .timeutil import parse_date


def date_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dt.date | None:
    """Click callback for strict ``YYYY-MM-DD`` options (exit 2 with the reason)."""
    if value is None:
        return None
    try:
        return parse_date(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def as_of_option(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    """``date_option`` within the range a calculation takes (exit 2 outside)."""
    day = date_option(ctx, param, value)
    if day is not None:
        try:
            runs.check_as_of(day)
        except runs.InvalidAsOf as exc:
            raise click.BadParameter(str(exc)) from None
    return day


def _table(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    width = max(len(name) for name in counts)
    return "\n".join(
        f"  {name:<{width}}  {n:>10,}  {100 * n / total:5.1f}%" for name, n in counts.items()
    )


@click.command("calculate-rfm")
@click.option(
    "--as-of",
    callback=as_of_option,
    metavar="YYYY-MM-DD",
    help="Default: today (UTC). From 1900-01-01 to 9999-12-30.",
)
@click.option("--verbose", is_flag=True, help="Per-segment table and timings.")
@click.option("--dry-run", is_flag=True, help="Compute and print; write nothing, not even a run.")
@with_appcontext
@one_line_errors
def calculate_rfm(as_of: dt.date | None, verbose: bool, dry_run: bool) -> None:
    """Calculate RFM scores now, in this process (no broker needed)."""
    settings = runs.RunSettings.from_app(current_app)
    started = time.perf_counter()
    try:
        if dry_run:
            counts = runs.preview(db.engine, settings, as_of)
            elapsed = time.perf_counter() - started
            total = sum(counts.values())
            click.echo(f"dry run: {total:,} customers would be scored; nothing written")
            click.echo(_table(counts))
            changes = insights.preview_changes(db.engine, settings, as_of)
            click.echo(insights.describe_changes(changes))
            if verbose:
                click.echo(f"computed in {elapsed:.2f} s")
            return
        run, created = runs.request_run(db.engine, settings, "cli", as_of)
        if not created:
            raise runs.CalculationBusy(run["id"])
        # The worker's code path, run locally; this app's own task instance
        # (the shared-task proxy follows whichever Celery app was made last).
        task = current_app.extensions["celery"].tasks["rfm.calculate"]
        task.apply(args=[run["id"]], throw=True)
        run = runs.get_run_by_id(db.engine, run["id"])
    except (runs.CalculationBusy, runs.InvalidAsOf, calculation.MonetaryOverflow) as exc:
        raise click.ClickException(str(exc)) from None
    elapsed = time.perf_counter() - started
    if run["status"] != "succeeded":
        raise click.ClickException(f"run {run['id']} failed: {run['error']}")
    click.echo(
        f"run {run['id']} succeeded: {run['customers_scored']:,} customers scored "
        f"as of {run['as_of'].isoformat()}"
    )
    if verbose:
        segments = run["statistics"]["segments"]  # rule order (JSONB reorders keys)
        click.echo(_table({s["segment"]: s["customers"] for s in segments}))
        took = (run["finished_at"] - run["started_at"]).total_seconds()
        click.echo(f"calculation {took:.2f} s, total {elapsed:.2f} s")


@click.command("rfm-rules")
@with_appcontext
def rfm_rules() -> None:
    """Print the segment rules and which of the 125 score cells each receives."""
    rules = current_app.extensions["rfm_rules"]
    cells = cell_map(rules)
    per_segment = Counter(cells.values())
    click.echo(f"{'#':>2}  {'segment':<22} {'R':<5} {'F':<5} {'M':<5} cells")
    for i, rule in enumerate(rules, start=1):
        ranges = ["-".join(map(str, sorted(set(r)))) for r in (rule.r, rule.f, rule.m)]
        click.echo(
            f"{i:>2}  {rule.name:<22} {ranges[0]:<5} {ranges[1]:<5} {ranges[2]:<5} "
            f"{per_segment.get(rule.name, 0)}"
        )
    click.echo(f"{'':>2}  {OTHERS:<22} {'':<17} {per_segment.get(OTHERS, 0)}")
    click.echo("\ncells (R F M -> segment):")
    for name in segment_names(rules):
        owned = sorted(cell for cell, seg in cells.items() if seg == name)
        listed = " ".join(f"{r}{f}{m}" for r, f, m in owned)
        click.echo(f"  {name}: {listed or '(none)'}")


def commands() -> list[click.Command]:
    from .token_cli import token_commands

    found: list[click.Command] = [calculate_rfm, rfm_rules, export_rfm, *token_commands()]
    try:
        from .data_cli import data_commands
    except ImportError:  # import and seeding land in their own change
        return found
    return found + data_commands()
