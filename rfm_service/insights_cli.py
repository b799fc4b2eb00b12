"""``flask export-rfm FILE [--segment S]``: the current scores as CSV, the
same bytes ``GET /api/rfm/export.csv`` serves, in constant memory."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from . import export, insights
from .cli_errors import one_line_errors
from .extensions import db
from .segments import resolve_segment, segment_names


def _segment(value: str | None) -> str | None:
    """Checked in the command, not a click callback: callbacks run before
    ``with_appcontext`` has made the app (and its rule table) current."""
    if value is None:
        return None
    rules = current_app.extensions["rfm_rules"]
    name = resolve_segment(rules, value)
    if name is None:
        raise click.BadParameter(
            f"unknown segment {value!r}; valid: {', '.join(segment_names(rules))}",
            param_hint="'--segment'",
        )
    return name


def _write_atomically(target: Path, chunks: Iterable[str]) -> None:
    """Write beside ``target`` and rename when complete: a failed export
    leaves no half-written file (and an earlier export stays intact)."""
    if target.is_dir():  # checked first: os.replace would refuse it after the whole export
        raise click.ClickException(f"cannot write {target}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(tmp, target)
    except OSError as exc:  # disk full, a directory created meanwhile, ...
        Path(tmp).unlink(missing_ok=True)
        raise click.ClickException(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@click.command("export-rfm")
@click.argument("file", metavar="FILE")
@click.option("--segment", help="Only this segment (name in any case, or its slug).")
@with_appcontext
@one_line_errors
def export_rfm(file: str, segment: str | None) -> None:
    """Write the current run's scores to FILE as CSV ("-" for stdout).

    Columns as the API's score object; lines end in CRLF (RFC 4180). The
    file appears only once complete.
    """
    started = time.perf_counter()
    segment = _segment(segment)
    with db.engine.connect() as conn:
        run = insights.current_run(conn)
    if run is None:
        raise click.ClickException("no calculation has succeeded yet; nothing to export")
    rows = [0]

    def count(n: int) -> None:
        rows[0] += n

    chunks = export.stream_csv(db.engine, run.id, segment, progress=count)
    if file == "-":
        out = sys.stdout.buffer  # bytes: no newline translation
        for chunk in chunks:
            out.write(chunk.encode("utf-8"))
        out.flush()
    else:
        _write_atomically(Path(file), chunks)
    click.echo(
        f"exported {rows[0]:,} customers of run {run.id} (as of {run.as_of.isoformat()}"
        f"{', segment ' + segment if segment else ''}) to {'stdout' if file == '-' else file} "
        f"in {time.perf_counter() - started:.1f} s",
        err=file == "-",  # stdout stays pure CSV
    )
