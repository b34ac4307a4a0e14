"""A database or a job queue that is down answers 503 with a sentence, at once, saving what can be
saved; /healthz says which part is down. The broker that is down is a real client pointed at a port
that refuses connections; the database that is down is this test's connection pointed at one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Message
from nlaweb.explanations.models import Explanation
from nlaweb.jobs import broker as jobs
from nlaweb.jobs.sweep import sweep
from nlaweb.middleware.outage import DATABASE_DOWN
from tests.factories import snapshot_of
from tests.queues import DOWN_URL, down_broker, memory_broker, sent
from workers.contracts import TASK_EXPLAIN, TASK_REPLY

pytestmark = pytest.mark.django_db(transaction=True)  # the rows are committed before the send


@pytest.fixture
def broker_down(monkeypatch):
    broker = down_broker()
    monkeypatch.setattr(jobs, "BROKER", broker)
    return broker


def _spy_sends(monkeypatch, broker: jobs.Broker) -> list[dict[str, Any]]:
    """The keyword arguments of every send_task the broker makes (the real send still runs)."""
    calls: list[dict[str, Any]] = []
    real = broker.celery.send_task

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(broker.celery, "send_task", spy)
    return calls


def _count_connects(monkeypatch) -> list[int]:
    """One element per new database connection this process tries to open."""
    attempts: list[int] = []
    wrapper = type(connections["default"])
    real = wrapper.get_new_connection

    def counted(self: Any, params: Any) -> Any:
        attempts.append(1)
        return real(self, params)

    monkeypatch.setattr(wrapper, "get_new_connection", counted)
    return attempts


@contextmanager
def _database_down() -> Iterator[None]:
    """This process's connection to PostgreSQL now goes to a port where nothing listens."""
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = 1
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port


def test_a_click_while_the_queue_is_down_is_a_503_at_once_and_the_sweeper_sends_it_later(
    owner, broker_down, monkeypatch
):
    snapshot = snapshot_of(start_conversation(owner.user))
    url = reverse("explain", args=[snapshot.conversation_id, snapshot.id])
    sends = _spy_sends(monkeypatch, broker_down)
    response = owner.client.post(url, {"position": ["3", "5"]}, HTTP_HX_REQUEST="true")
    # "At once" is a bound on tries, not on time: one send, retried once after 0.2 s, then 503
    # (the default policy retried for 19 s).
    assert [(c["retry"], c["retry_policy"]) for c in sends] == [
        (True, {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.2})
    ]
    assert response.status_code == 503
    assert response.json() == {"error": jobs.UNSENT[TASK_EXPLAIN]}
    assert response["Retry-After"] == "30"
    # The page's banner says it, and the thread is read again: the rows were saved.
    problem = {"message": jobs.UNSENT[TASK_EXPLAIN], "reread": True}
    assert json.loads(response["HX-Trigger"]) == {"nlaweb:problem": problem}
    rows = list(Explanation.objects.order_by("position"))
    assert [(r.position, r.status, r.sent_at) for r in rows] == [
        (3, "queued", None),
        (5, "queued", None),
    ]

    queue = memory_broker()
    sweep(timezone.now(), queue)
    assert sent(queue) == [(TASK_EXPLAIN, [[str(r.pk) for r in rows]])]


def test_a_message_sent_while_the_queue_is_down_is_kept_and_its_reply_sent_later(
    owner, broker_down
):
    conversation = start_conversation(owner.user)
    response = owner.client.post(reverse("send", args=[conversation.id]), {"content": "My cat"})
    assert response.status_code == 503
    page = response.content.decode()
    assert "<h1>nlaweb is unavailable for a moment</h1>" in page
    assert (
        "your message is saved and its reply will be written as soon as the queue is back" in page
    )
    user, reply = Message.objects.order_by("created_at")
    assert (user.content, reply.status, reply.sent_at) == ("My cat", "generating", None)

    queue = memory_broker()
    sweep(timezone.now(), queue)
    assert sent(queue) == [(TASK_REPLY, [str(reply.pk)])]


def test_healthz_says_which_parts_are_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {k: body[k]["up"] for k in ("database", "redis", "queue")} == dict.fromkeys(
        ("database", "redis", "queue"), True
    )
    assert isinstance(body["queued_jobs"], int)


def test_healthz_answers_503_naming_what_is_down_whatever_the_host(client, settings, broker_down):
    settings.REDIS_URL = DOWN_URL
    response = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")  # a probe's host, not allowed
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert (body["database"]["up"], body["redis"]["up"], body["queue"]["up"]) == (
        True,
        False,
        False,
    )
    assert body["redis"]["detail"] == "ConnectionError"
    assert body["queued_jobs"] is None


def test_with_the_database_down_pages_json_and_healthz_answer_503_with_a_sentence(
    owner, monkeypatch
):
    conversation = start_conversation(owner.user)
    with _database_down():
        connects = _count_connects(monkeypatch)
        page = owner.client.get(reverse("conversation", args=[conversation.id]))
        htmx = owner.client.post(
            reverse("send", args=[conversation.id]), {"content": "hi"}, HTTP_HX_REQUEST="true"
        )
        api = owner.client.get("/api/anything")
        health = owner.client.get("/healthz")  # with a session cookie: still no session read
    # "At once" as a count, not a time: each request tries the database once and answers (a retry
    # loop, or a session read after the outage check, would try again).
    assert len(connects) == 4
    assert page.status_code == 503 and DATABASE_DOWN in page.content.decode()
    assert (htmx.status_code, htmx.json()) == (503, {"error": DATABASE_DOWN})
    assert json.loads(htmx["HX-Trigger"])["nlaweb:problem"]["message"] == DATABASE_DOWN
    assert "HX-Trigger" not in page and "HX-Trigger" not in api
    assert (api.status_code, api.json()) == (503, {"error": DATABASE_DOWN})
    assert health.status_code == 503 and health.json()["database"]["up"] is False
    assert owner.client.get(reverse("conversation", args=[conversation.id])).status_code == 200
