"""``flask export-rfm FILE [--segment S]``: the current scores as CSV, the
same bytes ``GET /api/rfm/export.csv`` serves, in constant memory."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from . import export, insights
from .cli_errors import one_line_errors
from .extensions import db
from .segments import resolve_name, run_segment_names


def _segment(value: str | None, counts: Mapping[str, Any] | None) -> str | None:
    """Checked in the command, not a click callback: callbacks run before
    ``with_appcontext`` has made the app (and its rule table) current.
    ``counts``: the run's stored segment counts, which name its segments
    (those of the rule file it was calculated with)."""
    if value is None:
        return None
    rules = current_app.extensions["rfm_rules"]
    names = run_segment_names(rules, counts)
    name = resolve_name(names, value)
    if name is None:
        raise click.BadParameter(
            f"unknown segment {value!r}; valid: {', '.join(names)}",
            param_hint="'--segment'",
        )
    return name


def _write_atomically(target: Path, chunks: Iterable[str]) -> None:
    """Write beside ``target`` and rename when complete: a failed export
    leaves no half-written file (and an earlier export stays intact)."""
    if target.is_dir():  # checked first: os.replace would refuse it after the whole export
        raise click.ClickException(f"cannot write {target}: it is a directory")
    shown = target
    # A symbolic link is written through (os.replace would put a file in its
    # place); a terminal, pipe or device (/dev/stdout) is written to as it is.
    target = Path(os.path.realpath(target))
    if target.exists() and not target.is_file():
        try:
            with target.open("w", encoding="utf-8", newline="") as out:
                for chunk in chunks:
                    out.write(chunk)
        except OSError as exc:
            raise click.ClickException(f"cannot write {shown}: {exc.strerror or exc}") from None
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise click.ClickException(f"cannot write {shown}: {exc.strerror}") from None
    try:
        # mkstemp makes the file private (0600); give it the mode a plain
        # open() would: the replaced file's, else 0666 less the umask.
        umask = os.umask(0)
        os.umask(umask)
        mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~umask
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(tmp, target)
    except OSError as exc:  # disk full, a directory created meanwhile, ...
        Path(tmp).unlink(missing_ok=True)
        raise click.ClickException(f"cannot write {shown}: {exc.strerror or exc}") from None
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
    with db.engine.connect() as conn:
        run, counts = insights.current_run_segments(conn) or (None, None)
    segment = _segment(segment, counts)
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
