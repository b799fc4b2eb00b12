"""The REST API (SPEC §4): flask-smorest blueprints, ``{"detail"}`` errors,
the OpenAPI document at ``/api/openapi.json`` and an offline docs page at
``/api/docs``. ``create_app`` calls ``register_api(app)``."""

from __future__ import annotations

from flask import Flask

from ..auth import OpenAPISecurity
from .docs import bp as docs_bp
from .errors import RFMApi, register_error_handlers
from .export import bp as export_bp
from .insights import bp as insights_bp
from .insights import register_schemas as register_insights_schemas
from .jobs import bp as jobs_bp
from .scores import bp as scores_bp
from .scores import register_reads

API_DEFAULTS = {
    "API_TITLE": "RFM customer segmentation",
    "API_VERSION": "1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/api",
    "OPENAPI_JSON_PATH": "openapi.json",
    # No Swagger UI / ReDoc: both load their scripts from a CDN; /api/docs
    # renders the same document server-side instead.
}


def register_api(app: Flask) -> RFMApi:
    for key, value in API_DEFAULTS.items():
        app.config.setdefault(key, value)
    api = RFMApi(
        app,
        spec_kwargs={
            "info": {
                "description": "Recency, frequency and monetary scores of customers, "
                "their segments, and the calculation jobs that produce them. "
                'Every error is {"detail": "..."}. '
                "Every operation needs an API token (Authorization: Bearer <token>, or "
                "HTTP Basic with the token as password): scope read for GET, write for "
                "POST /api/rfm/calculate/. A service running with RFM_AUTH=off "
                "(embedded profile, 127.0.0.1 only) checks none."
            },
            # Documents each operation's security from the rule auth.py enforces.
            "extra_plugins": [OpenAPISecurity()],
        },
    )
    api.register_blueprint(scores_bp)
    register_reads(app)
    api.register_blueprint(jobs_bp)
    register_insights_schemas(api)
    api.register_blueprint(insights_bp)
    api.register_blueprint(export_bp)
    app.register_blueprint(docs_bp)
    register_error_handlers(app)
    return api
