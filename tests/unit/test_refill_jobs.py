"""A running job fills the slots its finished rows free with waiting rows of its source, anyone's:
workers.pipeline with the real DjangoStore (PostgreSQL) and a tiny NLA in float32. The decode's
moments are fixed by gates in the store (a row is queued right after the job's first look for
waiting rows), and the rows stop at chosen steps (end tokens found in their free runs), so no
assertion depends on timing."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from pydantic import BaseModel

from nlaweb.chat.conversation import start_conversation
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings
from nlaweb.jobs.django_store import DjangoStore
from nlaweb.jobs.sweep import sweep
from tests.factories import snapshot_of
from tests.personas import make_persona
from tests.queues import memory_broker
from tests.tiny_models import build_tiny_source
from workers.nla.engine import NlaEngine
from workers.nla.refill import generate_refill
from workers.nla.types import GenerationSettings, NoProgress
from workers.pipeline import run_explain
from workers.store import ExplainJob

pytestmark = pytest.mark.django_db(transaction=True)  # the store runs outside any test transaction

MAX_NEW_TOKENS = 28
#: (first token id of the snapshot, position) of Alice's row that stops early, Alice's row that
#: runs to MAX_NEW_TOKENS, and Bob's row, queued while their batch runs; the tiny AV writes
#: other tokens for each (for BOB, other than for LONG at the same position of Alice's snapshot).
EARLY, LONG, BOB = (100, 9), (100, 11), (150, 11)
#: How many tokens EARLY and BOB write before their end token: BOB joins at about EARLY_STOP and
#: stops at about EARLY_STOP + BOB_STOP, before LONG's MAX_NEW_TOKENS.
EARLY_STOP, BOB_STOP = 11, 12


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> NlaEngine:
    return NlaEngine.load(build_tiny_source(tmp_path_factory.mktemp("refill")), device="cpu")


def _free_tokens(engine: NlaEngine, first_token: int, position: int) -> list[int]:
    """The AV's greedy tokens for the activation at `position` of a snapshot of `first_token`, …"""
    ids = list(range(first_token, first_token + 12))
    vector = engine.capture(ids, [position])[0]
    av, settings = engine.verbalizer, GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
    prompts = iter([av._prompt(vector)])
    spec = dataclasses.replace(av._spec(settings), end_ids=frozenset(), stop_strings=())
    [decoded] = generate_refill(av.model, av.tokenizer, spec, lambda: next(prompts, None), slots=1)
    return decoded.token_ids


@pytest.fixture
def staggered(engine: NlaEngine) -> Any:
    """End the AV's rows on tokens that stop EARLY and BOB after EARLY_STOP and BOB_STOP tokens
    (found in their free runs) and never come in LONG's."""
    early, long, bob = (_free_tokens(engine, *row) for row in (EARLY, LONG, BOB))
    ends = {early[EARLY_STOP], bob[BOB_STOP]}
    assert not ends & {*early[:EARLY_STOP], *bob[:BOB_STOP], *long}, (early, long, bob)
    assert early[:EARLY_STOP] != bob[:BOB_STOP]
    av = engine.verbalizer
    kept = av.end_ids, av.meta
    av.end_ids, av.meta = frozenset(ends), dataclasses.replace(av.meta, stop_strings=())
    yield
    av.end_ids, av.meta = kept


def _queued(name: str, first_token: int, positions: list[int], source_id: str) -> Any:
    conversation = start_conversation(make_persona(name).user)
    snapshot = snapshot_of(conversation, source_id=source_id, first_token=first_token)
    settings = ExplainSettings(max_new_tokens=MAX_NEW_TOKENS)
    return [
        Explanation.objects.create(
            snapshot=snapshot,
            position=p,
            source_id=source_id,
            settings_key=settings.key(),
            settings=settings.as_dict(),
        )
        for p in positions
    ]


