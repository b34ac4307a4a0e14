"""workers/pipeline.py with a store in memory and an engine without a model: in a batch shared by several
users, each row gets its own result and each conversation only its own rows' frames, also when the
rows' positions sort otherwise than the rows come (a result paired by sorted position lands on
another user's row)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import EchoEngine, MemoryStore, echo_text
from workers.pipeline import run_explain, run_reply
from workers.store import Turn

ALICE, BOB, CAROL = "conversation-alice", "conversation-bob", "conversation-carol"


def _tokens(first: int) -> list[int]:
    return list(range(first, first + 20))


@pytest.fixture
def shared() -> tuple[MemoryStore, dict[str, list[str]]]:
    """Alice's rows at 8 then 2 (one snapshot), Bob's at 3, Carol's at 8 (Alice's position too), queued
    in that order: the job's rows come as Alice 2, Alice 8, Bob 3, Carol 8, which is not their
    positions' sorted order."""
    store = MemoryStore()
    alice = store.add_snapshot(ALICE, _tokens(100))
    bob = store.add_snapshot(BOB, _tokens(200))
    carol = store.add_snapshot(CAROL, _tokens(300))
    rows = {
        ALICE: [store.queue(alice, 8), store.queue(alice, 2)],
        BOB: [store.queue(bob, 3)],
        CAROL: [store.queue(carol, 8)],
    }
    return store, rows


def _run(store: MemoryStore, ids: list[str], engine: EchoEngine) -> None:
    run_explain(store, ids, engine_for=lambda source_id: engine)


def _batch(rows: dict[str, list[str]]) -> list[str]:
    """One job's rows as a claim on PostgreSQL hands them over: Alice's, Bob's, Carol's."""
    return [pk for conversation in (ALICE, BOB, CAROL) for pk in rows[conversation]]


def test_the_shared_batchs_rows_come_in_an_order_their_positions_do_not_sort_to(shared):
    store, rows = shared
    job = store.explain_job(_batch(rows))
    assert job is not None
    positions = [row.position for row in job.rows]
    assert positions == [2, 8, 3, 8] and positions != sorted(positions)
    assert [row.conversation_id for row in job.rows] == [ALICE, ALICE, BOB, CAROL]


def test_each_row_of_a_shared_batch_stores_the_result_of_its_own_token(shared):
    store, rows = shared
    engine = EchoEngine()
    _run(store, _batch(rows), engine)
    assert engine.requests == [[(_tokens(100), [2, 8]), (_tokens(200), [3]), (_tokens(300), [8])]]
    for conversation, first in ((ALICE, 100), (BOB, 200), (CAROL, 300)):
        tokens = _tokens(first)
        for pk in rows[conversation]:
            row = store.rows[pk]
            assert (row.status, row.stage, row.error) == ("done", "done", "")
            assert row.fields["token_id"] == tokens[row.position]
            assert row.fields["text"] == echo_text(tokens, row.position)
            assert row.fields["mse"] == pytest.approx(first / 1000 + row.position / 100)


def test_each_conversation_gets_frames_of_its_own_rows_only_each_with_its_own_text(shared):
    store, rows = shared
    _run(store, _batch(rows), EchoEngine())
    assert set(store.frames) == {ALICE, BOB, CAROL}
    for conversation, first in ((ALICE, 100), (BOB, 200), (CAROL, 300)):
        frames = store.frames[conversation]
        assert {f.explanation_id for f in frames} == set(rows[conversation])
        for pk in rows[conversation]:
            own = [f for f in frames if f.explanation_id == pk]
            expected = echo_text(_tokens(first), store.rows[pk].position)
            stages = [f.stage for f in own if f.type == "explanation.progress"]
            assert stages == ["loading", "capturing", "verbalizing", "scoring"]
            texts = [f.text for f in own if f.type == "explanation.text"]
            assert texts == [expected]
            assert own[-1].type == "explanation.done"
            assert own[-1].text == expected


def test_a_failing_shared_batch_fails_each_row_and_tells_each_conversation_of_its_own_rows(shared):
    store, rows = shared

    def fails() -> None:
        raise RuntimeError("shapes cannot be multiplied")

    _run(store, _batch(rows), EchoEngine(fails))
    sentence = (
        "The worker failed while explaining this token (RuntimeError); the details are in its log."
    )
    for conversation, pks in rows.items():
        assert [(store.rows[pk].status, store.rows[pk].error) for pk in pks] == [
            ("failed", sentence)
        ] * len(pks)
        failed = [f for f in store.frames[conversation] if f.type == "explanation.failed"]
        assert sorted(f.explanation_id for f in failed) == sorted(pks)
        assert {f.explanation_id for f in store.frames[conversation]} == set(pks)


def test_a_job_whose_rows_another_job_took_does_nothing(shared):
    store, rows = shared
    engine = EchoEngine()
    _run(store, _batch(rows), engine)
    frames = {k: len(v) for k, v in store.frames.items()}
    _run(store, rows[BOB], engine)  # Bob's own task, after Alice's job took his row
    assert len(engine.requests) == 1
    assert {k: len(v) for k, v in store.frames.items()} == frames


