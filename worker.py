"""Celery entry point: ``celery -A worker worker`` and ``celery -A worker beat``."""

import gc
import sys

# As in wsgi.py: no cyclic collection while the app is made, then frozen so
# that collections skip it, including those of the prefork pool's children,
# which then leave the pages they share with this process unwritten.
gc.disable()

from celery.signals import worker_ready  # noqa: E402

from rfm_service import ConfigError, create_app, executor  # noqa: E402

try:
    flask_app = create_app()
except ConfigError as exc:
    sys.exit(f"rfm-service: configuration error: {exc}")
finally:
    gc.freeze()
    gc.enable()
celery_app = flask_app.extensions["celery"]


@worker_ready.connect
def _resume_active_run(**_: object) -> None:
    executor.resume_active_run(flask_app)
