from __future__ import annotations

import pytest

from nlaweb.jobs import broker as jobs
from tests.queues import memory_broker


@pytest.fixture(autouse=True)
def _jobs_stay_in_this_process(monkeypatch):
    """Unit tests never reach a worker: what a commit sends goes to kombu's in-process queue, not
    to the Redis queue that the session's live worker (integration and browser tests) consumes."""
    monkeypatch.setattr(jobs, "BROKER", memory_broker())
