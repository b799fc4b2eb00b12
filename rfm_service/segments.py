"""Segment rules (SPEC §3): the table as data, rule files, and the SQL CASE.

Rules are evaluated top to bottom; the first whose three score ranges all
contain a customer's (R, F, M) wins; cells no rule covers are ``Others``.
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OTHERS = "Others"
# The transitions' pseudo-segment of a customer absent from one run
# (insights.NONE); a rule of that name would be counted twice there.
RESERVED_NONE = "(none)"
SCORES = range(1, 6)
Cell = tuple[int, int, int]


class RuleError(ValueError):
    """An invalid rule table; the message says which rule and why."""


@dataclass(frozen=True)
class Rule:
    name: str
    r: tuple[int, int]
    f: tuple[int, int]
    m: tuple[int, int]

    def matches(self, r: int, f: int, m: int) -> bool:
        return (
            self.r[0] <= r <= self.r[1]
            and self.f[0] <= f <= self.f[1]
            and self.m[0] <= m <= self.m[1]
        )

    def cells(self) -> set[Cell]:
        return set(
            itertools.product(
                range(self.r[0], self.r[1] + 1),
                range(self.f[0], self.f[1] + 1),
                range(self.m[0], self.m[1] + 1),
            )
        )


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("Champions", (5, 5), (5, 5), (5, 5)),
    Rule("Loyal Customers", (4, 5), (4, 5), (3, 5)),
    Rule("New Customers", (4, 5), (1, 1), (1, 2)),
    Rule("Promising", (4, 5), (1, 1), (3, 5)),
    Rule("Potential Loyalists", (4, 5), (1, 3), (1, 3)),
    Rule("Need Attention", (3, 3), (3, 3), (3, 3)),
    Rule("About to Sleep", (3, 3), (1, 2), (1, 2)),
    Rule("At Risk", (1, 2), (4, 5), (3, 5)),
    Rule("Cannot Lose Them", (1, 2), (1, 2), (4, 5)),
    Rule("Lost", (1, 1), (1, 1), (1, 1)),
    Rule("Hibernating", (1, 2), (1, 2), (1, 3)),
)


# A CSV cell starting with one of these is a formula to a spreadsheet.
FORMULA_STARTS = "=+-@"
# Control characters (NUL, tab, newline, ...), lone surrogates and line or
# paragraph separators: PostgreSQL refuses NUL in text and nothing encodes a
# surrogate as UTF-8, so every calculation failed; a line break splits the
# one-line messages that name a segment.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def slugify(name: str) -> str:
    """``At Risk`` -> ``at-risk``; letters and digits of any script stay, so
    ``Потерянные клиенты`` -> ``потерянные-клиенты``. Empty for a name of
    punctuation only, which then has no slug."""
    return re.sub(r"[\W_]+", "-", name.lower()).strip("-")


def segment_of(rules: Sequence[Rule], r: int, f: int, m: int) -> str:
    for rule in rules:
        if rule.matches(r, f, m):
            return rule.name
    return OTHERS


def cell_map(rules: Sequence[Rule]) -> dict[Cell, str]:
    """Which segment each of the 125 (R, F, M) cells receives."""
    return {cell: segment_of(rules, *cell) for cell in itertools.product(SCORES, SCORES, SCORES)}


def segment_names(rules: Sequence[Rule]) -> list[str]:
    return [rule.name for rule in rules] + [OTHERS]


def resolve_segment(rules: Sequence[Rule], text: str) -> str | None:
    """A segment name from its name (any case) or slug; ``None`` if unknown."""
    return resolve_name(segment_names(rules), text)


def resolve_name(names: Iterable[str], text: str) -> str | None:
    """One of ``names`` from its name (any case) or slug; ``None`` if none."""
    wanted = text.strip().lower()
    for name in names:
        if wanted and wanted in (name.lower(), slugify(name)):
            return name
    return None


def run_segment_names(rules: Sequence[Rule], counts: Mapping[str, Any] | None) -> list[str]:
    """The segments of a run: those of the rule table it was calculated with,
    which may not be the one configured now (a succeeded run stores a count
    for each of them, empty ones too). In the configured table's order where
    it has them, the others after in name order, ``Others`` last. A run
    without stored counts has the configured table's."""
    if counts is None:
        return segment_names(rules)
    configured = [name for name in segment_names(rules) if name in counts and name != OTHERS]
    earlier = sorted(set(counts) - set(configured) - {OTHERS})
    return [*configured, *earlier, OTHERS]


