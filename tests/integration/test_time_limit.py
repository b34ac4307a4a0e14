"""A job that runs past CELERY_TASK_TIME_LIMIT is stopped by the worker (prefork pool, as in
production) and its explanation fails with a sentence; the conversation is untouched."""

from __future__ import annotations

import pytest
from celery import Celery

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Message
from nlaweb.explanations.models import Explanation
from tests.factories import snapshot_of
from tests.live import running_stack, wait_until
from tests.personas import make_persona
from tests.stack_fixtures import _test_database_url
from workers.contracts import GPU_QUEUE, TASK_EXPLAIN

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT_S = 10  # the smallest the settings accept; the soft limit is 5 s earlier
OWN_REDIS = (
    "redis://127.0.0.1:6379/14"  # its own broker, so the session's worker never takes the job
)


def _endless_explanation(source_id: str) -> Explanation:
    conversation = start_conversation(make_persona("patient").user)
    snapshot = snapshot_of(conversation, [("user", "My cat", 6)], source_id=source_id)
    settings = {"temperature": 0.0, "max_new_tokens": 10_000_000, "seed": 0}
    return Explanation.objects.create(
        snapshot=snapshot,
        position=2,
        source_id=source_id,
        settings_key="endless",
        settings=settings,
    )


def test_a_job_past_its_time_limit_fails_with_a_sentence(tiny_sources_file, tmp_path):
    path, source_id = tiny_sources_file
    explanation = _endless_explanation(source_id)
    env = {
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": OWN_REDIS,
        "NLA_SOURCES_FILE": str(path),
        "CELERY_TASK_TIME_LIMIT": str(LIMIT_S),
        "DEBUG": "1",
    }
    with running_stack(env, tmp_path) as live:
        Celery(broker=OWN_REDIS).send_task(
            TASK_EXPLAIN, args=[[str(explanation.id)]], queue=GPU_QUEUE
        )
        wait_until(
            lambda: Explanation.objects.get(pk=explanation.pk).status == "failed",
            LIMIT_S + 60,
            "the endless explanation to be stopped",
        )
        logs = live.logs()
    explanation.refresh_from_db()
    assert explanation.error == (
        "The worker gave up on explaining this token after its time limit; "
        "try fewer tokens or a shorter conversation."
    ), logs
    assert Message.objects.filter(pk=explanation.snapshot.leaf_id).exists()
