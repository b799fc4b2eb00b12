"""HTTP load: the service, a bare Flask app and the service's by-id read
alone (``roundtrip_app``) under gunicorn, every endpoint at the smallest and
the largest size in interleaved rounds, and reads while ``flask
calculate-rfm`` runs."""

from __future__ import annotations

import contextlib
import math
import threading
import time

from .common import SubprocessFailed, kill_children, log, median, query, run_flask
from .datasets import AS_OF
from .server import LoadSettings, Served, gunicorn, wrk


def measure(
    base: Served,
    paths: list[str],
    settings: LoadSettings,
    name: str,
    token: str | None = None,
    warm: bool = True,
) -> dict:
    if warm and settings.warmup > 0:
        wrk(base, paths, settings, settings.warmup, f"{name}_warmup", token)
    result = wrk(base, paths, settings, settings.duration, name, token)
    log(
        f"  {name}: {result['rps']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms, errors {result['errors']}; CPU per request: "
        f"server {result['server_cpu_ms']:.3f} ms, database {result['db_cpu_ms']:.3f} ms"
    )
    return result


def combine(samples: list[dict]) -> dict:
    """Rounds of one measurement: medians of rates and latencies, sums of counts."""
    result = {
        key: median([s[key] for s in samples])
        for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "server_cpu_ms", "db_cpu_ms")
    }
    result["requests"] = sum(s["requests"] for s in samples)
    result["errors"] = sum(s["errors"] for s in samples)
    result["rounds"] = [{k: s[k] for k in ("rps", "p50_ms", "p99_ms", "errors")} for s in samples]
    if "recalculations" in samples[0]:
        result["recalculations"] = sum(s["recalculations"] for s in samples)
        result["window_covered"] = min(s["window_covered"] for s in samples)
        result["window_seconds"] = min(s["window_seconds"] for s in samples)
        result["runs_finished"] = min(s["runs_finished"] for s in samples)
    return result


def api_paths(database: str, sample: int = 1000) -> dict[str, list[str]]:
    (count,) = query(database, "SELECT customers_scored FROM rfm_runs WHERE is_current")[0]
    ids = [
        row[0]
        for row in query(
            database,
            "SELECT s.customer_id FROM rfm_scores s JOIN rfm_runs r "
            "ON r.id = s.run_id AND r.is_current ORDER BY md5(s.customer_id::text) LIMIT %s",
            [sample],
        )
    ]
    last_page = max(1, math.ceil(count / 50))
    return {
        "detail": [f"/api/rfm/{i}/" for i in ids],
        "list_first": ["/api/rfm/"],
        "list_last": [f"/api/rfm/?page={last_page}"],
        "statistics": ["/api/rfm/statistics/"],
        "roundtrip": [f"/{i}/" for i in ids],  # bench/roundtrip_app.py
    }


ENDPOINTS = ("bare", "detail", "roundtrip", "list_first", "list_last", "statistics")
# Served by their own apps; the service serves the rest.
APPS = {"bare": "bench.bare_app:app", "roundtrip": "bench.roundtrip_app:app"}


def suite(
    databases: dict[str, str],
    settings: LoadSettings,
    rounds: int,
    calc_timeout: float,
    busy_window_s: float = 0,
) -> dict:
    """Every endpoint at every size, in ``rounds`` interleaved rounds (all
    servers up at once, so compared numbers are measured minutes apart at
    most), then idle and during-a-recalculation pairs at the last size, the
    latter over at least ``busy_window_s``. Each figure is the median of its
    rounds."""
    labels = list(databases)
    paths = {label: api_paths(db) for label, db in databases.items()}
    tokens: dict[str, str | None] = {label: None for label in labels}
    samples: dict[tuple[str, str], list[dict]] = {}
    with contextlib.ExitStack() as stack:
        any_db = databases[labels[-1]]  # the bare app touches no database
        bare_base = stack.enter_context(gunicorn(APPS["bare"], any_db, settings, "/", "bare"))
        bases = {}
        roundtrip = {}  # the by-id read alone, per size
        for label, database in databases.items():
            ready = paths[label]["roundtrip"][0]
            roundtrip[label] = stack.enter_context(
                gunicorn(APPS["roundtrip"], database, settings, ready, f"roundtrip_{label}")
            )
        for label, database in databases.items():
            if settings.auth:
                tokens[label] = _create_token(database)
                stack.callback(run_flask, database, "revoke-api-token", TOKEN_NAME, timeout=120)
            bases[label] = stack.enter_context(
                gunicorn("wsgi:app", database, settings, "/livez", f"api_{label}")
            )
        for i in range(rounds):
            log(f"HTTP round {i + 1} of {rounds}")
            for name in ENDPOINTS:
                for label in labels:
                    base = {"bare": bare_base, "roundtrip": roundtrip[label]}.get(
                        name, bases[label]
                    )
                    endpoint = ["/"] if name == "bare" else paths[label][name]
                    samples.setdefault((label, name), []).append(
                        measure(base, endpoint, settings, f"{name}@{label}", tokens[label], i == 0)
                    )
        last = labels[-1]
        for i in range(rounds):  # idle and busy back to back, under the same load
            log(f"reads during a recalculation at {last}, round {i + 1} of {rounds}")
            detail = paths[last]["detail"]
            idle = wrk(
                bases[last], detail, settings, settings.duration, "detail_idle", tokens[last]
            )
            log(f"  detail, idle: p99 {idle['p99_ms']:.2f} ms, errors {idle['errors']}")
            samples.setdefault((last, "detail_idle"), []).append(idle)
            samples.setdefault((last, "detail_during_recalc"), []).append(
                during_recalc(
                    bases[last],
                    databases[last],
                    paths[last]["detail"],
                    settings,
                    calc_timeout,
                    tokens[last],
                    max(settings.duration, busy_window_s),
                )
            )
    found: dict = {label: {"api": {"last_page": paths[label]["list_last"][0]}} for label in labels}
    for (label, name), runs in samples.items():
        if name in APPS:
            found[label][name] = combine(runs)
        else:
            found[label]["api"][name] = combine(runs)
    return found


