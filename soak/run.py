"""``python -m soak.run [--seconds 120]`` (``make soak``): the production-like
stack under read load while it recalculates every ten seconds.

Builds the stack (``stack.Stack``), calculates both dates once and reads
their truth (``oracle``), drives list, get, statistics and by-segment with
a pool of client threads while a POST alternates the two dates every
``--recalc-every`` seconds (``load``), then prints a Markdown table.
Exit status 0 only with no 5xx, no connection error, no wrong answer and
every recalculation succeeded. Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import signal
import sys
import threading
import time
from typing import Any, NoReturn

import sqlalchemy as sa

from .load import ENDPOINTS, PAGE_SIZE, Plan, Reader, Recalculations, Tally, request
from .oracle import Oracle, Truth, load_truth
from .stack import Stack, StackError

LABELS = {
    "list": "GET /api/rfm/ (list)",
    "get": "GET /api/rfm/{id}/",
    "statistics": "GET /api/rfm/statistics/",
    "by-segment": "GET /api/rfm/by-segment/",
    "list-walk": "GET /api/rfm/, then its next link",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m soak.run", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120, help="load duration (default 120)")
    parser.add_argument("--clients", type=int, default=6, help="client threads (default 6)")
    parser.add_argument("--recalc-every", type=float, default=10, help="seconds (default 10)")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "RFM_SOAK_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL URL allowed to create and drop the soak database",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("RFM_SOAK_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    return parser.parse_args(argv)


def wait_for_run(stack: Stack, run_id: int, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = request(
            stack.base_url, "GET", f"/api/rfm/jobs/{run_id}/", stack.read_token
        )
        if status == 200 and body["status"] in ("succeeded", "failed"):
            return body
        if time.monotonic() > deadline:
            raise StackError(f"run {run_id} not finished within {timeout} s:\n{stack.log_tails()}")
        time.sleep(0.2)


def calculate(stack: Stack, as_of: str) -> int:
    status, body, _ = request(
        stack.base_url, "POST", "/api/rfm/calculate/", stack.write_token, {"as_of": as_of}
    )
    if status != 202:
        raise StackError(f"POST calculate answered {status}: {body}")
    run = wait_for_run(stack, body["id"])
    if run["status"] != "succeeded":
        raise StackError(f"the calculation for {as_of} failed: {run['error']}")
    return int(run["id"])


def make_plan(truths: dict[str, Truth]) -> Plan:
    """Requests valid under both dates, so no answer is a 404."""
    a, b = truths.values()
    segments = sorted(set(a.segment_ids) & set(b.segment_ids))
    pages = {
        s: math.ceil(min(len(a.segment_ids[s]), len(b.segment_ids[s])) / PAGE_SIZE)
        for s in segments
    }
    return Plan(
        list_pages=math.ceil(min(a.count, b.count) / PAGE_SIZE),
        customer_ids=sorted(set(a.rows) & set(b.rows)),
        segments=segments,
        segment_pages=pages,
    )


def run_durations(engine: sa.Engine, run_ids: list[int]) -> dict[str, list[Any]]:
    if not run_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT status, EXTRACT(EPOCH FROM finished_at - started_at), error "
                "FROM rfm_runs WHERE id = ANY(:ids)"
            ),
            {"ids": run_ids},
        ).all()
    found: dict[str, list[Any]] = {}
    for status, seconds, error in rows:
        found.setdefault(status, []).append(error if status == "failed" else float(seconds))
    return found


def table(tallies: dict[str, Tally], posts: Tally) -> str:
    lines = [
        "| endpoint | requests | 5xx | connection errors | wrong answers | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def line(label: str, t: Tally) -> str:
        return (
            f"| {label} | {t.requests:,} | {t.errors_5xx} | {t.connection_errors} | {t.wrong} "
            f"| {t.percentile(0.50):.1f} | {t.percentile(0.99):.1f} |"
        )

    reads = Tally()
    for name in ENDPOINTS:
        lines.append(line(LABELS[name], tallies[name]))
        reads.merge(tallies[name])
    lines.append(line("**all reads**", reads))
    lines.append(line("POST /api/rfm/calculate/", posts))
    return "\n".join(lines)


def soak(args: argparse.Namespace) -> int:
    today = dt.datetime.now(dt.UTC).date()
    # Today counts every order; 180 days earlier fewer customers have any,
    # so the two dates' runs differ in counts, not only in values.
    dates = ((today - dt.timedelta(days=180)).isoformat(), today.isoformat())
    with Stack(
        args.pg_admin_url, args.redis_url, args.customers, args.seed, args.keep_logs
    ) as stack:
        engine = sa.create_engine(stack.database_url, pool_size=2, pool_pre_ping=True)
        try:
            truths = {d: load_truth(engine, calculate(stack, d)) for d in dates}
            oracle = Oracle(engine, truths, args.customers)
            plan = make_plan(truths)
            readers = [
                Reader(stack.base_url, stack.read_token, oracle, plan, seed=i)
                for i in range(args.clients)
            ]
            recalcs = Recalculations(stack.base_url, stack.write_token, dates, args.recalc_every)
            print(
                f"soak: {args.seconds:.0f} s, {args.clients} clients, recalculation every "
                f"{args.recalc_every:.0f} s (as_of {dates[0]} / {dates[1]}), {stack.base_url}"
            )
            started = time.monotonic()
            deadline = started + args.seconds
            stop = threading.Event()
            trigger = threading.Thread(target=recalcs.run, args=(deadline, stop), daemon=True)
            for reader in readers:
                reader.deadline = deadline
                reader.start()
            trigger.start()
            for reader in readers:
                reader.join(args.seconds + 60)
            stop.set()
            trigger.join(60)
            elapsed = time.monotonic() - started
            for run_id in recalcs.started[-1:]:
                wait_for_run(stack, run_id)
            outcome = run_durations(engine, recalcs.started)
        finally:
            engine.dispose()
        tallies = {name: Tally() for name in ENDPOINTS}
        for reader in readers:
            for name in ENDPOINTS:
                tallies[name].merge(reader.tallies[name])
        return report(args, stack, tallies, recalcs, outcome, oracle.runs_seen, elapsed)


def report(
    args: argparse.Namespace,
    stack: Stack,
    tallies: dict[str, Tally],
    recalcs: Recalculations,
    outcome: dict[str, list[Any]],
    runs_seen: set[int],
    elapsed: float,
) -> int:
    served = sum(t.requests for t in tallies.values())
    succeeded, failed = outcome.get("succeeded", []), outcome.get("failed", [])
    unfinished = len(recalcs.started) - len(succeeded) - len(failed)
    print()
    print(
        f"Soak: {elapsed:.0f} s, gunicorn 2 workers × 4 threads, 1 Celery worker, PostgreSQL, "
        f"{args.customers:,} customers, {args.clients} client threads on loopback: "
        f"{served:,} reads ({served / elapsed:.0f}/s)."
    )
    print()
    print(table(tallies, recalcs.tally))
    print()
    mean = f", {sum(succeeded) / len(succeeded):.1f} s each on average" if succeeded else ""
    print(
        f"Recalculations: {len(recalcs.started)} started, {len(succeeded)} succeeded{mean}, "
        f"{len(failed)} failed, {unfinished} unfinished; {recalcs.joined} POSTs found one "
        f"active; readers were served {len(runs_seen)} different runs."
    )
    problems = [e for t in (*tallies.values(), recalcs.tally) for e in t.examples]
    problems += [f"run failed: {error}" for error in failed]
    if unfinished:
        problems.append(f"{unfinished} runs did not finish")
    if problems:
        print("\nFirst problems:\n" + "\n".join(f"- {p}" for p in problems[:15]))
        print("\nThe processes' last log lines:\n" + stack.log_tails())
    return 1 if problems else 0


def _terminate(_signum: int, _frame: object) -> NoReturn:
    raise SystemExit(143)  # unwinds through Stack.__exit__: processes and database go


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return soak(args)
    except StackError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