def _range(raw: Any, where: str) -> tuple[int, int]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw, raw]
    if (
        not isinstance(raw, list | tuple)
        or len(raw) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
    ):
        raise RuleError(f"{where}: expected a score or a [low, high] pair, got {raw!r}")
    lo, hi = raw
    if not (1 <= lo <= 5 and 1 <= hi <= 5):
        raise RuleError(f"{where}: scores must be 1-5, got [{lo}, {hi}]")
    if lo > hi:
        raise RuleError(f"{where}: empty range [{lo}, {hi}] (low above high)")
    return lo, hi


def validate_rules(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    """Reject duplicates and rules that can never match; returns the rules."""
    rules = tuple(rules)
    if not rules:
        raise RuleError("the rule table is empty")
    seen: dict[str, str] = {OTHERS.lower(): OTHERS, slugify(OTHERS): OTHERS}
    seen.update(dict.fromkeys((RESERVED_NONE, slugify(RESERVED_NONE)), RESERVED_NONE))
    covered: set[Cell] = set()
    for index, rule in enumerate(rules, start=1):
        keys = {rule.name.lower(), slugify(rule.name)} - {""}
        for key in keys:
            if key in seen:
                raise RuleError(f"rule {index} ({rule.name!r}): duplicate of {seen[key]!r}")
        seen.update(dict.fromkeys(keys, rule.name))
        cells = rule.cells()
        if cells <= covered:
            raise RuleError(
                f"rule {index} ({rule.name!r}) can never match: "
                "the rules above it already cover all its cells"
            )
        covered |= cells
    return rules


def parse_rules(data: Any, source: str = "rules") -> tuple[Rule, ...]:
    """Rules from decoded JSON/TOML: a list of ``{name, r, f, m}`` tables
    (TOML: ``[[segment]]`` tables; JSON: a list or ``{"segment": [...]}``)."""
    if isinstance(data, dict):
        data = data.get("segment")
    if not isinstance(data, list):
        raise RuleError(
            f"{source}: expected a list of segments ([[segment]] tables in TOML; "
            'a list, or {"segment": [...]}, in JSON)'
        )
    rules = []
    for index, item in enumerate(data, start=1):
        where = f"{source}: rule {index}"
        if not isinstance(item, dict):
            raise RuleError(f"{where}: expected a table with name, r, f, m")
        unknown = set(item) - {"name", "r", "f", "m"}
        if unknown:
            raise RuleError(f"{where}: unknown keys {sorted(unknown)}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise RuleError(f"{where}: name must be a non-empty string of at most 64 characters")
        bad = next((c for c in name if unicodedata.category(c) in FORBIDDEN_CATEGORIES), None)
        if bad is not None:
            raise RuleError(
                f"{where} ({name!r}): a name may not contain the control or separator "
                f"character U+{ord(bad):04X}"
            )
        if name.strip()[0] in FORMULA_STARTS:  # names go into CSV exports as they are
            raise RuleError(
                f"{where} ({name}): a name may not start with {name.strip()[0]!r}, "
                "which spreadsheets read as the start of a formula"
            )
        rules.append(
            Rule(
                name.strip(),
                *(_range(item.get(dim), f"{where} ({name}) {dim.upper()}") for dim in "rfm"),
            )
        )
    try:
        return validate_rules(rules)
    except RuleError as exc:
        raise RuleError(f"{source}: {exc}") from None


def load_rules(path: str | None) -> tuple[Rule, ...]:
    """The configured rule file (``.toml`` or ``.json``), or the SPEC table."""
    if not path:
        return validate_rules(DEFAULT_RULES)
    file = Path(path)
    if file.suffix not in (".toml", ".json"):
        raise RuleError(f"{path}: a segment rules file is .toml or .json")
    try:
        # -sig: a byte order mark (some editors save one) is not content;
        # tomllib and json refused the file over it.
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RuleError(f"cannot read segment rules file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise RuleError(
            f"{path}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RuleError(f"{path}: not valid {file.suffix.lstrip('.').upper()}: {exc}") from None
    return parse_rules(data, source=path)


def case_sql(rules: Sequence[Rule], r: str, f: str, m: str) -> tuple[str, dict[str, Any]]:
    """A SQL ``CASE`` equal to ``segment_of``; every value is a bound parameter."""
    parts = ["CASE"]
    params: dict[str, Any] = {}
    for i, rule in enumerate(rules):
        conds = []
        for dim, column, (lo, hi) in (("r", r, rule.r), ("f", f, rule.f), ("m", m, rule.m)):
            conds.append(f"{column} BETWEEN :seg{i}_{dim}lo AND :seg{i}_{dim}hi")
            params[f"seg{i}_{dim}lo"], params[f"seg{i}_{dim}hi"] = lo, hi
        parts.append(f" WHEN {' AND '.join(conds)} THEN :seg{i}_name")
        params[f"seg{i}_name"] = rule.name
    parts.append(" ELSE :seg_others END")
    params["seg_others"] = OTHERS
    return "".join(parts), params
