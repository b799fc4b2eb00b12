"""The pandas round trip peer: the same RFM scores computed outside the database.

COPY the counted orders out (psycopg2 ``copy_expert`` into memory), group
them per customer with pandas, rank into quintiles with PostgreSQL's
``NTILE(5)`` semantics and the same customer-id tie-breaks, label segments
from the rule table (passed in as its 125 cells) and COPY the scores back
into a table shaped like ``rfm_scores``, in one transaction.

    python -m bench.pandas_peer --database rfm_bench_10k --as-of 2026-06-30 \\
        --cells cells.json --table bench_pandas_scores

Prints one JSON line: rows, orders and the time of each phase. Standalone on
purpose: it imports nothing from the project.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import time

import numpy as np
import pandas as pd
import psycopg2

NS_PER_DAY = 86_400 * 10**9
BUCKETS = 5


def ntile(order: np.ndarray, buckets: int = BUCKETS) -> np.ndarray:
    """``NTILE(buckets)`` for rows ranked by ``order`` (row indices, best
    ranked last): the first ``n % buckets`` tiles get one row more, as in
    PostgreSQL and SQLite; fewer rows than buckets give tiles 1..n."""
    n = len(order)
    size, extra = divmod(n, buckets)
    position = np.arange(n)
    in_big = extra * (size + 1)  # rows in the tiles that hold one more
    tile = np.where(
        position < in_big,
        position // (size + 1),
        extra + (position - in_big) // max(size, 1),
    )
    result = np.empty(n, dtype=np.int16)
    result[order] = tile + 1
    return result


def copy_out(cur, cutoff: dt.datetime) -> io.BytesIO:
    buffer = io.BytesIO()
    sql = cur.mogrify(
        "COPY (SELECT customer_id, ordered_at, total_amount FROM orders "
        "WHERE ordered_at < %s) TO STDOUT WITH (FORMAT csv)",
        [cutoff],
    ).decode()
    cur.copy_expert(sql, buffer)
    buffer.seek(0)
    return buffer


def score(orders: pd.DataFrame, as_of: dt.date, cells: dict[str, str]) -> pd.DataFrame:
    per_customer = orders.groupby("customer_id", sort=True).agg(
        last_ns=("ordered_ns", "max"),
        frequency=("ordered_ns", "size"),
        cents=("cents", "sum"),
    )
    as_of_day = (dt.date(as_of.year, as_of.month, as_of.day) - dt.date(1970, 1, 1)).days
    ids = per_customer.index.to_numpy()  # ascending: stable sorts break ties by id
    recency = as_of_day - per_customer["last_ns"].to_numpy() // NS_PER_DAY
    frequency = per_customer["frequency"].to_numpy()
    cents = per_customer["cents"].to_numpy()
    r = ntile(np.argsort(-recency, kind="stable"))
    f = ntile(np.argsort(frequency, kind="stable"))
    m = ntile(np.argsort(cents, kind="stable"))
    names = np.array(
        [cells[f"{a}{b}{c}"] for a in range(1, 6) for b in range(1, 6) for c in range(1, 6)],
        dtype=object,
    )
    code = (r.astype(np.int32) - 1) * 25 + (f - 1) * 5 + (m - 1)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "recency_days": recency,
            "frequency": frequency,
            "monetary": cents / 100,  # written with two decimals: exact for cents
            "recency_score": r,
            "frequency_score": f,
            "monetary_score": m,
            "segment": names[code],
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--as-of", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--cells", required=True, help="JSON: 'RFM' digits -> segment")
    parser.add_argument("--table", required=True)
    parser.add_argument("--server", default=os.environ.get("RFM_BENCH_PG"))
    args = parser.parse_args(argv)
    with open(args.cells, encoding="utf-8") as file:
        cells = json.load(file)
    server = args.server or "postgresql://postgres@127.0.0.1:5432"
    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = now - clock
        clock = now

    cutoff = dt.datetime.combine(args.as_of + dt.timedelta(days=1), dt.time(), dt.UTC)
    conn = psycopg2.connect(f"{server}/{args.database}")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'")
            buffer = copy_out(cur, cutoff)
            lap("copy_out")
            orders = pd.read_csv(
                buffer,
                header=None,
                names=["customer_id", "ordered_at", "total_amount"],
                dtype={"customer_id": "int64", "total_amount": "float64"},
                parse_dates=["ordered_at"],
                date_format="ISO8601",
            )
            del buffer
            orders["ordered_ns"] = orders.pop("ordered_at").dt.as_unit("ns").astype("int64")
            orders["cents"] = np.rint(orders.pop("total_amount").to_numpy() * 100).astype("int64")
            lap("parse")
            scores = score(orders, args.as_of, cells)
            order_count = len(orders)
            del orders
            lap("score")
            scores.insert(0, "run_id", 0)
            scores["calculated_at"] = dt.datetime.now(dt.UTC).isoformat()
            out = io.StringIO()
            scores.to_csv(out, header=False, index=False, float_format="%.2f")
            out.seek(0)
            lap("to_csv")
            cur.execute(f"TRUNCATE {args.table}")
            cur.copy_expert(
                f"COPY {args.table} ({', '.join(scores.columns)}) FROM STDIN WITH (FORMAT csv)",
                out,
            )
        lap("copy_in")  # includes the commit
    finally:
        conn.close()
    print(
        json.dumps(
            {
                "rows": len(scores),
                "orders": order_count,
                "phases": phases,
                "inside_seconds": sum(phases.values()),
            }
        )
    )


if __name__ == "__main__":
    main()
