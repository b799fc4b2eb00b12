"""What a valid orders CSV is (SPEC §5 ``flask import-orders``), checked in
Python row by row: the precise validator behind every error message.

``stage_file`` streams the file once and writes normalised rows to a
temporary file, so a bad file is rejected before any database work and
memory stays flat however long the file is.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any, BinaryIO

from .timeutil import as_utc, sqlite_timestamp

REQUIRED = ("customer_id", "ordered_at", "total_amount")
OPTIONAL = ("order_id",)
MAX_CUSTOMER_ID = 2**31 - 1  # customers.id is INTEGER
MAX_ORDER_ID = 2**63 - 1  # orders.id is BIGINT
MAX_AMOUNT = Decimal("9999999999.99")  # NUMERIC(12,2)
CENT = Decimal("0.01")
CHUNK = 10_000  # lines per progress callback
# Longer lines are refused from their first bytes, never read whole: no valid
# line comes near (four fields of the csv module's 131,072 characters are at
# most 2 MiB), and a line without line ends can be the whole file.
MAX_LINE_BYTES = 16 << 20

# ASCII only: int() and Decimal() also accept '1_000' and other scripts' digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")

Progress = Callable[[int], None]


class ImportFailed(Exception):
    """A one-line reason why the file was rejected; nothing was written."""


class _BadLine(Exception):
    """A line that cannot be read into fields: ``reason`` words it, and
    ``at_fault`` tells the field it lies in, so that the error can name the
    column once the header is known."""

    def __init__(
        self,
        number: int,
        text: str,
        reason: str,
        at_fault: Callable[[str], bool],
        column_reason: str | None = None,
    ):
        super().__init__(f"line {number}: {reason}")
        self.number, self.text, self.reason, self.at_fault = number, text, reason, at_fault
        self.column_reason = column_reason  # the reason instead, once a column is at fault

    def failure(self, names: list[str] | None) -> ImportFailed:
        column = _column_at_fault(self.text, names, self.at_fault) if names else None
        if column:
            return ImportFailed(
                f"line {self.number}, column {column}: {self.column_reason or self.reason}"
            )
        return ImportFailed(f"line {self.number}: {self.reason}")


def _column_at_fault(text: str, names: list[str], at_fault: Callable[[str], bool]) -> str | None:
    """The column of the first field of the one-line record ``text`` that is at fault."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))  # the line is in memory already
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error:
        return None
    finally:
        csv.field_size_limit(limit)
    found = (name for name, field in zip(names, fields, strict=False) if at_fault(field))
    return next(found, None)


def _undecodable(field: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in field)  # surrogateescape's bytes


@dataclass(frozen=True)
class StagedFile:
    rows: int
    with_order_id: int


SHOWN_CHARS = 40  # of a bad value, in an error message
SHOWN_NAMES = 5  # of bad column names, in an error message


def _shown(raw: str) -> str:
    """A bad value for an error message, cut short: a hostile file can put
    megabytes into one field, and the message must stay one readable line."""
    if len(raw) <= SHOWN_CHARS:
        return repr(raw)
    return f"{raw[:SHOWN_CHARS]!r}... ({len(raw):,} characters)"


def _names(names: list[str]) -> str:
    # An empty name (a trailing comma in the header) shows as ''.
    shown = [n if 0 < len(n) <= SHOWN_CHARS else _shown(n) for n in names[:SHOWN_NAMES]]
    more = len(names) - SHOWN_NAMES
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def parse_id(raw: str, maximum: int) -> int:
    value = raw.strip()
    if not _INTEGER.fullmatch(value):
        raise ValueError(f"{_shown(raw)} is not a whole number")
    negative = value.startswith("-")
    digits = value.lstrip("+-").lstrip("0") or "0"
    # int() refuses more than 4,300 digits with a message about Python
    # internals; a number that long is out of range either way.
    if len(digits) > SHOWN_CHARS:
        number = -1 if negative else maximum + 1
    else:
        number = -int(digits) if negative else int(digits)
    if number < 1:
        raise ValueError(f"{_shown(raw)} must be at least 1")
    if number > maximum:
        raise ValueError(f"{_shown(raw)} is too large (maximum {maximum})")
    return number


