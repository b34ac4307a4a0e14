"""Many users' clicks on one source share one engine batch: a job takes the other queued rows of its
source and settings, explains them all at once, and each conversation gets only its own frames."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from nlaweb.chat.conversation import start_conversation
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings
from nlaweb.jobs.django_store import DjangoStore
from tests.factories import snapshot_of
from tests.personas import make_persona
from tests.tiny_models import build_tiny_source
from workers.contracts import FRAME_ADAPTER, conversation_group
from workers.nla.engine import NlaEngine
from workers.nla.reference_pool import ReferencePool
from workers.nla.scoring import confidence
from workers.nla.types import GenerationSettings, NoProgress
from workers.pipeline import run_explain

pytestmark = pytest.mark.django_db(transaction=True)  # the store runs outside any test transaction


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> NlaEngine:
    return NlaEngine.load(build_tiny_source(tmp_path_factory.mktemp("shared")), device="cpu")


def _queued(name: str, source_id: str, position: int, settings: ExplainSettings) -> Any:
    conversation = start_conversation(make_persona(name).user)
    snapshot = snapshot_of(conversation, source_id=source_id)
    return conversation, Explanation.objects.create(
        snapshot=snapshot,
        position=position,
        source_id=source_id,
        settings_key=settings.key(),
        settings=settings.as_dict(),
    )


#: A bound on waiting for frames that are already in the channel layer; never reached.
RECEIVE_TIMEOUT_S = 30
END_OF_FRAMES = {"type": "test.end_of_frames"}


def _frames(layer: Any, channel: str) -> list[Any]:
    """Every frame the channel got before this call: a marker sent now comes after all of them, so
    reading up to it misses none, however long each read takes."""
    frames: list[Any] = []

    async def drain() -> None:
        await layer.send(channel, END_OF_FRAMES)
        while (event := await asyncio.wait_for(layer.receive(channel), RECEIVE_TIMEOUT_S)) != (
            END_OF_FRAMES
        ):
            frames.append(FRAME_ADAPTER.validate_python(event))

    async_to_sync(drain)()
    return frames


def test_one_job_explains_other_users_queued_rows_of_its_source_in_the_same_batch(engine):
    source_id, default = engine.source.id, ExplainSettings()
    # Alice's position sorts after Bob's although her row comes first in the batch: pairing the
    # engine's results with rows by sorted position would swap their tokens, texts and frames.
    alice, mine = _queued("alice", source_id, 8, default)
    bob, theirs = _queued("bob", source_id, 3, default)
    _, other_settings = _queued("carol", source_id, 5, ExplainSettings(temperature=0.7))
    layer = get_channel_layer()
    channels = {}
    for conversation in (alice, bob):
        channels[conversation.id] = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(
            conversation_group(str(conversation.id)), channels[conversation.id]
        )

    run_explain(DjangoStore(), [str(mine.id)], engine_for=lambda _: engine)

    mine.refresh_from_db()
    theirs.refresh_from_db()
    other_settings.refresh_from_db()
    assert (mine.status, theirs.status) == ("done", "done")
    assert mine.started_at == theirs.started_at  # one job took both
    assert other_settings.status == "queued"  # other settings: another batch
    for row in (mine, theirs):
        tokens = row.snapshot.token_ids
        [alone] = engine.explain(tokens, [row.position], GenerationSettings(), NoProgress())
        assert row.token_id == tokens[row.position]
        assert row.text == alone.text and row.mse == pytest.approx(alone.fidelity.mse, rel=1e-5)
    alice_frames = _frames(layer, channels[alice.id])
    bob_frames = _frames(layer, channels[bob.id])
    assert {f.explanation_id for f in alice_frames} == {str(mine.id)}
    assert {f.explanation_id for f in bob_frames} == {str(theirs.id)}
    assert alice_frames[-1].type == bob_frames[-1].type == "explanation.done"
    # Bob's own task finds his row taken and done: nothing to do, nothing re-run.
    run_explain(DjangoStore(), [str(theirs.id)], engine_for=lambda _: engine)
    theirs_again = Explanation.objects.get(pk=theirs.pk)
    assert theirs_again.finished_at == theirs.finished_at


def test_the_stored_row_and_its_done_frame_carry_the_specificity(engine):
    width = engine.reconstructor.meta.d_model
    engine.pool = ReferencePool(width)
    engine.pool.add(torch.randn(40, width, generator=torch.Generator().manual_seed(0)), [None] * 40)
    conversation, row = _queued("dave", engine.source.id, 8, ExplainSettings())
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(conversation_group(str(conversation.id)), channel)

    run_explain(DjangoStore(), [str(row.id)], engine_for=lambda _: engine)

    row.refresh_from_db()
    done = _frames(layer, channel)[-1]
    assert row.status == "done" and row.specificity is not None and 0.0 <= row.specificity <= 1.0
    assert (done.type, done.specificity) == ("explanation.done", row.specificity)
    assert row.confidence == confidence(row.relative_mse, row.specificity)


def test_a_running_row_is_taken_back_only_after_its_time_limit(engine, settings):
    from datetime import timedelta

    from django.utils import timezone

    _, row = _queued("dora", engine.source.id, 4, ExplainSettings())
    recent = timezone.now() - timedelta(seconds=5)
    Explanation.objects.filter(pk=row.pk).update(status="running", started_at=recent)
    assert DjangoStore().explain_job([str(row.pk)]) is None  # its worker may still be at it
    old = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 1)
    Explanation.objects.filter(pk=row.pk).update(started_at=old)
    job = DjangoStore().explain_job([str(row.pk)])  # a redelivered job after a dead worker
    assert job is not None and job.explanation_ids == [str(row.pk)]
