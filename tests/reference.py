"""An independent pure-Python computation of SPEC §2-3, for checking the engine.

Deliberately written from the SPEC text, not from the SQL: sort, cut into
NTILE buckets, first matching rule wins.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

# SPEC §3, copied as text so a change to the code's table cannot hide here.
SPEC_TABLE = """
Champions           | 5   | 5   | 5
Loyal Customers     | 4-5 | 4-5 | 3-5
New Customers       | 4-5 | 1   | 1-2
Promising           | 4-5 | 1   | 3-5
Potential Loyalists | 4-5 | 1-3 | 1-3
Need Attention      | 3   | 3   | 3
About to Sleep      | 3   | 1-2 | 1-2
At Risk             | 1-2 | 4-5 | 3-5
Cannot Lose Them    | 1-2 | 1-2 | 4-5
Lost                | 1   | 1   | 1
Hibernating         | 1-2 | 1-2 | 1-3
"""


def _span(text: str) -> range:
    low, _, high = text.strip().partition("-")
    return range(int(low), int(high or low) + 1)


SPEC_RULES = [
    (name.strip(), _span(r), _span(f), _span(m))
    for name, r, f, m in (line.split("|") for line in SPEC_TABLE.strip().splitlines())
]


def spec_segment(r: int, f: int, m: int) -> str:
    for name, rs, fs, ms in SPEC_RULES:
        if r in rs and f in fs and m in ms:
            return name
    return "Others"


def ntile5(keys: list[tuple]) -> dict[object, int]:
    """NTILE(5) over rows sorted by ``keys`` (last element = customer id):
    the first n % 5 buckets hold one row more."""
    ordered = sorted(keys)
    n = len(ordered)
    base, extra = divmod(n, 5)
    result: dict[object, int] = {}
    index = 0
    for bucket in range(1, 6):
        size = base + (1 if bucket <= extra else 0)
        for key in ordered[index : index + size]:
            result[key[-1]] = bucket
        index += size
    return result


def reference_scores(
    orders: list[tuple[int, dt.datetime, Decimal]], as_of: dt.date
) -> list[tuple[int, int, int, Decimal, int, int, int, str]]:
    """Rows ``(customer_id, recency_days, frequency, monetary, R, F, M, segment)``."""
    latest: dict[int, dt.date] = {}
    count: dict[int, int] = defaultdict(int)
    total: dict[int, Decimal] = defaultdict(Decimal)
    for customer, at, amount in orders:
        day = at.astimezone(dt.UTC).date() if at.tzinfo else at.date()
        if day > as_of:
            continue
        latest[customer] = max(latest.get(customer, day), day)
        count[customer] += 1
        total[customer] += Decimal(str(amount))
    recency = {c: (as_of - d).days for c, d in latest.items()}
    r_score = ntile5([(-recency[c], c) for c in latest])
    f_score = ntile5([(count[c], c) for c in latest])
    m_score = ntile5([(total[c], c) for c in latest])
    return [
        (
            c,
            recency[c],
            count[c],
            total[c],
            r_score[c],
            f_score[c],
            m_score[c],
            spec_segment(r_score[c], f_score[c], m_score[c]),
        )
        for c in sorted(latest)
    ]