class GatedStore(DjangoStore):
    """A DjangoStore that runs `after_first_look` once the job first found no waiting row (its
    batch already decoding), records what it published, and notes the rows' states whenever it
    took a waiting row."""

    def __init__(self, after_first_look: Any) -> None:
        super().__init__()
        self.after_first_look, self.looks = after_first_look, 0
        self.frames: list[BaseModel] = []
        self.when_taken: list[dict[str, str]] = []

    def take_waiting(self, job: ExplainJob, limit: int) -> ExplainJob | None:
        taken = super().take_waiting(job, limit)
        self.looks += 1
        if self.looks == 1:
            assert taken is None
            self.after_first_look()
        if taken is not None:
            states = Explanation.objects.values_list("id", "status")
            self.when_taken.append({str(pk): status for pk, status in states})
        return taken

    def publish(self, conversation_id: str, frame: BaseModel) -> None:
        self.frames.append(frame)
        super().publish(conversation_id, frame)


def test_a_row_queued_by_another_person_mid_batch_runs_in_a_freed_slot_and_ends_first(
    engine, staggered
):
    source_id = engine.source.id
    early, long = _queued("alice", EARLY[0], [EARLY[1], LONG[1]], source_id)
    bobs: list[Explanation] = []
    store = GatedStore(lambda: bobs.extend(_queued("bob", BOB[0], [BOB[1]], source_id)))

    run_explain(store, [str(early.pk), str(long.pk)], engine_for=lambda _: engine)

    [bob] = bobs
    rows = {r.pk: r for r in Explanation.objects.all()}
    early, long, bob = rows[early.pk], rows[long.pk], rows[bob.pk]
    assert {r.status for r in (early, long, bob)} == {"done"}
    # Bob's row was taken into the slot Alice's early row freed, while her long row still ran...
    [states] = store.when_taken
    assert (states[str(early.pk)], states[str(long.pk)]) == ("done", "running")
    assert bob.job_id == store.job_id and bob.attempts == 1
    # ...and was stored before her batch ended.
    assert early.finished_at < bob.finished_at < long.finished_at
    assert long.truncated and not early.truncated and not bob.truncated  # stopped as chosen
    # Bob's result is the one he gets alone (greedy).
    [alone] = engine.explain(
        bob.snapshot.token_ids,
        [BOB[1]],
        GenerationSettings(max_new_tokens=MAX_NEW_TOKENS),
        NoProgress(),
    )
    assert (bob.text, bob.raw_text) == (alone.text, alone.raw_text) and bob.text != early.text
    assert bob.mse == pytest.approx(alone.fidelity.mse, rel=1e-5)
    assert bob.token_id == bob.snapshot.token_ids[BOB[1]]
    # His page heard his row move through its stages to its result, and only his row.
    his = [f for f in store.frames if getattr(f, "explanation_id", None) == str(bob.pk)]
    stages = [f.stage for f in his if f.type == "explanation.progress"]
    assert stages == ["capturing", "verbalizing", "scoring"]
    assert his[-1].type == "explanation.done" and his[-1].text == bob.text
    assert any(f.type == "explanation.text" for f in his)


def test_the_late_message_of_a_row_a_running_job_took_does_nothing(engine, staggered):
    source_id = engine.source.id
    early, long = _queued("alice", EARLY[0], [EARLY[1], LONG[1]], source_id)
    bobs: list[Explanation] = []
    store = GatedStore(lambda: bobs.extend(_queued("bob", BOB[0], [BOB[1]], source_id)))
    late: list[ExplainJob | None] = []
    take = store.take_waiting

    def take_then_deliver_its_message(job: ExplainJob, limit: int) -> ExplainJob | None:
        taken = take(job, limit)
        if taken is not None:  # Bob's own job reaches another worker while his row runs here
            late.append(DjangoStore(job_id="late").explain_job([taken.explanation_ids[0]]))
        return taken

    store.take_waiting = take_then_deliver_its_message  # type: ignore[method-assign]
    run_explain(store, [str(early.pk), str(long.pk)], engine_for=lambda _: engine)
    assert late == [None]
    [bob] = bobs
    bob.refresh_from_db()
    assert (bob.status, bob.job_id, bob.attempts) == ("done", store.job_id, 1)

    asked: list[str] = []  # and once delivered after the job, it runs no engine and writes nothing
    run_explain(DjangoStore(job_id="later"), [str(bob.pk)], engine_for=asked.append)
    again = Explanation.objects.get(pk=bob.pk)
    assert asked == [] and (again.finished_at, again.job_id) == (bob.finished_at, store.job_id)


