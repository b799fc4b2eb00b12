"""The worker's RFM_TIME_LIMIT bounds a calculation, not the publisher's."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import redis

from rfm_service import executor
from tests.celery_support import TEST_REDIS_URL
from tests.conftest import make_app


def test_a_published_calculation_carries_no_time_limits_of_the_publisher(tmp_path: Path) -> None:
    """Celery stamps the publisher's task_time_limit / task_soft_time_limit on
    the message, and a worker applies those over its own. A web process on
    the default RFM_TIME_LIMIT (3600) and a worker started with
    RFM_TIME_LIMIT=4 let a 5 s calculation succeed: no soft limit fired. The
    message must leave the limits to the worker."""
    queue = f"rfm-timelimit-{uuid.uuid4().hex[:8]}"
    app = make_app(
        f"sqlite:///{tmp_path / 'rfm.sqlite3'}",
        RFM_EXECUTOR="celery",
        REDIS_URL=TEST_REDIS_URL,
        RFM_TASK_QUEUE=queue,
        RFM_TIME_LIMIT=3600,
    )
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        executor.publish(app, 12345)
        raw = client.lindex(queue, 0)
        assert raw is not None, "the task was not published"
        headers = json.loads(raw)["headers"]
        assert headers["task"] == "rfm.calculate"
        assert headers["timelimit"] in ([None, None], None)
    finally:
        client.delete(queue)
        client.close()
