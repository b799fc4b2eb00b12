"""``make bench``: measure the project against its floor and a pandas peer,
serve it under load, time its import, check the targets, write BENCHMARKS.md.

    python -m bench.run                      # 10k, 100k and 1M customers
    python -m bench.run --sizes 10k,100k     # a quicker run
    python -m bench.run --duration 5         # shorter wrk measurements

Exit status 0 whether targets pass or miss (the report says which); 1 when a
measurement itself failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
from pathlib import Path

from . import datasets, explain, importing, load, markdown, recalc, report, server, targets
from .common import DATA, ROOT, SubprocessFailed, kill_children, log, median, settle
from .datasets import Size, parse_size

IMPORT_MAX_ROWS = 12_000_000  # about 10 orders per customer: the 1M dataset fits


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10k,100k,1M", help="comma-separated (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="rounds per size (median)")
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk measurement")
    p.add_argument("--warmup", type=float, default=2, help="seconds of wrk warm-up")
    p.add_argument(
        "--http-rounds", type=int, default=3, help="interleaved rounds of every wrk measurement"
    )
    p.add_argument("--connections", type=int, default=16, help="wrk connections")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    p.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP measurements")
    p.add_argument(
        "--auth",
        action="store_true",
        help="serve with RFM_AUTH=on and send a read token (default: the embedded profile's off)",
    )
    p.add_argument("--no-import", action="store_true", help="skip the import measurement")
    p.add_argument(
        "--import-size", help="dataset whose orders are imported (default: the largest run)"
    )
    p.add_argument(
        "--import-repeats", type=int, default=3, help="rounds of the import and its COPY floor"
    )
    p.add_argument("--calc-timeout", type=float, default=1800, help="seconds per calculation")
    p.add_argument("--seed-timeout", type=float, default=3600, help="seconds per seeding")
    p.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument(
        "--prepare-only", action="store_true", help="build or check the datasets, then stop"
    )
    args = p.parse_args(argv)
    try:
        sizes = {s.customers: s for s in map(parse_size, args.sizes.split(","))}
        args.size_list = [sizes[n] for n in sorted(sizes)]
        args.import_size = parse_size(args.import_size) if args.import_size else None
    except ValueError as exc:
        p.error(str(exc))
    if min(args.repeats, args.duration, args.http_rounds) < 1:
        p.error("--repeats, --duration and --http-rounds must be at least 1")
    return args


def measure_recalculation(size: Size, args: argparse.Namespace) -> dict:
    info = datasets.ensure(size, args.seed_timeout)
    database = size.database
    datasets.reset_runs(database)
    app = recalc.make_app(database)
    log(f"{size.label}: warm-up calculation")
    recalc.project(database, args.calc_timeout)
    cells = recalc.prepare_peer(app, database)
    rounds = []
    for i in range(args.repeats):
        settle()
        project = recalc.project(database, args.calc_timeout)
        settle()
        floor = recalc.floor(app)
        settle()
        peer = recalc.pandas(database, cells, args.calc_timeout)
        rounds.append((project, floor, peer))
        log(
            f"{size.label} round {i + 1}: calculate-rfm {project['seconds']:.2f} s "
            f"(run {project['run_seconds']:.2f} s, {project['max_rss_kb'] / 1024:.0f} MB), "
            f"bare {floor['seconds']:.2f} s, pandas {peer['seconds']:.2f} s "
            f"({peer['max_rss_kb'] / 1024:.0f} MB)"
        )
    mismatches = recalc.peer_mismatches(database)
    log(f"{size.label}: pandas peer differs from the project in {mismatches} row(s)")
    with app.app_context():
        from rfm_service.extensions import db

        db.engine.dispose()
    projects, floors, peers = zip(*rounds, strict=True)
    return {
        "customers": size.customers,
        "orders": info["orders"],
        "reused": info["reused"],
        "seed_seconds": info["seed_seconds"],
        "table_sizes": datasets.table_sizes(database),
        "customers_scored": projects[-1]["customers_scored"],
        "project_seconds": median([p["seconds"] for p in projects]),
        "project_run_seconds": median([p["run_seconds"] for p in projects]),
        "floor_seconds": median([f["seconds"] for f in floors]),
        "pandas_seconds": median([p["seconds"] for p in peers]),
        "project_rss_kb": max(p["max_rss_kb"] for p in projects),
        "pandas_rss_kb": max(p["max_rss_kb"] for p in peers),
        "pandas_phases": peers[-1]["phases"],
        "peer_mismatches": mismatches,
        "rounds": [(p["seconds"], f["seconds"], q["seconds"]) for p, f, q in rounds],
    }


def measure_http(
    sizes: list[Size],
    args: argparse.Namespace,
    settings: server.LoadSettings,
    sizes_measured: dict[str, dict],
) -> dict:
    chosen = [sizes[0]] if len(sizes) == 1 else [sizes[0], sizes[-1]]
    log(f"HTTP at {' and '.join(s.label for s in chosen)}: {settings.describe()}")
    databases = {size.label: size.database for size in chosen}
    # Reads during a recalculation are measured over twice the calculation's
    # idle time, so that one whole run, slowed by the load, finishes inside.
    window = 2 * sizes_measured[chosen[-1].label]["project_seconds"]
    return load.suite(databases, settings, args.http_rounds, args.calc_timeout, window)


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: servers are stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    sizes: list[Size] = args.size_list
    busy = report.busy_neighbours()
    if busy:
        log(f"other busy processes share this machine: {', '.join(busy)}")
    if args.prepare_only:
        for size in sizes:
            datasets.ensure(size, args.seed_timeout)
        return 0
    settings = server.LoadSettings(
        workers=args.workers,
        threads=args.threads,
        wrk_threads=args.wrk_threads,
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        auth=args.auth,
    )
    wrk = None
    if not args.no_http:
        server.ensure_wrk()
        wrk = server.wrk_version()
    results: dict = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "load": [os.getloadavg()[0]],
        "neighbours": [busy],
        "code": report.code_version(),
        "machine": report.machine(wrk),
        "settings": {
            "repeats": args.repeats,
            "seed": datasets.SEED,
            "orders_per_customer": datasets.ORDERS_PER_CUSTOMER,
            "end_date": datasets.END_DATE,
            "load": settings.describe(),
            "http_rounds": args.http_rounds,
        },
        "sizes": {},
    }
    # The plans live beside the report, like the chart below.
    plans = args.output.resolve().parent / "bench" / "plans"
    try:
        explain.clear(plans)
        for size in sizes:
            results["sizes"][size.label] = measure_recalculation(size, args)
        if not args.no_http:
            results["http"] = measure_http(sizes, args, settings, results["sizes"])
        if not args.no_import:
            results["import"] = run_import(sizes, args, results, plans)
        largest = sizes[-1]
        log(f"{largest.label}: plans, a timed calculation and a profile into {plans}")
        app = recalc.make_app(largest.database)
        results["plans"] = explain.capture(app, largest.database, largest.label, plans)
    except (SubprocessFailed, RuntimeError) as exc:
        log(f"FAILED: {exc}")
        return 1
    results["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    results["load"].append(os.getloadavg()[0])
    results["neighbours"].append(report.busy_neighbours())
    found = targets.evaluate(results)
    # The chart and the plans live beside the report: a trial run written
    # elsewhere (--output /tmp/x/BENCHMARKS.md) leaves the committed ones alone.
    chart = report.chart(results, args.output.resolve().parent / "bench" / "recalculation.png")
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "results.json").write_text(json.dumps(results, indent=2, default=str))
    args.output.write_text(markdown.render(results, found, chart, args.output), encoding="utf-8")
    print()
    for target in found:
        print(target.line())
    print(f"\nwrote {args.output}, {chart} and {DATA / 'results.json'}")
    return 0


def run_import(sizes: list[Size], args: argparse.Namespace, results: dict, plans: Path) -> dict:
    size = args.import_size or sizes[-1]
    note = ""
    if args.import_size is None:
        fitting = [s for s in sizes if results["sizes"][s.label]["orders"] <= IMPORT_MAX_ROWS]
        if fitting and fitting[-1] is not size:
            note = f"(The {size.label} dataset's orders exceed {IMPORT_MAX_ROWS:,} rows.)"
            size = fitting[-1]
    if size.label not in results["sizes"]:
        datasets.ensure(size, args.seed_timeout)
    results["settings"]["import_note"] = note
    return importing.run(size, args.import_repeats, args.calc_timeout * 2, plans)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        kill_children()
        log("interrupted")
        sys.exit(130)
