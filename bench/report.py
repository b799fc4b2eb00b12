"""The machine's description, the chart and BENCHMARKS.md, all from one
run's results (nothing in the report is typed by hand)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

import psutil

from rfm_service.config import load_config

from .common import ROOT, query, service_env

# The service settings that shape a calculation, as the benchmark runs it.
CALC_SETTINGS = ("RFM_WORK_MEM", "RFM_QUERY_WORKERS", "RFM_INDEX_WORKERS", "RFM_TIME_LIMIT")

PG_SETTINGS = (
    "shared_buffers", "work_mem", "maintenance_work_mem", "effective_cache_size",
    "temp_buffers", "max_parallel_workers_per_gather", "max_worker_processes", "jit",
    "random_page_cost", "synchronous_commit", "fsync", "wal_level", "max_wal_size",
)  # fmt: skip
PACKAGES = ("flask", "sqlalchemy", "psycopg2-binary", "gunicorn", "pandas", "numpy", "matplotlib")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _autogroup() -> str:
    """The kernel's per-session CPU groups: on, the calculation's backend
    shares the postgres session's group with every read backend, and reads
    during a run wait longer (README, "Benchmark")."""
    try:
        value = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "unknown"
    return {"0": "off", "1": "on"}.get(value, value)


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout


def code_version() -> dict:
    changed = [line[3:] for line in _git("status", "--porcelain").splitlines() if line.strip()]
    return {
        "commit": _git("rev-parse", "--short", "HEAD").strip() or "unknown",
        "uncommitted": [p for p in changed if not p.startswith(("bench/", "BENCHMARKS.md"))],
    }


def machine(wrk: str | None) -> dict:
    (version,) = query("postgres", "SELECT version()")[0]
    settings = {
        name: query("postgres", "SELECT current_setting(%s)", [name])[0][0] for name in PG_SETTINGS
    }
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "os": platform.platform(),
        "sched_autogroup": _autogroup(),
        "python": platform.python_version(),
        "postgresql": version.split(" on ")[0],
        "pg_settings": settings,
        "calc_settings": calc_settings(),
        "packages": packages,
        "wrk": wrk,
    }


def calc_settings() -> dict[str, str]:
    config = load_config(str(ROOT / "instance"), service_env("postgres"))
    return {name: str(config[name]) for name in CALC_SETTINGS}


def busy_neighbours(seconds: float = 2.0, threshold: float = 20.0) -> list[str]:
    """Other processes using more than ``threshold`` % of a core right now:
    they share the machine with the benchmark and make its numbers noisier."""
    mine = os.getpid()
    procs = [p for p in psutil.process_iter(["name", "cmdline"]) if p.pid != mine]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(seconds)
    busy = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            share = p.cpu_percent(None)
            if share >= threshold:
                words = [Path(w).name for w in (p.info["cmdline"] or [p.info["name"]])[:3]]
                busy.append(f"{' '.join(words)[:60]} ({share:.0f}%)")
    return busy


def chart(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sizes = results["sizes"]
    customers = [s["customers"] for s in sizes.values()]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    series = (
        ("project_seconds", "flask calculate-rfm (end to end)", "o-"),
        ("floor_seconds", "bare scoring statement (floor)", "s--"),
        ("pandas_seconds", "pandas round trip", "^-."),
    )
    for key, label, style in series:
        values = [s[key] for s in sizes.values()]
        ax.plot(customers, values, style, label=label)
        for x, y in zip(customers, values, strict=True):
            ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(6, -3), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xticks(customers, list(sizes))
    ax.minorticks_off()
    ax.set_xlabel("customers (about 10 orders each)")
    ax.set_ylabel(f"seconds (median of {results['settings']['repeats']})")
    ax.set_title("RFM recalculation time against dataset size")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