def parse_timestamp(raw: str) -> dt.datetime:
    """ISO 8601 date or date-time as an aware UTC datetime (naive = UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(raw.strip())
    except ValueError as exc:
        # Python's own reason helps for impossible dates ("day is out of range").
        reason = "" if str(exc).startswith("Invalid isoformat") else f" ({exc})"
        raise ValueError(f"{_shown(raw)} is not an ISO 8601 date or date-time{reason}") from None
    try:
        return as_utc(parsed)
    except OverflowError:
        raise ValueError(f"{_shown(raw)} is out of range in UTC") from None


def parse_amount(raw: str) -> Decimal:
    value = raw.strip()
    if not _DECIMAL.fullmatch(value):
        raise ValueError(f"{_shown(raw)} is not a decimal number")
    amount = Decimal(value)
    if amount < 0:
        raise ValueError(f"{_shown(raw)} is negative")
    if amount > MAX_AMOUNT:
        raise ValueError(f"{_shown(raw)} is too large (maximum {MAX_AMOUNT})")
    if amount != amount.quantize(CENT):
        raise ValueError(f"{_shown(raw)} has more than 2 decimal places")
    return amount.quantize(CENT).copy_abs()  # copy_abs turns '-0' into '0.00'


def _required(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def checked(raw: str) -> Any:
        if not raw.strip():
            raise ValueError("a value is required")
        return parse(raw)

    return checked


_PARSERS: dict[str, Callable[[str], Any]] = {
    "customer_id": _required(lambda raw: parse_id(raw, MAX_CUSTOMER_ID)),
    "ordered_at": _required(parse_timestamp),
    "total_amount": _required(parse_amount),
    # An empty order_id means "give it the next id".
    "order_id": lambda raw: parse_id(raw, MAX_ORDER_ID) if raw.strip() else None,
}


def _decoded_lines(raw: BinaryIO, progress: Progress | None) -> Iterator[str]:
    """Decode line by line, so an encoding error names its line."""
    pending = 0
    limit = csv.field_size_limit()
    for number, line in enumerate(iter(lambda: raw.readline(MAX_LINE_BYTES + 1), b""), start=1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            raise _BadLine(
                number,
                line.decode("utf-8", "surrogateescape"),
                f"a line longer than {MAX_LINE_BYTES:,} bytes",
                lambda field: len(field) > limit,
                column_reason=f"a value longer than {limit:,} characters",
            )
        if number == 1 and line.startswith(b"\x1f\x8b"):  # gzip's magic bytes
            raise ImportFailed("the file is gzip-compressed; decompress it first (gunzip)")
        if number == 1 and line.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise ImportFailed("the file is UTF-16 encoded; save it as UTF-8")
        if number == 1 and b"\x00" in line:  # UTF-16 without a byte order mark
            raise ImportFailed("line 1: NUL bytes, the file looks UTF-16 encoded; save it as UTF-8")
        try:
            yield line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise _BadLine(
                number,
                line.decode("utf-8", "surrogateescape"),
                f"not valid UTF-8 (byte 0x{line[exc.start]:02x}); save the file as UTF-8",
                _undecodable,
            ) from None
        pending += len(line)
        if progress and number % CHUNK == 0:
            progress(pending)
            pending = 0
    if progress and pending:
        progress(pending)


def _records(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the file line they start on; blank lines skipped."""
    seen = [""]

    def remembered() -> Iterator[str]:
        for seen[0] in lines:
            yield seen[0]

    reader = csv.reader(remembered(), strict=True)
    last_line = 0
    limit = csv.field_size_limit()
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise _BadLine(
                    reader.line_num,
                    seen[0],
                    f"a value longer than {limit:,} characters",
                    lambda field: len(field) > limit,
                ) from None
            if "new-line character seen in unquoted field" in str(exc):
                # csv's own wording asks about Python's newline mode.
                raise ImportFailed(
                    f"line {reader.line_num}: a line break (\\r) inside an unquoted value; "
                    "lines must end in \\n or \\r\\n, and a value holding a line break "
                    "must be quoted"
                ) from None
            raise ImportFailed(f"line {reader.line_num}: malformed CSV ({exc})") from None
        start, last_line = last_line + 1, reader.line_num
        if fields:
            yield start, fields