def _row_at(snapshot: Any, position: int) -> Explanation:
    settings = ExplainSettings()
    return Explanation.objects.create(
        snapshot=snapshot,
        position=position,
        source_id=snapshot.source_id,
        settings_key=settings.key(),
        settings=settings.as_dict(),
    )


def test_a_row_taken_into_a_freed_slot_is_queued_again_when_its_worker_dies(owner, settings):
    conversation = start_conversation(owner.user)
    snapshot = snapshot_of(conversation)
    rows = [_row_at(snapshot, p) for p in (2, 5)]
    dying = DjangoStore(job_id="dying")
    job = dying.explain_job([str(rows[0].pk)])
    assert job is not None and job.explanation_ids == [str(rows[0].pk), str(rows[1].pk)]
    third = _row_at(snapshot, 8)
    taken = dying.take_waiting(job, 1)
    assert taken is not None and taken.explanation_ids == [str(third.pk)]
    third.refresh_from_db()
    assert (third.status, third.job_id, third.attempts) == ("running", "dying", 1)

    later = timezone.now() + timedelta(seconds=settings.HEARTBEAT_TIMEOUT_S + 1)
    report = sweep(later, memory_broker())  # the dying job never beat again

    assert str(third.pk) in report.requeued
    assert str(third.pk) in report.sent  # queued again and sent as its own job
    third.refresh_from_db()
    assert (third.status, third.job_id) == ("queued", "")
    rerun_store = DjangoStore(job_id="rerun")
    rerun = rerun_store.explain_job([str(third.pk)])
    assert rerun is not None and rerun.explanation_ids == [str(third.pk)]  # alone: it was tried
    _row_at(snapshot, 10)  # a fresh click: not for a job running a row that may kill its worker
    assert rerun_store.take_waiting(rerun, 1) is None
    dying.finish_explanation(str(third.pk), {"text": "from the dead job"})
    third.refresh_from_db()
    assert (third.status, third.job_id, third.text) == ("running", "rerun", "")


def test_a_taken_row_whose_own_request_fails_fails_alone(engine):
    source_id = engine.source.id
    [alice] = _queued("alice", EARLY[0], [EARLY[1]], source_id)
    bobs: list[Explanation] = []
    store = GatedStore(lambda: bobs.extend(_queued("bob", BOB[0], [40], source_id)))

    run_explain(store, [str(alice.pk)], engine_for=lambda _: engine)

    [bob] = bobs
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert alice.status == "done"
    assert (bob.status, bob.error) == (
        "failed",
        "Token position 40 is outside this conversation, which has 12 tokens (positions 0 to 11).",
    )
    [frame] = [f for f in store.frames if f.type == "explanation.failed"]
    assert (frame.explanation_id, frame.error) == (str(bob.pk), bob.error)


def test_a_freed_slot_goes_to_the_person_with_fewest_rows_running_not_the_oldest_row(owner):
    """One take at a time would always pick the person whose row is oldest; each person's running
    rows count as turns they have, so a flood in the decode lets another person's click in next."""
    flood = snapshot_of(start_conversation(owner.user))
    other = snapshot_of(start_conversation(make_persona("bob").user), first_token=150)
    running = [_row_at(flood, p) for p in (1, 2)]
    store = DjangoStore(job_id="decoding")
    job = store.explain_job([str(running[0].pk)])
    assert job is not None and len(job.explanation_ids) == 2
    waiting = [_row_at(flood, 3), _row_at(flood, 4)]
    click = _row_at(other, 5)

    taken = [store.take_waiting(job, 1) for _ in range(3)]

    assert [t.explanation_ids if t else None for t in taken] == [
        [str(click.pk)],
        [str(waiting[0].pk)],
        [str(waiting[1].pk)],
    ]
