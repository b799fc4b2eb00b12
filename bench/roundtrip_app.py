"""Context for ``GET /api/rfm/{id}/``: the service's own read
(``queries.customer_score`` on each server thread's connection,
``read_connections``) and the same JSON, with nothing a service app adds
around them: no Flask extensions, no blueprint or schema, no request hooks,
no 404 wording. Served by gunicorn with the same settings as the service
(``gunicorn bench.roundtrip_app:app``), it shows how close to the bare
endpoint a Flask endpoint that reads one row can come on this machine."""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify
from sqlalchemy import create_engine

from rfm_service.api import queries
from rfm_service.api.schemas import score_object
from rfm_service.config import normalise_database_url

app = Flask(__name__)
_engine = create_engine(normalise_database_url(os.environ["DATABASE_URL"]))
_own = queries.thread_connections(_engine)


@app.get("/<int:customer_id>/")
def customer_score(customer_id: int) -> Response | tuple[Response, int]:
    row = queries.customer_score(_engine, _own, customer_id)
    if row is None:
        return jsonify({"detail": "not found"}), 404
    return jsonify(score_object(row))
