"""Schemathesis against the service's own OpenAPI document, in-process (WSGI).

Every documented operation gets generated requests, valid and invalid ones
(hypothesis), on PostgreSQL with orders and a current calculation,
authentication on and a valid write token. The service must never answer
a 5xx, and every answer must be one the document declares for that
operation, with the declared content type and shape.

Bounded: MAX_EXAMPLES per operation and mode, no deadline.

(Operations are walked in one test with subtests rather than with
``schemathesis.pytest.from_fixture``: its lazy loader writes pytest's
private ``node._nodeid``, which pytest 9 no longer has.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode, checks

from rfm_service import executor
from rfm_service.segments import segment_names, slugify

from .auth_support import bearer, issue_token, secured_app
from .conftest import add_orders
from .test_api import AS_OF, calculate, orders_for

MAX_EXAMPLES = 25
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    # A 2xx with the token is re-sent without it and with a wrong one: both must fail.
    checks.ignored_auth,
]


@pytest.fixture
def scored_app(pg_url: str) -> Iterator[Flask]:
    for app in secured_app(pg_url):
        # Customer 1000 has no orders: the statistics count it.
        add_orders(app, orders_for(40), extra_customers=[1000])
        calculate(app, AS_OF)
        yield app
        executor.shutdown(app)  # API-queued runs finish before the tables are emptied


def known_good_values(app: Flask) -> dict[str, list[Any]]:
    """Values random generation almost never hits (a segment name, a
    whitelisted ordering, an existing id), so the 200 answers of every
    operation are checked against the document too."""
    names = segment_names(app.extensions["rfm_rules"])
    return {
        "segment": [*names, *(slugify(n) for n in names), *(n.upper() for n in names)],
        "ordering": ["-monetary", "recency_days,-frequency", "segment,-customer_id", "-rfm"],
        "customer_id": [1, 17, 40, 1000],  # 1000 has no orders: a 404
        "run_id": [1],
    }


def strategies(operation: APIOperation, good: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    found = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    query = {p.name: good[p.name] for p in operation.query if p.name in good}
    path = {p.name: good[p.name] for p in operation.path_parameters if p.name in good}
    if query or path:
        found.append(
            st.tuples(
                st.fixed_dictionaries(_sample(query)), st.fixed_dictionaries(_sample(path))
            ).flatmap(
                lambda qp: operation.as_strategy(
                    GenerationMode.POSITIVE, query=qp[0] or None, path_parameters=qp[1] or None
                )
            )
        )
    return st.one_of(found)


def _sample(values: dict[str, list[Any]]) -> dict[str, st.SearchStrategy[Any]]:
    return {name: st.sampled_from(options) for name, options in values.items()}


def test_generated_requests_get_documented_answers_and_never_a_5xx(
    scored_app: Flask, subtests: pytest.Subtests
) -> None:
    headers = bearer(issue_token(scored_app, "write"))
    good = known_good_values(scored_app)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", scored_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7  # the documented ones at least

    for operation in operations:

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,  # no example store under .hypothesis/: each run stands alone
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(case=strategies(operation, good))
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        with subtests.test(msg=operation.label):
            exercise()
