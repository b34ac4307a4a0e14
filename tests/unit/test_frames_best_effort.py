"""Frames are hints, the database is the truth: with the channel layer down (its Redis gone), a job
still stores every row and a reply still finishes (the real store on PostgreSQL, a tiny engine)."""

from __future__ import annotations

import time

import pytest

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Message
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings
from nlaweb.jobs import frames
from nlaweb.jobs.django_store import DjangoStore
from nlaweb.layers import redis_channel_layer
from tests.factories import snapshot_of
from tests.personas import make_persona
from tests.queues import DOWN_URL, memory_broker
from tests.tiny_models import build_tiny_source
from workers.nla.engine import NlaEngine
from workers.pipeline import run_explain, run_reply

pytestmark = pytest.mark.django_db(transaction=True)  # the store runs outside any test transaction


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> NlaEngine:
    return NlaEngine.load(build_tiny_source(tmp_path_factory.mktemp("frames")), device="cpu")


@pytest.fixture
def layer_down(settings, monkeypatch):
    settings.CHANNEL_LAYERS = {"default": redis_channel_layer(DOWN_URL)}
    monkeypatch.setattr(frames, "_paused_until", 0.0)  # restored afterwards: later tests publish


def test_a_channel_layer_that_is_down_fails_no_row(engine, layer_down):
    rows = []
    for name, position in (("ada", 3), ("bob", 8)):
        snapshot = snapshot_of(
            start_conversation(make_persona(name).user), source_id=engine.source.id
        )
        rows.append(
            Explanation.objects.create(
                snapshot=snapshot,
                position=position,
                source_id=engine.source.id,
                settings_key=ExplainSettings().key(),
                settings=ExplainSettings().as_dict(),
            )
        )
    assert frames.publish(str(rows[0].snapshot.conversation_id), _any_frame()) is False
    assert frames._paused_until > time.monotonic()  # later frames are dropped without waiting

    run_explain(DjangoStore(queue=memory_broker()), [str(rows[0].pk)], engine_for=lambda _: engine)

    for row in rows:
        row.refresh_from_db()
        assert (row.status, row.error) == ("done", "")
        assert row.text and row.mse is not None


def test_a_channel_layer_that_is_down_does_not_stop_a_reply(engine, layer_down):
    conversation = start_conversation(make_persona("ada").user)
    user = Message.objects.create(conversation=conversation, role="user", content="My cat")
    reply = Message.objects.create(
        conversation=conversation, parent=user, role="assistant", status="generating"
    )
    run_reply(DjangoStore(), str(reply.pk), max_new_tokens=4, engine_for=lambda _: engine)
    reply.refresh_from_db()
    assert (reply.status, reply.error) == ("done", "")


def _any_frame():
    from workers.contracts import ChatDone

    return ChatDone(message_id="m")
