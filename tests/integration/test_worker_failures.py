"""A job that breaks reaches the person as one sentence, stored on the row and sent as a frame, and the
conversation stays whole: workers.pipeline driven with the real DjangoStore (PostgreSQL) and channel layer
(Redis under scripts/test), around an engine whose explain raises."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation, Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings
from nlaweb.jobs.django_store import DjangoStore
from tests.factories import snapshot_of
from tests.personas import make_persona
from workers.contracts import FRAME_ADAPTER, conversation_group
from workers.nla.engine import out_of_memory_as_error
from workers.nla.errors import PositionOutOfRange
from workers.nla.types import ExplainProgress, GenerationSettings
from workers.pipeline import run_explain

pytestmark = pytest.mark.django_db(transaction=True)  # the store runs outside any test transaction

RECEIVE_TIMEOUT_S = 10
OUT_OF_RANGE = (
    "Token position 40 is outside this conversation, which has 12 tokens (positions 0 to 11)."
)


class BrokenEngine:
    """The engine's explain interface; it reports the capturing stage, then `fails()` raises."""

    def __init__(self, fails: Any) -> None:
        self.fails = fails

    def can_refill(self) -> bool:
        return False

    def explain_batch(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        settings: GenerationSettings,
        progress: ExplainProgress,
    ) -> list[Any]:
        progress.stage("capturing", 0, len(requests))
        self.fails()
        raise AssertionError("fails() must raise")


def _raise(error: BaseException) -> Any:
    def fails() -> None:
        raise error

    return fails


def _cuda_oom_inside_the_engine() -> None:
    """What the engine does with a CUDA out-of-memory error during its forward passes."""
    with out_of_memory_as_error("explaining these tokens"):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def _conversation() -> tuple[Conversation, Snapshot]:
    conversation = start_conversation(make_persona("ada").user)
    return conversation, snapshot_of(conversation)


def _explanation(snapshot: Snapshot, position: int, **fields: Any) -> Explanation:
    return Explanation.objects.create(
        snapshot=snapshot,
        position=position,
        source_id=snapshot.source_id,
        settings_key=ExplainSettings().key(),
        settings=ExplainSettings().as_dict(),
        **fields,
    )


def _run_and_listen(conversation: Conversation, explanation: Explanation, engine: Any) -> list[Any]:
    """Run the job as a worker would, and return the frames a browser of the conversation got."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(conversation_group(str(conversation.id)), channel)
    run_explain(DjangoStore(), [str(explanation.id)], engine_for=lambda source_id: engine)
    frames = []
    while not frames or frames[-1].type not in {"explanation.done", "explanation.failed"}:
        event = async_to_sync(_receive)(layer, channel)
        frames.append(FRAME_ADAPTER.validate_python(event))
    async_to_sync(layer.group_discard)(conversation_group(str(conversation.id)), channel)
    return frames


async def _receive(layer: Any, channel: str) -> Any:
    return await asyncio.wait_for(layer.receive(channel), RECEIVE_TIMEOUT_S)


@pytest.mark.parametrize(
    ("fails", "sentence"),
    [
        pytest.param(
            _raise(RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x32 and 64x32)")),
            "The worker failed while explaining this token (RuntimeError); the details are in "
            "its log.",
            id="engine-error",
        ),
        pytest.param(_raise(PositionOutOfRange(OUT_OF_RANGE)), OUT_OF_RANGE, id="domain-error"),
        pytest.param(
            _cuda_oom_inside_the_engine,
            "The worker ran out of memory while explaining these tokens; try fewer tokens or a "
            "shorter conversation.",
            id="out-of-memory-in-the-engine",
        ),
        pytest.param(
            _raise(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")),
            "The worker ran out of memory while explaining this token; try a shorter conversation.",
            id="out-of-memory-outside-the-engine",
        ),
    ],
)
def test_a_failing_job_reaches_the_person_as_one_sentence_and_the_conversation_survives(
    fails, sentence
):
    conversation, snapshot = _conversation()
    earlier = _explanation(
        snapshot, 4, status="done", stage="done", text="A cat.", mse=0.2, cosine=0.9
    )
    explanation = _explanation(snapshot, 7)

    frames = _run_and_listen(conversation, explanation, BrokenEngine(fails))

    explanation.refresh_from_db()
    assert (explanation.status, explanation.stage) == ("failed", "failed")
    assert explanation.error == sentence
    assert "\n" not in explanation.error and "Traceback" not in explanation.error
    assert explanation.finished_at is not None
    assert [f.type for f in frames] == [
        "explanation.progress",
        "explanation.progress",
        "explanation.failed",
    ]
    assert [f.stage for f in frames[:2]] == ["loading", "capturing"]
    assert frames[-1].error == sentence
    # Nothing else changed: the messages, the snapshot and the earlier explanation are as they were.
    conversation = Conversation.objects.get(pk=conversation.pk)
    assert [(m.role, m.content, m.status) for m in conversation.path()] == [
        ("user", "My cat", "done"),
        ("assistant", "Cats nap.", "done"),
    ]
    assert Snapshot.objects.get(pk=snapshot.pk).token_ids == snapshot.token_ids
    earlier.refresh_from_db()
    assert (earlier.status, earlier.text, earlier.error) == ("done", "A cat.", "")
