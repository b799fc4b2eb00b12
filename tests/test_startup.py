"""The entry points (wsgi.py for `flask` and gunicorn, worker.py for Celery)
build the app with the cyclic garbage collector paused, then freeze what they
built and turn the collector back on (wsgi.py says why)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rfm_service import ConfigError, create_app

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import gc, json, {module}; "
    "print(json.dumps({{'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count()}}))"
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    env.update(
        RFM_PROFILE="embedded",
        DATABASE_URL=f"sqlite:///{tmp_path / 'startup.sqlite3'}",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


@pytest.mark.parametrize("module", ["wsgi", "worker"])
def test_entry_point_freezes_the_app_and_leaves_collection_on(module: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["enabled"] is True
    # The modules and the app: tens of thousands of objects (none without the freeze).
    assert state["frozen"] > 10_000


def _misconfigured(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``argv`` run with a setting the service refuses (RFM_INDEX_WORKERS=-1)."""
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=_env(tmp_path, RFM_INDEX_WORKERS="-1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("module", "status"), [("wsgi", 3), ("worker", 1)])
def test_a_configuration_error_still_exits_with_its_reason(
    module: str, status: int, tmp_path: Path
) -> None:
    done = _misconfigured([sys.executable, "-c", f"import {module}"], tmp_path)
    assert done.returncode == status
    assert done.stderr.strip().splitlines()[-1] == (
        "rfm-service: configuration error: RFM_INDEX_WORKERS must be 0 or more"
    )


def test_gunicorn_stops_on_a_configuration_error(tmp_path: Path) -> None:
    """It once restarted the failing worker several times a second, forever."""
    argv = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", "127.0.0.1:0", "wsgi:app"]
    done = _misconfigured(argv, tmp_path)
    assert done.returncode != 0
    reason = "rfm-service: configuration error: RFM_INDEX_WORKERS must be 0 or more"
    assert 1 <= done.stderr.count(reason) <= 2  # once per worker that started


@pytest.mark.parametrize(
    "setting, reason",
    [
        ({"DATABASE_URL": "garbage"}, "DATABASE_URL is not a database URL: 'garbage'"),
        # A typo must not print the password (it goes to the service's log).
        (
            {"DATABASE_URL": "postgresql//rfm:s3cret@db:5432/rfm"},
            "DATABASE_URL is not a database URL: 'postgresql//rfm:***@db:5432/rfm'",
        ),
        (
            {"DATABASE_URL": " postgresql://rfm:p@ss:w@db/rfm"},
            "DATABASE_URL is not a database URL: ' postgresql://rfm:***@db/rfm'",
        ),
        (
            {"DATABASE_URL": "postgresql:rfm:s3cret@db/rfm"},
            "DATABASE_URL is not a database URL: '***@db/rfm'",
        ),
        # Not a traceback from int() (exit 1).
        (
            {"DATABASE_URL": "postgresql://rfm:s3cret@db:port/rfm"},
            "DATABASE_URL is not a database URL: 'postgresql+psycopg2://rfm:***@db:port/rfm'",
        ),
        (
            {"DATABASE_URL": "mysql://db/rfm"},
            "DATABASE_URL must be a PostgreSQL or SQLite URL, got mysql://",
        ),
        ({"RFM_TIME_LIMIT": "0"}, "RFM_TIME_LIMIT must be 1 or more, got 0"),
        ({"RFM_TIME_LIMIT": "-5"}, "RFM_TIME_LIMIT must be 1 or more, got -5"),
        ({"RFM_QUEUED_TIMEOUT": "0"}, "RFM_QUEUED_TIMEOUT must be 1 or more, got 0"),
        ({"RFM_MAX_BODY_BYTES": "-1"}, "RFM_MAX_BODY_BYTES must be 1 or more, got -1"),
        # Was raised to 2 without a word.
        ({"RFM_KEEP_RUNS": "1"}, "RFM_KEEP_RUNS must be 2 or more, got 1"),
        ({"RFM_KEEP_RUNS": "0"}, "RFM_KEEP_RUNS must be 2 or more, got 0"),
        (
            {"RFM_QUERY_WORKERS": "100000"},
            "RFM_QUERY_WORKERS must be at most 1024 (PostgreSQL's limit)",
        ),
        (
            {"RFM_WORK_MEM": "lots"},
            "RFM_WORK_MEM must be a PostgreSQL memory size such as 256MB, got 'lots'",
        ),
        # PostgreSQL reads these but refuses them for work_mem or
        # maintenance_work_mem: every calculation failed.
        *(
            (
                {"RFM_WORK_MEM": size},
                "RFM_WORK_MEM must be from 1MB to 2147483647kB (PostgreSQL's range for "
                f"maintenance_work_mem), got {size!r}",
            )
            for size in ("0", "64kB", "1023kB", "2TB", "3TB", "99999999999GB")
        ),
        # Celery took it for amqp://garbage and retried forever; the API's POST
        # /api/rfm/calculate/ answered 500.
        (
            {"REDIS_URL": "garbage"},
            "REDIS_URL must be a redis://, rediss:// or unix:// URL, got 'garbage'",
        ),
        (
            {"REDIS_URL": "http://u:s3cret@cache:6379/0"},
            "REDIS_URL must be a redis://, rediss:// or unix:// URL, got 'http://u:***@cache:6379/0'",
        ),
        (
            {"RFM_SEGMENT_RULES": "rules.yaml"},
            "invalid segment rules: rules.yaml: a segment rules file is .toml or .json",
        ),
    ],
)
def test_a_setting_the_service_cannot_run_with_stops_it_at_start(
    setting: dict[str, str], reason: str, tmp_path: Path
) -> None:
    """Before, each started, and every calculation (or request) then failed."""
    with pytest.raises(ConfigError) as refused:
        create_app(env={"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", **setting})
    assert str(refused.value) == reason


@pytest.mark.parametrize(
    "size", ["1MB", "1024kB", "256MB", "1GB", "4096", "512 MB", "2147483647kB", "1048576B"]
)
def test_memory_sizes_postgresql_reads_are_taken(size: str, tmp_path: Path) -> None:
    app = create_app(env={"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "RFM_WORK_MEM": size})
    assert app.config["RFM_WORK_MEM"] == size
