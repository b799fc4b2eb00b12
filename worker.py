"""Celery entry point: ``celery -A worker worker`` and ``celery -A worker beat``."""

import gc
import sys

# As in wsgi.py: no cyclic collection while the app is made, then frozen so
# that collections skip it, including those of the prefork pool's children,
# which then leave the pages they share with this process unwritten.
gc.disable()

from rfm_service import ConfigError, create_app  # noqa: E402

try:
    flask_app = create_app()
except ConfigError as exc:
    sys.exit(f"rfm-service: configuration error: {exc}")
finally:
    gc.freeze()
    gc.enable()
celery_app = flask_app.extensions["celery"]
