"""The REST API (SPEC §4): flask-smorest blueprints, ``{"detail"}`` errors,
the OpenAPI document at ``/api/openapi.json`` and an offline docs page at
``/api/docs``. ``create_app`` calls ``register_api(app)``."""

from __future__ import annotations

from flask import Flask

from .docs import bp as docs_bp
from .errors import RFMApi, register_error_handlers
from .jobs import bp as jobs_bp
from .scores import bp as scores_bp

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
                'Every error is {"detail": "..."}.'
            }
        },
    )
    api.register_blueprint(scores_bp)
    api.register_blueprint(jobs_bp)
    app.register_blueprint(docs_bp)
    register_error_handlers(app)
    return api
