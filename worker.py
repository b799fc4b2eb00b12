"""Celery entry point: ``celery -A worker worker`` and ``celery -A worker beat``."""

import sys

from rfm_service import ConfigError, create_app

try:
    flask_app = create_app()
except ConfigError as exc:
    sys.exit(f"rfm-service: configuration error: {exc}")
celery_app = flask_app.extensions["celery"]
