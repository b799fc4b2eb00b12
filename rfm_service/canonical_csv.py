"""A quick test that an orders CSV is in the plain form that PostgreSQL's
COPY reads exactly as the Python validator (``order_csv``) would, so the
raw bytes can go straight to COPY with no per-row Python work.

Plain means: ASCII digits only (no signs, no leading zeros in ids), amounts
with at most two decimals, ISO 8601 timestamps with years 1000-2999 and an
optional ``Z`` or ``±HH:MM`` offset, optional double quotes around a whole
value, no blank lines, no spaces. Every value of that form means the same
to both parsers, or PostgreSQL rejects it (30 February, an id out of
range) and the caller falls back to the precise path for the exact error
message. Anything else is not plain, and falls back the same way: this
check may turn a good file away, never let a bad one in.

Each block of the file is matched with a regular expression or two (C
speed, no Python objects per row); memory stays one block. Tests check
with generated values that both parsers agree on every plain value
PostgreSQL accepts.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable
from typing import BinaryIO

BLOCK = 1 << 20  # bytes read and matched at a time
LONGEST_LINE = 4096  # a plain line is < 100 bytes; longer means "not plain", early
HEADER_LIMIT = 4096

_DATE = rb"[12][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_TIME = (
    rb"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    rb"(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])?"
)
VALUES = {
    "order_id": rb"[1-9][0-9]{0,18}",
    "customer_id": rb"[1-9][0-9]{0,9}",
    "ordered_at": _DATE + rb"(?:" + _TIME + rb")?",
    "total_amount": rb"(?:[0-9]{1,10}(?:\.[0-9]{0,2})?|\.[0-9]{1,2})",
}
# The form exports write (UTC stamps to the second, two decimals), with no
# optional parts: sre matches it about 1.6x faster, so blocks try it first.
# Ranges it leaves open (month 13, day 32, a 20-digit id, an 11-digit
# amount) PostgreSQL rejects, as the validator does; hour 24 and second 60,
# which PostgreSQL would take, are closed.
FAST_VALUES = {
    "order_id": rb"[1-9][0-9]*",
    "customer_id": rb"[1-9][0-9]*",
    "ordered_at": (
        rb"[12][0-9]{3}-[01][0-9]-[0-3][0-9]T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z"
    ),
    "total_amount": rb"[0-9]+\.[0-9][0-9]",
}
# Header names as the Python validator sees them after csv parsing: no quotes.
_HEADER = re.compile(rb"(?:\xef\xbb\xbf)?([A-Za-z_ ]+(?:,[A-Za-z_ ]+)*)\r?\n")


class NotPlain(Exception):
    """The file is not in the plain form; the precise path must judge it."""


def plain_header(line: bytes) -> list[str] | None:
    """The header's fields if line 1 is plain (the precise path still owns
    every header error message)."""
    match = _HEADER.fullmatch(line)
    return match.group(1).decode("ascii").split(",") if match else None


def line_pattern(columns: list[str], empty_order_id: bool) -> re.Pattern[bytes]:
    """Zero or more plain lines with ``columns`` (normalised header names).

    An unquoted empty order_id is NULL to COPY and "no id" to the validator;
    ``empty_order_id`` says whether the caller can take one."""
    fields = []
    for column in columns:
        value = VALUES[column]
        field = rb"(?:" + value + rb'|"' + value + rb'")'
        if column == "order_id" and empty_order_id:
            field += rb"?"
        fields.append(field)
    # Possessive: a line cannot match two ways, and sre keeps no backtracking state.
    return re.compile(rb"(?:" + rb",".join(fields) + rb"\r?\n)*+")


def line_patterns(columns: list[str], empty_order_id: bool) -> list[re.Pattern[bytes]]:
    """The patterns a block may match, the quickest first."""
    fast = rb",".join(FAST_VALUES[column] for column in columns)
    return [re.compile(rb"(?:" + fast + rb"\n)*+"), line_pattern(columns, empty_order_id)]


class PlainBlocks:
    """A file object for COPY that hands on ``raw`` a block at a time, each
    block cut at a line end and matching one of ``patterns``; the last line
    may lack its line end. A failed check raises ``NotPlain`` (COPY turns it
    into an error of its own; ``failure`` keeps the reason)."""

    def __init__(
        self,
        raw: BinaryIO,
        patterns: list[re.Pattern[bytes]],
        progress: Callable[[int], None],
    ) -> None:
        self._raw = raw
        self._patterns = patterns
        self._progress = progress
        self._carry = b""
        self.failure: NotPlain | None = None
        self.failed_lines = b""  # the lines that failed the check, if whole lines did

    def _fail(self, reason: str, lines: bytes = b"") -> NotPlain:
        self.failure = NotPlain(reason)
        self.failed_lines = lines
        return self.failure

    def read(self, size: int = -1) -> bytes:
        while True:
            block = self._raw.read(BLOCK)
            if not block:
                return self._last_line()
            self._progress(len(block))
            data = self._carry + block
            end = data.rfind(b"\n") + 1
            self._carry = data[end:]
            if len(self._carry) > LONGEST_LINE:
                raise self._fail("a line longer than a plain line can be")
            if end == 0:
                continue
            lines = data[:end]
            if not self._plain(lines):
                raise self._fail("a line not in the plain form", lines)
            return lines

    def _plain(self, lines: bytes) -> bool:
        return any(pattern.fullmatch(lines) for pattern in self._patterns)

    def _last_line(self) -> bytes:
        last, self._carry = self._carry, b""
        if last and not self._plain(last + b"\n"):
            raise self._fail("a last line not in the plain form", last + b"\n")
        if last.endswith(b"\r"):  # a lone CR line end: COPY and csv differ
            raise self._fail("a last line ending in CR")
        return last


class ReadAhead:
    """Reads and checks the next blocks of ``source`` in a thread of its own
    while COPY sends the one before (psycopg2 lets go of the GIL while it
    sends), so a busy machine does not leave PostgreSQL waiting on Python.
    At most ``depth`` blocks wait in memory. ``close`` stops the thread."""

    def __init__(self, source: PlainBlocks, depth: int = 4) -> None:
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source,), daemon=True)
        self._thread.start()

    def _fill(self, source: PlainBlocks) -> None:
        while not self._stop.is_set():
            try:
                item: bytes | BaseException = source.read()
            except BaseException as exc:  # handed to the reader, which raises it
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, bytes) or not item:
                return

    def read(self, size: int = -1) -> bytes:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
