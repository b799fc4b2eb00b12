"""docker-compose.yml, checked without Docker: the file declares the stack we
mean, and each service's command, run here with the compose environment
pointed at the local PostgreSQL and Redis, comes up (and its healthcheck
passes), then stops cleanly."""

from __future__ import annotations

import itertools
import json
import re
import socket
import subprocess
from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.celery_support import (
    BIN,
    ROOT,
    TEST_REDIS_URL,
    Service,
    control_app,
    empty_tables_bounded,
    free_port,
    http_get,
    service_env,
    start_service,
)
from tests.conftest import blank_pg_database

pytest_plugins = ["tests.celery_support"]

COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = ("migrate", "web", "worker", "beat", "flower")
# What an operator sets; everything else has a default in the compose file.
OPERATOR_VARIABLES = {"SECRET_KEY": "compose-test-secret", "FLOWER_BASIC_AUTH": "ops:pa55"}


# --- a YAML subset ----------------------------------------------------------------
# PyYAML is not a dependency. This reads the subset docker-compose.yml uses
# and rejects anything else, so the file cannot drift past what is checked.


class YamlSubsetError(ValueError):
    pass


def _strip_comment(line: str) -> str:
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _scalar(text: str, anchors: dict[str, Any]) -> Any:
    if text.startswith("*"):
        return deepcopy(anchors[text[1:]])
    if text.startswith(('"', "[")):
        return json.loads(text)  # double-quoted scalars and flow lists, JSON-style
    if text.startswith("'") and text.endswith("'") and len(text) > 1:
        return text[1:-1].replace("''", "'")
    if text[:1] in "&!|>{@`%" or text == "---" or ": " in text or text.endswith(":"):
        raise YamlSubsetError(f"unsupported YAML: {text!r}")
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return {"true": True, "false": False, "null": None, "~": None}.get(text, text)


def parse_yaml_subset(text: str) -> Any:
    """Block mappings and sequences, JSON-style quoted scalars and flow lists,
    plain scalars, anchors on block mappings, aliases and ``<<`` merges."""
    lines = [
        (len(raw) - len(raw.lstrip(" ")), raw.strip())
        for raw in map(_strip_comment, text.splitlines())
        if raw.strip()
    ]
    anchors: dict[str, Any] = {}

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                items.append(_scalar(lines[i][1][2:].strip(), anchors))
                i += 1
            return items, i
        merged: dict[str, Any] = {}
        explicit: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            match = re.fullmatch(r"([^\s:\"'][^:]*?|<<):(?:\s+(.*))?", lines[i][1])
            if not match:
                raise YamlSubsetError(f"unsupported YAML line: {lines[i][1]!r}")
            key, rest = match.group(1), (match.group(2) or "").strip()
            i += 1
            anchor = None
            if rest.startswith("&"):
                anchor, rest = rest[1:], ""
            if rest:
                value = _scalar(rest, anchors)
            elif i < len(lines) and lines[i][0] > indent:
                value, i = block(i, lines[i][0])
            else:
                value = None
            if anchor:
                anchors[anchor] = value
            if key == "<<":
                merged.update(value)
            elif key in explicit:
                raise YamlSubsetError(f"duplicate key {key!r}")
            else:
                explicit[key] = value
        if i < len(lines) and lines[i][0] > indent:
            raise YamlSubsetError(f"unexpected indentation at {lines[i][1]!r}")
        return {**merged, **explicit}, i

    document, end = block(0, 0)
    if end != len(lines):
        raise YamlSubsetError(f"unparsed YAML from {lines[end][1]!r}")
    return document


# --- compose's variable interpolation -----------------------------------------------


