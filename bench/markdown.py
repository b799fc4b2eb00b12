"""BENCHMARKS.md from one run's results."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .common import ROOT
from .targets import Target


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _mb(kb: float) -> str:
    return f"{kb / 1024:,.0f}"


def _s(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:,.2f}"


_base = ROOT  # links are relative to the report's folder (set by render)


def _rel(path: Path | str) -> str:
    return os.path.relpath(Path(path).resolve(), _base)


def _execution_time(path: Path) -> str:
    found = re.findall(r"Execution Time: ([\d.]+) ms", Path(path).read_text())
    total = sum(float(ms) for ms in found)
    if not found:
        return "no plan"
    return f"{total / 1000:,.2f} s" if total >= 1000 else f"{total:,.2f} ms"


def calc_settings(settings: dict[str, str]) -> str:
    """``tune_session``'s settings for the calculation, from the service's
    configuration as measured (``report.calc_settings``)."""
    return (
        f"`tune_session`: `work_mem` and `maintenance_work_mem={settings['RFM_WORK_MEM']}`, "
        "`enable_hashagg=off`, `jit=off`, "
        f"`max_parallel_workers_per_gather={settings['RFM_QUERY_WORKERS']}`, "
        f"`max_parallel_maintenance_workers={settings['RFM_INDEX_WORKERS']}`, "
        f"`statement_timeout={settings['RFM_TIME_LIMIT']}s` "
        "(RFM_WORK_MEM, RFM_QUERY_WORKERS, RFM_INDEX_WORKERS, RFM_TIME_LIMIT defaults)"
    )


def render(results: dict, targets: list[Target], chart: Path | None, output: Path) -> str:
    global _base
    _base = output.resolve().parent
    m, code = results["machine"], results["code"]
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench.run`); every number below was measured",
        "in one run, none is typed by hand. Rerun it to refresh this file.",
        "",
        f"- Run: {results['started']} to {results['finished']} (UTC); "
        f"sizes {', '.join(results['sizes'])}.",
        f"- Code measured: commit `{code['commit']}`"
        + (
            f" plus uncommitted changes to {', '.join(f'`{p}`' for p in code['uncommitted'])}."
            if code["uncommitted"]
            else "."
        ),
        f"- Load average (1 min) at start {results['load'][0]:.2f}, at end "
        f"{results['load'][1]:.2f}. Other processes above 20% of a core at start: "
        f"{', '.join(results['neighbours'][0]) or 'none'}; at end: "
        f"{', '.join(results['neighbours'][1]) or 'none'}.",
        "",
        "## Machine",
        "",
    ]
    pg = ", ".join(f"`{k}={v}`" for k, v in m["pg_settings"].items())
    out += _table(
        ["what", "value"],
        [
            ["CPU", f"{m['cpu']}, {m['cores']} cores"],
            ["RAM", f"{m['ram_gib']:.1f} GiB"],
            ["OS", m["os"]],
            ["Kernel CPU autogroups (`sched_autogroup_enabled`)", m.get("sched_autogroup", "?")],
            ["Python", m["python"]],
            ["PostgreSQL", m["postgresql"]],
            ["PostgreSQL server settings (defaults)", pg],
            [
                "Calculation session settings",
                calc_settings(m["calc_settings"]),
            ],
            ["Packages", ", ".join(f"{k} {v}" for k, v in m["packages"].items())],
            ["Load generator", m["wrk"] or "not used"],
        ],
    )
    out += ["## Targets", ""]
    out += _table(
        ["target", "measured as", "ratio", "limit", "result"],
        [
            [
                t.name,
                t.how,
                f"{t.value:g}" if t.limit == 0 else f"{t.value:.3f}",
                f"{t.op} {t.limit:g}",
                f"**{t.verdict}**",
            ]
            for t in targets
        ],
    )
    out += _recalculation(results, chart)
    out += _http(results)
    out += _import(results)
    out += _plans(results)
    out += _method(results)
    return "\n".join(out).rstrip() + "\n"


def _recalculation(results: dict, chart: Path | None) -> list[str]:
    n = results["settings"]["repeats"]
    out = ["## Recalculation", ""]
    rows = []
    for label, s in results["sizes"].items():
        rows.append(
            [
                label,
                f"{s['customers']:,}",
                f"{s['orders']:,}",
                f"{s['customers_scored']:,}",
                _s(s["project_seconds"]),
                _s(s["project_run_seconds"]),
                _s(s["floor_seconds"]),
                _s(s["pandas_seconds"]),
                f"{s['project_seconds'] / s['floor_seconds']:.2f}",
                f"{s['project_seconds'] / s['pandas_seconds']:.2f}",
                _mb(s["project_rss_kb"]),
                _mb(s["pandas_rss_kb"]),
                f"{s['peer_mismatches']:,}",
            ]
        )
    out += _table(
        [
            "size", "customers", "orders", "scored",
            f"calculate-rfm, s (median of {n})", "of which the run, s",
            "bare statement, s", "pandas, s", "project / bare", "project / pandas",
            "calculate-rfm peak RSS, MB", "pandas peak RSS, MB", "pandas ≠ project rows",
        ],
        rows,
    )  # fmt: skip
    if chart is not None:
        out += [f"![Recalculation time against size]({_rel(chart)})", ""]
    out += [
        "*calculate-rfm*: the whole command as a user runs it (process start, run row, lock, "
        "`CREATE TABLE … AS` of the run's partition, keys and indexes, statistics, purge). "
        "*Of which the run*: `finished_at − started_at` of its run row. "
        "*Bare statement*: the scoring SELECT materialised with "
        "`CREATE TEMP TABLE … AS` under `tune_session`, timed around the statement. "
        "*pandas*: `bench/pandas_peer.py` as a subprocess, end to end. *pandas ≠ project rows*: "
        "rows where the peer's output differs from the project's current run (0 = identical).",
        "",
        "pandas phases (last round, seconds):",
        "",
    ]
    phase_names = list(next(iter(results["sizes"].values()))["pandas_phases"])
    out += _table(
        ["size", *phase_names],
        [
            [label, *(f"{s['pandas_phases'][p]:.2f}" for p in phase_names)]
            for label, s in results["sizes"].items()
        ],
    )
    rounds = [
        [label, *(f"{p:.2f} / {f:.2f} / {q:.2f}" for p, f, q in s["rounds"])]
        for label, s in results["sizes"].items()
    ]
    out += ["Every round (calculate-rfm / bare statement / pandas, seconds):", ""]
    out += _table(["size", *(f"round {i + 1}" for i in range(n))], rounds)
    return out


def _http(results: dict) -> list[str]:
    http = results.get("http")
    if not http:
        return []
    rounds = results["settings"]["http_rounds"]
    out = [
        "## HTTP",
        "",
        f"Server and load: {results['settings']['load']}. Every server runs at once and "
        f"each measurement is the median of {rounds} interleaved round(s); errors are summed.",
        "",
    ]
    rows = []
    names = {
        "bare": "bare Flask endpoint (`bench/bare_app.py`)",
        "detail": "`GET /api/rfm/{id}/` (random existing ids)",
        "roundtrip": "(context) its statement and response alone (`bench/roundtrip_app.py`)",
        "list_first": "`GET /api/rfm/` first page",
        "list_last": "`GET /api/rfm/?page=N` last page",
        "statistics": "`GET /api/rfm/statistics/`",
        "detail_idle": "`GET /api/rfm/{id}/` idle, right before each round of the next line",
        "detail_during_recalc": "`GET /api/rfm/{id}/` while `flask calculate-rfm` runs",
    }
    for label, found in http.items():
        measured = {"bare": found["bare"], **{k: v for k, v in found["api"].items() if k in names}}
        if "roundtrip" in found:  # absent from results written before it was measured
            measured = {**measured, "roundtrip": found["roundtrip"]}
            order = ["bare", "detail", "roundtrip"]
            measured = {k: measured[k] for k in order + [k for k in measured if k not in order]}
        for key, r in measured.items():
            name = names[key]
            if key == "list_last":
                name = f"`GET {found['api']['last_page']}` (last page)"
            rows.append(
                [
                    label,
                    name,
                    f"{r['rps']:,.0f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{r['errors']:,}",
                    _cpu(r, "server_cpu_ms"),
                    _cpu(r, "db_cpu_ms"),
                ]
            )
    out += _table(
        [
            "size",
            "endpoint",
            "requests/s",
            "p50, ms",
            "p99, ms",
            "errors",
            "server CPU per request, ms",
            "PostgreSQL CPU per request, ms",
        ],
        rows,
    )
    out += [
        "*CPU per request*: the CPU time (user + system) the gunicorn master and workers, "
        "and all PostgreSQL processes on this machine, used during the measurement, divided "
        "by the requests served (medians of the rounds; wrk's own CPU is not in either). "
        "It shows where an endpoint's time goes next to the bare endpoint's. While "
        "`flask calculate-rfm` runs, the PostgreSQL figure includes the calculation.",
        "",
    ]
    for label, found in http.items():
        alone = found.get("roundtrip")
        if alone:
            bare = found["bare"]["rps"]
            detail = found["api"]["detail"]["rps"]
            out += [
                f"At {label}, `GET /api/rfm/{{id}}/` serves {detail / bare:.3f}"
                f"× the bare endpoint's requests/s; its statement and response alone "
                f"(`bench/roundtrip_app.py`: the same prepared statement and the same JSON, on "
                "one psycopg2 connection per server thread as the service reads, without the "
                "extensions, the blueprint, the schema or the request hooks around them) serve "
                f"{alone['rps'] / bare:.3f}×: "
                "what one database round trip per request leaves of the framework's ceiling "
                "on this machine.",
                "",
            ]
    for label, found in http.items():
        during = found["api"].get("detail_during_recalc")
        if during:
            out += [
                f"At {label}, during the measurement `flask calculate-rfm` ran back to back "
                f"({during['recalculations']} run(s) in all; a run was in progress for at least "
                f"{100 * during['window_covered']:.0f}% of each measurement window). Each window "
                f"lasted at least {during['window_seconds']:.0f} s, twice a calculation's idle "
                f"time, and at least {during['runs_finished']} run(s) finished inside each, so "
                "every step of a run, from scoring to the flip to current, was read under.",
                "",
            ]
    return out


def _cpu(measured: dict, key: str) -> str:
    value = measured.get(key)  # absent from results written before it was measured
    return "" if value is None else f"{value:.3f}"


def _import(results: dict) -> list[str]:
    r = results.get("import")
    if not r:
        return []
    out = [
        "## Import",
        "",
        f"{r['rows']:,} orders of the {r['size']} dataset ({r['file_mb']:,.0f} MB of CSV), "
        "each time into an empty database built by the migrations, after a CHECKPOINT; "
        f"medians of {r['repeats']} rounds (the context row: one)."
        + (f" {note}" if (note := results["settings"].get("import_note")) else ""),
        "",
    ]
    out += _table(
        ["what", "seconds", "rows/s"],
        [
            [
                "`flask import-orders` (validation, staging, merge; subprocess, end to end)",
                _s(r["project_seconds"]),
                f"{r['project_rows_per_s']:,.0f}",
            ],
            [
                "bare `COPY … FROM STDIN` into a plain table of the same columns",
                _s(r["copy_seconds"]),
                f"{r['copy_rows_per_s']:,.0f}",
            ],
            [
                "(context) `COPY` into a table with the indexes and checks of `orders`",
                _s(r["indexed_copy_seconds"]),
                f"{r['indexed_copy_rows_per_s']:,.0f}",
            ],
        ],
    )
    t = r.get("timeline")
    if t:
        out += [
            f"Where the import's time goes: [{_rel(t['path'])}]({_rel(t['path'])}), every "
            f"statement of one more import (in-process, unmeasured above), "
            f"{t['total_ms'] / 1000:,.2f} s in all, of which {t['statements_ms'] / 1000:,.2f} s "
            "in SQL statements. Its slowest:",
            "",
        ]
        out += _table(
            ["ms", "statement"],
            [[f"{ms:,.1f}", f"`{text.replace('|', '/')}`"] for ms, text in t["slowest"]],
        )
    return out


PLAN_FILES = {
    "floor": "the bare statement (`CREATE TEMP TABLE … AS` the scoring SELECT)",
    "write": "the project's write path: `CREATE TABLE rfm_scores_rN AS` the scoring SELECT",
    "list_first": "the statements behind `GET /api/rfm/` (first page)",
    "list_last": "the statements behind the list's last page",
    "profile_detail": "cProfile of in-process `GET /api/rfm/{id}/` requests",
    "detail": "the prepared statement behind `GET /api/rfm/{id}/`: its round trip on a server "
    "thread's own connection against `SELECT 1`'s, and its plan",
}


def _plans(results: dict) -> list[str]:
    plans = results.get("plans")
    if not plans:
        return []
    out = [
        "## Plans and profiles",
        "",
        f"At {plans['size']}; EXPLAIN (ANALYZE, BUFFERS, SETTINGS) in transactions rolled "
        "back afterwards (EXPLAIN's own timing overhead makes these slower than the "
        "measurements above):",
        "",
    ]
    for name, path in plans["files"].items():
        timing = "" if name == "profile_detail" else f", {_execution_time(path)}"
        out.append(f"- [{_rel(path)}]({_rel(path)}): {PLAN_FILES.get(name, name)}{timing}")
    t = plans["timeline"]
    out += [
        f"- [{_rel(t['path'])}]({_rel(t['path'])}): one calculation through the run service "
        f"in-process, {t['total_ms'] / 1000:,.2f} s, of which {t['statements_ms'] / 1000:,.2f} s "
        "in SQL statements.",
        "",
    ]
    out += [
        f"Parallel workers launched: {plans['floor_workers']} for the bare statement, "
        f"{plans['write_workers']} for the project's write.",
        "",
    ]
    out += ["The slowest statements of that calculation:", ""]
    out += _table(
        ["ms", "statement"],
        [[f"{ms:,.1f}", f"`{text.replace('|', '/')}`"] for ms, text in t["slowest"]],
    )
    return out


def _method(results: dict) -> list[str]:
    st = results["settings"]
    return [
        "## Method",
        "",
        f"- Data: `flask seed-demo --customers N --seed {st['seed']} --orders-per-customer "
        f"{st['orders_per_customer']} --end-date {st['end_date']}` into a fresh database "
        "per size (`rfm_bench_<size>`), then `VACUUM (ANALYZE)`; reused on later runs "
        "while its comment records the same arguments and generator source. Orders are "
        "written in time order, as a shop fills its table.",
        f"- Every calculation uses `--as-of {st['end_date']}`. Before a size is measured "
        "its runs and scores are cleared and one unmeasured `flask calculate-rfm` warms "
        f"the caches; then {st['repeats']} rounds each run the project, the bare "
        "statement and the pandas peer in turn, each after a CHECKPOINT (so none pays "
        "for writing out what the one before left dirty); the medians are reported.",
        "- Peak memory: the maximum resident set size of the process itself, from "
        "`wait4()` (the largest of the rounds).",
        "- Subprocesses get `FLASK_APP=wsgi`, `DATABASE_URL=postgresql://postgres@"
        "127.0.0.1:5432/<db>`, `RFM_PROFILE=embedded` and no other `RFM_*` setting.",
        "- HTTP: wrk on the same two cores as the server and the database (loopback), "
        "so absolute numbers are lower than on a dedicated client; the ratios compare "
        "endpoints under the same conditions. Latencies are wrk's (closed loop).",
        "",
    ]
