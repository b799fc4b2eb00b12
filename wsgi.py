"""WSGI entry point: ``flask`` and ``gunicorn wsgi:app`` find the app here."""

import sys

from rfm_service import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"rfm-service: configuration error: {exc}")