TOKEN_NAME = "rfm-bench"


def _create_token(database: str) -> str:
    """A read token for the load (``flask create-api-token`` prints it alone on stdout)."""
    with contextlib.suppress(SubprocessFailed):  # left over by an interrupted run
        run_flask(database, "revoke-api-token", TOKEN_NAME, timeout=120)
    created = run_flask(
        database, "create-api-token", "--name", TOKEN_NAME, "--scope", "read", timeout=120
    )
    return created.stdout.strip().splitlines()[-1]


def during_recalc(
    base: Served,
    database: str,
    paths: list[str],
    settings: LoadSettings,
    calc_timeout: float,
    token: str | None,
    window_s: float,
) -> dict:
    """The detail endpoint under the same load while ``flask calculate-rfm``
    runs back to back, measured for ``window_s`` from the moment the first
    run is running: long enough for that run to finish inside the window,
    so its every step (scoring, index builds, attach, statistics, the flip
    to current) is read under."""
    stop = threading.Event()
    calcs: list[float] = []
    failures: list[str] = []

    def recalculate() -> None:
        while not stop.is_set():
            try:
                calcs.append(
                    run_flask(
                        database, "calculate-rfm", "--as-of", AS_OF, timeout=calc_timeout
                    ).seconds
                )
            except SubprocessFailed as exc:
                failures.append(str(exc))
                return

    (before,) = query(database, "SELECT coalesce(max(id), 0) FROM rfm_runs")[0]
    worker = threading.Thread(target=recalculate, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not failures:
            rows = query(database, "SELECT status FROM rfm_runs WHERE id > %s", [before])
            if any(status == "running" for (status,) in rows):
                break
            time.sleep(0.05)
        opened = time.time()
        result = wrk(base, paths, settings, window_s, "detail_during_recalc", token)
        window = (opened, time.time())
    except BaseException:
        stop.set()
        kill_children()  # do not wait for a calculation of an interrupted benchmark
        raise
    finally:
        stop.set()
        worker.join(timeout=calc_timeout + 30)
    if failures:
        raise RuntimeError(f"recalculation failed under load: {failures[0]}")
    intervals = query(
        database,
        "SELECT EXTRACT(EPOCH FROM started_at)::float, EXTRACT(EPOCH FROM finished_at)::float "
        "FROM rfm_runs WHERE id > %s AND started_at IS NOT NULL",
        [before],
    )
    covered = sum(
        max(0.0, min(end or window[1], window[1]) - max(start, window[0]))
        for start, end in intervals
    )
    result["window_covered"] = covered / (window[1] - window[0])
    result["window_seconds"] = window[1] - window[0]
    # The first run was running when the window opened: one that finished in
    # it was read under from its start to its end.
    result["runs_finished"] = sum(1 for _, end in intervals if end and end <= window[1])
    result["recalculations"] = len(calcs)
    result["recalculation_seconds"] = calcs
    log(
        f"  detail during recalculation: {result['rps']:,.0f} req/s, "
        f"p99 {result['p99_ms']:.2f} ms, errors {result['errors']}, {len(calcs)} run(s) "
        f"busy {100 * result['window_covered']:.0f}% of the {result['window_seconds']:.0f} s "
        f"window, {result['runs_finished']} finished in it"
    )
    return result