class MissingVariable(ValueError):
    pass


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """``${X}``, ``${X:-default}``, ``${X:?error}`` and ``$$`` as compose does."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        current = variables.get(name)
        unset = current is None or (current == "" and operator and operator.startswith(":"))
        if operator and operator.endswith("?") and unset:
            raise MissingVariable(f"{name}: {argument}")
        if operator and operator.endswith("-") and unset:
            return argument
        return current or ""

    return _VARIABLE.sub(substitute, value)


def compose(variables: dict[str, str] | None = None) -> dict[str, Any]:
    raw = parse_yaml_subset(COMPOSE_FILE.read_text())
    return interpolate(raw, OPERATOR_VARIABLES if variables is None else variables)


# --- the file declares the stack -------------------------------------------------------


def test_compose_declares_the_services_with_their_health_and_order() -> None:
    services = compose()["services"]

    assert set(services) == {"postgres", "redis", *APP_SERVICES}
    assert re.fullmatch(r"postgres:1[56](\D.*)?", services["postgres"]["image"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
    assert services["migrate"]["restart"] == "no"
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["beat"]["command"][:4] == ["celery", "-A", "worker", "beat"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "worker", "worker"]


def test_app_services_share_one_image_and_production_configuration() -> None:
    document = compose()
    services = document["services"]
    for name in APP_SERVICES:
        service = services[name]
        env = service["environment"]
        assert (service["build"], service["image"]) == (".", "rfm-service"), name
        assert env["RFM_PROFILE"] == "production" and env["RFM_EXECUTOR"] == "celery", name
        assert sa.make_url(env["DATABASE_URL"]).host == "postgres", name
        assert env["REDIS_URL"].startswith("redis://redis:6379/"), name
        assert env["SECRET_KEY"] == OPERATOR_VARIABLES["SECRET_KEY"], name
    # Every named volume a service mounts is declared.
    mounted = {
        volume.split(":")[0]
        for service in services.values()
        for volume in service.get("volumes", [])
    }
    assert mounted == set(document["volumes"])


def test_flower_credentials_come_from_the_environment_only() -> None:
    flower = compose()["services"]["flower"]

    assert flower["environment"]["FLOWER_BASIC_AUTH"] == OPERATOR_VARIABLES["FLOWER_BASIC_AUTH"]
    assert not any("basic" in arg or "pa55" in arg for arg in flower["command"])
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])  # loopback only


@pytest.mark.parametrize("missing", sorted(OPERATOR_VARIABLES))
def test_compose_refuses_to_start_without_operator_secrets(missing: str) -> None:
    variables = {k: v for k, v in OPERATOR_VARIABLES.items() if k != missing}
    with pytest.raises(MissingVariable, match=missing):
        compose(variables)
    with pytest.raises(MissingVariable, match=missing):
        compose({**variables, missing: ""})


def test_image_builds_from_pinned_requirements() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = {
        line.split("==")[0].lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line
    }

    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert "pip install -r requirements.txt" in dockerfile
    assert re.search(r"^USER \w+", dockerfile, re.MULTILINE)  # not root
    assert "FLASK_APP=wsgi" in dockerfile
    # Every program a service runs comes from a pinned requirement.
    programs = {compose()["services"][name]["command"][0] for name in APP_SERVICES}
    assert programs <= pinned, programs - pinned
    assert {"flower", "psycopg2-binary", "redis"} <= pinned


def test_yaml_subset_agrees_with_pyyaml() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    text = COMPOSE_FILE.read_text()
    assert parse_yaml_subset(text) == yaml.safe_load(text)


@pytest.mark.parametrize("text", ["a: |\n  x\n", "a: {b: 1}\n", "a:\n  - b: 1\n", "a: !!str 1\n"])
def test_yaml_subset_rejects_what_it_does_not_read(text: str) -> None:
    with pytest.raises((YamlSubsetError, ValueError)):
        parse_yaml_subset(text)


# --- each service's command, run here ------------------------------------------------


def local_argv(argv: list[str], replacements: dict[str, str]) -> list[str]:
    """The compose command with container addresses and paths made local.
    Each replaced text must be in the command, so a changed compose file
    fails here instead of being run with the wrong arguments."""
    joined = "\0".join(argv)
    for container, local in replacements.items():
        assert container in joined, f"{container!r} not in {argv}"
        joined = joined.replace(container, local)
    return joined.split("\0")


def local_env(name: str, database_url: str, queue: str) -> dict[str, str]:
    """The service's compose environment, with the database and Redis moved
    to this machine: the local test database, local Redis, a queue of its own."""
    env = dict(compose()["services"][name]["environment"])
    for key in ("DATABASE_URL", "REDIS_URL", "RFM_TASK_QUEUE"):
        assert key in env, f"{name}: {key} missing from the compose environment"
    local = service_env(database_url, queue, **env)
    local.update(DATABASE_URL=database_url, REDIS_URL=TEST_REDIS_URL, RFM_TASK_QUEUE=queue)
    local["FLASK_APP"] = "wsgi"  # as the Dockerfile's ENV
    local["PATH"] = f"{BIN}:{local.get('PATH', '')}"  # healthchecks call `celery`, `python`
    return local


def command(name: str) -> list[str]:
    return list(compose()["services"][name]["command"])


def healthcheck(name: str, replacements: dict[str, str], env: dict[str, str]) -> int:
    kind, *test = compose()["services"][name]["healthcheck"]["test"]
    argv = local_argv(test, replacements)
    if kind == "CMD-SHELL":
        argv = ["/bin/sh", "-c", *argv]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    return done.returncode


@pytest.fixture
def compose_queue(task_queue: str) -> str:
    # Not the session worker's queue: nothing here may take its tasks.
    return f"{task_queue}-compose"


@pytest.fixture
def empty_database() -> Iterator[str]:
    with blank_pg_database("rfm_compose") as url:
        yield url


def test_migrate_builds_the_schema_in_an_empty_database(
    empty_database: str, compose_queue: str, service_logs: Path
) -> None:
    env = local_env("migrate", empty_database, compose_queue)
    with start_service("compose-migrate", command("migrate"), env, service_logs) as migrate:
        code = migrate.wait_for_exit(timeout=20)

    assert code == 0, migrate.tail()
    engine = sa.create_engine(empty_database)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"alembic_version", "customers", "orders", "rfm_runs", "rfm_scores"} <= tables


@pytest.mark.celery  # needs the local Redis
def test_web_serves_readyz_and_passes_its_healthcheck(
    pg_url: str, compose_queue: str, service_logs: Path
) -> None:
    port = free_port()
    replacements = {"0.0.0.0:8000": f"127.0.0.1:{port}"}
    # The image's $HOME (/app) is not the rfm user's to write: gunicorn 27's
    # control socket under it logged "[ERROR] Control server error" at
    # every start. A home no one can write stands in for it (root here).
    env = {**local_env("web", pg_url, compose_queue), "HOME": "/proc/no-home"}
    argv = local_argv(command("web"), replacements)
    with start_service("compose-web", argv, env, service_logs) as web:
        url = f"http://127.0.0.1:{port}/readyz"
        web.wait_for("/readyz 200", lambda: http_get(url)[0] == 200, timeout=20)
        body = json.loads(http_get(url)[1])
        assert body["checks"] == {"database": "ok", "redis": "ok", "schema": "ok"}
        healthcheck("web", {"127.0.0.1:8000": f"127.0.0.1:{port}"}, env)
        code = web.stop()

    assert code == 0, web.tail()  # gunicorn shuts down cleanly on SIGTERM
    assert "[ERROR]" not in web.log(), web.tail()


def test_web_stops_on_a_configuration_error_with_one_line(pg_url: str, compose_queue: str) -> None:
    """gunicorn 27 with two workers that each fail to build the app followed
    the reason with its own HaltServer traceback and exited 1; built once
    before the fork (--preload), the reason is all there is, with status 3."""
    env = {**local_env("web", pg_url, compose_queue), "RFM_WORK_MEM": "lots"}
    argv = local_argv(command("web"), {"0.0.0.0:8000": f"127.0.0.1:{free_port()}"})
    argv[0] = str(BIN / argv[0])
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)

    errors = done.stderr.decode()
    reason = (
        "rfm-service: configuration error: RFM_WORK_MEM must be a PostgreSQL memory "
        "size such as 256MB, got 'lots'"
    )
    assert done.returncode == 3, errors
    assert errors.count(reason) == 1, errors
    assert "Traceback" not in errors, errors


def _answers_ping(service: Service) -> bool:
    """The worker with this pid answers (compose gives it no -n, so find it by pid)."""
    control = control_app()
    try:
        stats = control.control.inspect(timeout=1).stats() or {}
    finally:
        control.close()
    return any(info.get("pid") == service.pid for info in stats.values())


@pytest.mark.celery  # needs the local Redis
def test_worker_starts_answers_ping_and_passes_its_healthcheck(
    pg_url: str, compose_queue: str, service_logs: Path
) -> None:
    env = local_env("worker", pg_url, compose_queue)
    empty_tables_bounded(pg_url)  # it would resume a run an earlier test left active
    with start_service("compose-worker", command("worker"), env, service_logs) as worker:
        worker.wait_for("an answer to ping", lambda: _answers_ping(worker), timeout=20)
        assert f".> {compose_queue}" in worker.log()  # consumes RFM_TASK_QUEUE
        # Docker sets HOSTNAME to the container's hostname; here, this machine's.
        healthcheck("worker", {}, {**env, "HOSTNAME": socket.gethostname()})
        code = worker.stop()

    assert code == 0, worker.tail()  # a warm shutdown


@pytest.mark.celery  # needs the local Redis
def test_beat_starts_with_its_schedule_file(
    pg_url: str, compose_queue: str, service_logs: Path, tmp_path: Path
) -> None:
    schedule = tmp_path / "celerybeat-schedule"
    replacements = {"/var/lib/rfm/celerybeat-schedule": str(schedule)}
    env = local_env("beat", pg_url, compose_queue)
    argv = local_argv(command("beat"), replacements)
    with start_service("compose-beat", argv, env, service_logs) as beat:
        beat.wait_for_log("beat: Starting...", timeout=20)
        beat.wait_for("the schedule file", lambda: any(tmp_path.glob("celerybeat-schedule*")))
        beat.stop()

    assert "Traceback" not in beat.log()
    assert not list(ROOT.glob("celerybeat*"))  # nothing written into the code tree


@pytest.mark.celery  # needs the local Redis
def test_flower_starts_behind_basic_auth_and_passes_its_healthcheck(
    pg_url: str, compose_queue: str, service_logs: Path
) -> None:
    port = free_port()
    replacements = {"--address=0.0.0.0": "--address=127.0.0.1", "--port=5555": f"--port={port}"}
    env = local_env("flower", pg_url, compose_queue)
    argv = local_argv(command("flower"), replacements)
    with start_service("compose-flower", argv, env, service_logs) as flower:
        url = f"http://127.0.0.1:{port}/"
        flower.wait_for("Flower to answer", lambda: http_get(url)[0] != 0, timeout=20)

        assert http_get(url)[0] == 401
        user, password = OPERATOR_VARIABLES["FLOWER_BASIC_AUTH"].split(":")
        assert http_get(url, auth=(user, password))[0] == 200
        healthcheck("flower", {"127.0.0.1:5555": f"127.0.0.1:{port}"}, env)


def _threaded(argv: list[str]) -> bool:
    """gunicorn runs its gthread worker with --threads above 1."""
    for flag, value in itertools.pairwise(argv):
        if flag == "--threads" and int(value) > 1:
            return True
        if flag in ("--worker-class", "-k") and value == "gthread":
            return True
    return any(arg.startswith("--threads=") and int(arg.split("=", 1)[1]) > 1 for arg in argv)


def test_web_does_not_kill_a_long_download() -> None:
    """A sync worker counts a response still being streamed against
    --timeout (30 s) and is killed with it: a CSV export to a client slower
    than 13 MB in 30 s ended cut short (curl: exit 18). gthread workers
    notify the arbiter while a thread streams."""
    assert _threaded(command("web"))
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert _threaded(json.loads(cmd))


def test_the_image_and_compose_run_gunicorn_without_a_control_socket() -> None:
    """The image's own CMD as compose's web command (tested above with a
    home no one can write): no control socket under /app."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert "--no-control-socket" in json.loads(cmd)
    assert "--no-control-socket" in command("web")