# Spreadsheet exports in some locales: named in the error instead of
# "no header row found".
_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def check_header(fields: list[str], line: int = 1) -> list[str]:
    """The header's column names; ``line`` is the file line it stands on."""
    names = [name.strip().lower() for name in fields]
    expected = ", ".join(REQUIRED + OPTIONAL)
    # Counter, not names.count(): a hostile header has millions of columns.
    twice = sorted(n for n, times in Counter(names).items() if times > 1)
    if twice:
        raise ImportFailed(f"line {line}: column(s) named twice: {_names(twice)}")
    unknown = [n for n in names if n not in _PARSERS]
    if len(names) == 1:
        for separator, called in _OTHER_SEPARATORS.items():
            if any(n.strip() in _PARSERS for n in names[0].split(separator)):
                raise ImportFailed(
                    f"line {line}: the columns are separated by {called}, not commas "
                    f"(expected comma-separated columns {expected})"
                )
    if len(unknown) == len(names):  # most likely data: the header was forgotten
        raise ImportFailed(f"line {line}: no header row found (expected columns {expected})")
    if unknown:
        raise ImportFailed(
            f"line {line}: unknown column(s) {_names(unknown)} (expected {expected})"
        )
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise ImportFailed(
            f"line {line}: missing column(s) {', '.join(missing)} (expected {expected})"
        )
    return names


def _normalise(line: int, row: dict[str, str], dialect: str) -> list[str]:
    """One validated row as staging text: line, order_id, customer_id, ordered_at, amount."""
    values: dict[str, Any] = {"order_id": None}
    for column, parse in _PARSERS.items():
        if column in row:
            try:
                values[column] = parse(row[column])
            except ValueError as exc:
                raise ImportFailed(f"line {line}, column {column}: {exc}") from None
    at: dt.datetime = values["ordered_at"]
    # PostgreSQL takes ISO text with +00:00; SQLite gets exactly the ORM's text.
    stamp = sqlite_timestamp(at) if dialect == "sqlite" else at.isoformat()
    order_id = "" if values["order_id"] is None else str(values["order_id"])
    return [str(line), order_id, str(values["customer_id"]), stamp, str(values["total_amount"])]


def stage_file(raw: BinaryIO, out: IO[str], dialect: str, progress: Progress | None) -> StagedFile:
    """Validate the whole CSV, writing normalised rows to ``out``; raises
    ``ImportFailed`` at the first bad line."""
    records = _records(_decoded_lines(raw, progress))
    try:
        first = next(records, None)
    except _BadLine as exc:
        raise exc.failure(None) from None
    if first is None:
        raise ImportFailed(f"the file is empty (expected a header row: {','.join(REQUIRED)})")
    names = check_header(first[1], first[0])
    writer = csv.writer(out, lineterminator="\n")
    rows = with_id = 0
    try:
        for line, fields in records:
            if len(fields) != len(names):
                raise ImportFailed(
                    f"line {line}: expected {len(names)} fields, found {len(fields)}"
                )
            normalised = _normalise(line, dict(zip(names, fields, strict=True)), dialect)
            writer.writerow(normalised)
            rows += 1
            with_id += normalised[1] != ""
    except _BadLine as exc:
        raise exc.failure(names) from None
    if not rows:  # most likely a failed export; importing nothing would hide it
        raise ImportFailed(f"line {first[0]}: the file has a header row but no data rows")
    return StagedFile(rows, with_id)


class Passes:
    """Progress over several passes through one file (a fast attempt, then
    the precise path): each pass counts from where it starts, and only
    bytes beyond the furthest point reached so far are reported, so the
    total never exceeds the file's size."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._furthest = 0

    def start(self, offset: int) -> Progress:
        position = offset

        def advance(size: int) -> None:
            nonlocal position
            position += size
            if position > self._furthest:
                if self._progress:
                    self._progress(position - self._furthest)
                self._furthest = position

        return advance