# Replies


def _history(conversation: str, text: str) -> list[Turn]:
    return [Turn(f"{conversation}-user", "user", text)]


def test_each_reply_streams_to_its_own_conversation_and_stores_both_snapshots():
    store = MemoryStore()
    alice = store.add_reply(ALICE, _history(ALICE, "My cat sleeps"))
    bob = store.add_reply(BOB, _history(BOB, "Dogs run"))
    engine = EchoEngine()
    for message_id in (alice, bob):
        run_reply(store, message_id, 20, engine_for=lambda source_id: engine)
    for conversation, message_id, text in (
        (ALICE, alice, "My cat sleeps"),
        (BOB, bob, "Dogs run"),
    ):
        answer = f"you said: {text}"
        assert (store.messages[message_id].status, store.messages[message_id].content) == (
            "done",
            answer,
        )
        frames: list[Any] = store.frames[conversation]
        assert {f.message_id for f in frames} == {message_id}
        assert [f.type for f in frames][-1] == "chat.done"
        deltas = [f.text for f in frames if f.type == "chat.delta"]
        assert deltas and deltas[-1] == answer and all(answer.startswith(d) for d in deltas)
        user_leaf = f"{conversation}-user"
        assert store.saved_snapshots[user_leaf]["token_ids"] == [ord(c) for c in text]
        reply_snapshot = store.saved_snapshots[message_id]
        spans = reply_snapshot["spans"]
        assert [s["message_id"] for s in spans] == [user_leaf, message_id]
        assert reply_snapshot["token_ids"][spans[1]["start"] :] == [ord(c) for c in answer]


class _SnapshotBeforeDone(MemoryStore):
    """Records, when a reply is marked done, whether its own snapshot was already stored."""

    def __init__(self) -> None:
        super().__init__()
        self.had_snapshot_when_done: dict[str, bool] = {}

    def finish_reply(self, message_id: str, content: str, truncated: bool = False) -> None:
        self.had_snapshot_when_done[message_id] = message_id in self.saved_snapshots
        super().finish_reply(message_id, content, truncated)


def test_a_reply_reads_as_done_only_once_its_tokens_are_stored():
    store = _SnapshotBeforeDone()
    message_id = store.add_reply(ALICE, _history(ALICE, "My cat sleeps"))
    run_reply(store, message_id, 20, engine_for=lambda source_id: EchoEngine())
    assert store.had_snapshot_when_done == {message_id: True}


def test_a_reply_that_fails_keeps_its_text_so_far_and_tells_only_its_conversation():
    store = MemoryStore()
    alice = store.add_reply(ALICE, _history(ALICE, "My cat sleeps"))
    bob = store.add_reply(BOB, _history(BOB, "Dogs run"))

    class Breaks(EchoEngine):
        def reply(self, turns: Any, settings: Any, on_text: Any, prefix: str = "") -> Any:
            on_text("you said:")
            raise RuntimeError("device-side assert triggered")

    run_reply(store, alice, 20, engine_for=lambda source_id: Breaks())
    message = store.messages[alice]
    assert (message.status, message.content) == ("failed", "you said:")
    assert message.error == (
        "The worker failed while writing the reply (RuntimeError); the details are in its log."
    )
    assert [f.type for f in store.frames[ALICE]][-1] == "chat.failed"
    assert BOB not in store.frames and store.messages[bob].status == "generating"


def test_an_edited_reply_keeps_the_persons_text_and_is_only_tokenized():
    store = MemoryStore()
    edited = store.add_reply(
        ALICE, _history(ALICE, "My cat sleeps"), origin="edited", content="A dog naps."
    )
    engine = EchoEngine()
    run_reply(store, edited, 20, engine_for=lambda source_id: engine)
    assert engine.replies == 0  # nothing generated
    assert (store.messages[edited].status, store.messages[edited].content) == (
        "done",
        "A dog naps.",
    )
    snapshot = store.saved_snapshots[edited]
    assert snapshot["token_ids"][snapshot["spans"][1]["start"] :] == [ord(c) for c in "A dog naps."]


def test_a_continued_reply_is_generated_after_its_own_text():
    store = MemoryStore()
    more = store.add_reply(
        ALICE, _history(ALICE, "My cat sleeps"), origin="continued", content="A dog"
    )
    run_reply(store, more, 20, engine_for=lambda source_id: EchoEngine())
    assert store.messages[more].content == "A dog you said: My cat sleeps"
    deltas = [f.text for f in store.frames[ALICE] if f.type == "chat.delta"]
    assert deltas and all(d.startswith("A dog") for d in deltas)


def test_a_failed_edit_keeps_the_persons_text():
    store = MemoryStore()
    edited = store.add_reply(ALICE, _history(ALICE, "Hi"), origin="edited", content="Mine.")

    def broken(source_id: str) -> Any:
        raise RuntimeError("no engine")

    run_reply(store, edited, 20, engine_for=broken)
    assert (store.messages[edited].status, store.messages[edited].content) == ("failed", "Mine.")
