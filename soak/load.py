"""The load: a bounded pool of client threads reading the API, and one
thread asking for a recalculation every few seconds, for a fixed time.

Each client thread loops until the deadline: pick an endpoint, send one
request on a fresh connection (gunicorn's sync workers close each one),
time it, check the answer with the ``Oracle``. Nothing is retried; every
5xx, connection error and wrong answer is counted.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .oracle import Oracle

ENDPOINTS = ("list", "get", "statistics", "by-segment", "list-walk")
PAGE_SIZE = 100
REQUEST_TIMEOUT = 30.0  # above gunicorn's own worker timeout: a hang shows as its error


@dataclass
class Tally:
    """One endpoint's results (per thread; merged at the end)."""

    latencies: list[float] = field(default_factory=list)  # seconds, every answered request
    errors_5xx: int = 0
    connection_errors: int = 0
    other_status: int = 0  # a 4xx the load never provokes: counted as wrong
    wrong: int = 0
    examples: list[str] = field(default_factory=list)

    def merge(self, other: Tally) -> None:
        self.latencies += other.latencies
        self.errors_5xx += other.errors_5xx
        self.connection_errors += other.connection_errors
        self.other_status += other.other_status
        self.wrong += other.wrong
        self.examples += other.examples[: max(0, 5 - len(self.examples))]

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.connection_errors

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def request(
    base: str, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any, float]:
    """One request on a new connection: (status, parsed JSON or None, seconds)."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=REQUEST_TIMEOUT)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    started = time.perf_counter()
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    return response.status, parsed, elapsed


class Reader(threading.Thread):
    """One client: reads until the deadline, checks every answer."""

    def __init__(self, base: str, token: str, oracle: Oracle, plan: Plan, seed: int) -> None:
        super().__init__(daemon=True, name=f"reader-{seed}")
        self.base, self.token, self.oracle, self.plan = base, token, oracle, plan
        self.random = random.Random(seed)
        self.tallies = {name: Tally() for name in ENDPOINTS}
        self.deadline = 0.0

    def _pick(self) -> tuple[str, str, Callable[[Any], str | None]]:
        endpoint = self.random.choice(ENDPOINTS)
        plan, rnd = self.plan, self.random
        if endpoint == "list":
            page = rnd.randint(1, plan.list_pages)
            path = f"/api/rfm/?page={page}&page_size={PAGE_SIZE}"
            return endpoint, path, lambda b: self.oracle.page(b, page, PAGE_SIZE)
        if endpoint == "list-walk":
            page = rnd.randint(1, plan.list_pages - 1)
            path = f"/api/rfm/?page={page}&page_size={PAGE_SIZE}"
            return endpoint, path, lambda b: self._walk_on(b, page)
        if endpoint == "get":
            customer = rnd.choice(plan.customer_ids)
            return endpoint, f"/api/rfm/{customer}/", self.oracle.customer
        if endpoint == "statistics":
            return endpoint, "/api/rfm/statistics/", self.oracle.statistics
        segment = rnd.choice(plan.segments)
        page = rnd.randint(1, plan.segment_pages[segment])
        query = urllib.parse.urlencode({"segment": segment, "page": page, "page_size": PAGE_SIZE})
        return (
            endpoint,
            f"/api/rfm/by-segment/?{query}",
            lambda b: self.oracle.page(b, page, PAGE_SIZE, segment),
        )

    def _walk_on(self, first: dict[str, Any], page: int) -> str | None:
        """A client paging on: ``first`` must be right, and the page its
        next link names, read up to 2 s later (a recalculation may finish
        meanwhile), must be the same run's following page."""
        reason = self.oracle.page(first, page, PAGE_SIZE)
        if reason or not first["next"]:
            return reason or f"page {page} has no next link"
        time.sleep(self.random.uniform(0, 0.3))
        url = urllib.parse.urlsplit(first["next"])
        try:
            status, body, _ = request(self.base, "GET", f"{url.path}?{url.query}", self.token)
        except (OSError, http.client.HTTPException) as exc:
            return f"next link: {type(exc).__name__}: {exc}"
        if status != 200:
            return f"next link: status {status}: {body}"
        reason = self.oracle.page(body, page + 1, PAGE_SIZE)
        if reason:
            return f"next link: {reason}"
        if body["results"][0]["calculated_at"] != first["results"][0]["calculated_at"]:
            return "next link: a page of another run than the page that gave the link"
        return None

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            endpoint, path, check = self._pick()
            tally = self.tallies[endpoint]
            try:
                status, body, elapsed = request(self.base, "GET", path, self.token)
            except (OSError, http.client.HTTPException) as exc:
                tally.connection_errors += 1
                tally.examples.append(f"{path}: {type(exc).__name__}: {exc}")
                continue
            tally.latencies.append(elapsed)
            if status >= 500:
                tally.errors_5xx += 1
                tally.examples.append(f"{path}: {status} {body}")
                continue
            reason = f"status {status}: {body}" if status != 200 else None
            if reason:
                tally.other_status += 1
            else:
                try:
                    reason = check(body)
                except (KeyError, TypeError, ValueError) as exc:  # a malformed answer
                    reason = f"malformed answer: {type(exc).__name__}: {exc}"
            if reason:
                tally.wrong += 1
                if len(tally.examples) < 5:
                    tally.examples.append(f"{path}: {reason}")


@dataclass(frozen=True)
class Plan:
    """What the readers may ask for, valid for both dates (no 404s)."""

    list_pages: int
    customer_ids: list[int]
    segments: list[str]
    segment_pages: dict[str, int]


@dataclass
class Recalculations:
    """POSTs a calculation every ``every`` seconds, alternating two dates."""

    base: str
    token: str
    dates: tuple[str, str]
    every: float
    tally: Tally = field(default_factory=Tally)
    started: list[int] = field(default_factory=list)  # run ids that POSTs created
    joined: int = 0  # POSTs answered with the run already active

    def run(self, deadline: float, stop: threading.Event) -> None:
        turn = 0
        next_at = time.monotonic() + self.every
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            if time.monotonic() >= deadline:
                return
            next_at += self.every
            as_of = self.dates[turn % 2]
            turn += 1
            try:
                status, body, elapsed = request(
                    self.base, "POST", "/api/rfm/calculate/", self.token, {"as_of": as_of}
                )
            except (OSError, http.client.HTTPException) as exc:
                self.tally.connection_errors += 1
                self.tally.examples.append(f"POST: {type(exc).__name__}: {exc}")
                continue
            self.tally.latencies.append(elapsed)
            if status >= 500:
                self.tally.errors_5xx += 1
                self.tally.examples.append(f"POST: {status} {body}")
            elif status != 202:
                self.tally.other_status += 1
                self.tally.wrong += 1
                self.tally.examples.append(f"POST: {status} {body}")
            elif body["created"]:
                self.started.append(body["id"])
            else:
                self.joined += 1
