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


@pytest.mark.parametrize("module", ["wsgi", "worker"])
def test_a_configuration_error_still_exits_with_its_reason(module: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        env=_env(tmp_path, RFM_INDEX_WORKERS="-1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "rfm-service: configuration error: RFM_INDEX_WORKERS must be 0 or more"
    )
