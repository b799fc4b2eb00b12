"""Context for ``GET /api/rfm/{id}/``: its one database round trip and
nothing else a service adds around it. The same prepared statement and the
same response as the service's, on one psycopg2 connection per server
thread kept in autocommit, as the service reads it, but with nothing around
them: no extensions (SQLAlchemy, its pool to fall back on), no blueprint or
schema, no request hooks, no 404 wording. Served by gunicorn with the same settings as
the service (``gunicorn bench.roundtrip_app:app``), it shows how close to the
bare endpoint a Flask endpoint that reads one row can come on this machine."""

from __future__ import annotations

import os
import threading

import psycopg2
from flask import Flask, Response, jsonify

from rfm_service.api.queries import EXECUTE_CUSTOMER_SCORE, PREPARE_CUSTOMER_SCORE, SCORE_NAMES
from rfm_service.api.schemas import score_object

app = Flask(__name__)
_local = threading.local()


def _connection():
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = psycopg2.connect(os.environ["DATABASE_URL"])
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(PREPARE_CUSTOMER_SCORE)
        _local.conn = conn
    return conn


@app.get("/<int:customer_id>/")
def customer_score(customer_id: int) -> Response:
    with _connection().cursor() as cursor:
        cursor.execute(EXECUTE_CUSTOMER_SCORE, (customer_id,))
        row = cursor.fetchone()
    if row is None:
        return jsonify({"detail": "not found"}), 404
    return jsonify(score_object(dict(zip(SCORE_NAMES, row, strict=True))))
