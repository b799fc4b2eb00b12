"""Servers and load: gunicorn on a free loopback port (always stopped on
the way out, whatever happens) and wrk with a generated Lua script (random
paths per request, and a ``done`` hook that prints the numbers as one JSON line),
and the CPU time the server and the database spend on a measurement."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psutil

from .common import BIN, DATA, ROOT, log, service_env


@dataclasses.dataclass(frozen=True)
class LoadSettings:
    workers: int = 2
    threads: int = 4
    wrk_threads: int = 2
    connections: int = 16
    duration: float = 10.0  # seconds per measurement
    warmup: float = 2.0
    auth: bool = False  # RFM_AUTH=on and a read token on every request

    def gunicorn_args(self) -> list[str]:
        return [
            "--workers", str(self.workers), "--worker-class", "gthread",
            "--threads", str(self.threads), "--log-level", "warning",
            "--timeout", "120", "--graceful-timeout", "5",
            # A socket per worker, balanced by the kernel: on one shared
            # socket the first worker to wake accepted all of wrk's keep-alive
            # connections in about one measurement in three, and the other
            # worker sat idle (throughput halved, bare endpoint and API alike).
            "--reuse-port",
        ]  # fmt: skip

    def describe(self) -> str:
        return (
            f"gunicorn --workers {self.workers} --worker-class gthread --threads {self.threads} "
            "--reuse-port; "
            f"wrk -t{self.wrk_threads} -c{self.connections} -d{self.duration:g}s --timeout 10s "
            f"(after a {self.warmup:g} s warm-up in the first round), loopback"
            + ("; RFM_AUTH=on, every request with a read token" if self.auth else "")
        )


LUA = """
local paths = {%(paths)s}
%(headers)s
local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
end
function init(args)
  math.randomseed(7919 * (tonumber(tid) or 1))
end
function request()
  return wrk.format("GET", paths[math.random(#paths)])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, ' ..
    '"p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def ensure_wrk() -> str:
    """wrk, installed from Debian's package when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is missing: installing the Debian package")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, timeout=600, check=False).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, timeout=600, check=True)
        subprocess.run(install, env=env, timeout=600, check=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk could not be installed")
    return found


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0].strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer {url} within {timeout:.0f} s")


@dataclasses.dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:<port>
    pid: int  # gunicorn's master; its workers are its children


@dataclasses.dataclass(frozen=True)
class CpuSnapshot:
    server: float  # CPU seconds (user + system) of the gunicorn master and workers
    database: float  # CPU seconds of every PostgreSQL server process on this machine


def cpu_snapshot(served: Served) -> CpuSnapshot:
    """CPU used so far, read before and after a measurement: their difference
    per request says whether a request's time goes to the worker (Python) or
    to the database. The database is local (127.0.0.1), so its backends are
    processes here; a process that ended in between is not counted."""

    def seconds(procs: list[psutil.Process]) -> float:
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    try:
        master = psutil.Process(served.pid)
        tree = [master, *master.children(recursive=True)]
    except psutil.Error:
        tree = []
    postgres = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]
    return CpuSnapshot(seconds(tree), seconds(postgres))


@contextlib.contextmanager
def gunicorn(
    app: str, database: str, settings: LoadSettings, ready_path: str, name: str
) -> Iterator[Served]:
    """Serve ``app`` on a free loopback port; always stopped on exit."""
    port = _free_port()
    DATA.mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", *settings.gunicorn_args(), app]
    env = service_env(database, RFM_AUTH="on" if settings.auth else "off")
    with open(DATA / f"gunicorn_{name}.log", "w") as logfile:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=logfile,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(base + ready_path, proc, timeout=60)
            yield Served(base, proc.pid)
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wrk(
    served: Served,
    paths: list[str],
    settings: LoadSettings,
    duration: float,
    name: str,
    token: str | None = None,
) -> dict:
    script = DATA / f"wrk_{name}.lua"
    headers = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    script.write_text(LUA % {"paths": ", ".join(json.dumps(p) for p in paths), "headers": headers})
    cmd = [
        "wrk", f"-t{settings.wrk_threads}", f"-c{settings.connections}",
        f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", str(script), served.url,
    ]  # fmt: skip
    before = cpu_snapshot(served)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = cpu_snapshot(served)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout}")
    data = json.loads(line.removeprefix("BENCHJSON "))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    per_request = 1000 / max(1, data["requests"])  # seconds in all -> ms per request
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "max_ms": data["max_us"] / 1000,
        "requests": data["requests"],
        "errors": errors,
        "server_cpu_ms": (after.server - before.server) * per_request,
        "db_cpu_ms": (after.database - before.database) * per_request,
        "error_detail": {k: data[k] for k in ("connect", "read", "write", "status", "timeout")},
    }
