"""workers/store.py: how a job's rows are grouped per snapshot; nlaweb/jobs/django_store.py's DjangoStore claiming several
users' rows (PostgreSQL) whose positions sort otherwise than the rows come, each of which then stores
its own result."""

from __future__ import annotations

from typing import Any

import pytest

from nlaweb.chat.conversation import start_conversation
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings
from nlaweb.jobs.django_store import DjangoStore
from tests.factories import snapshot_of
from tests.fakes import EchoEngine, MemoryRow, MemorySnapshot, echo_text
from tests.personas import make_persona
from workers.pipeline import run_explain
from workers.store import JobGroup, JobRow, TakenRow, group_rows, template_end

# Grouping (pure)


def _row(pk: str, snapshot_id: str, snapshot: MemorySnapshot, position: int) -> TakenRow:
    return MemoryRow(pk, snapshot_id, snapshot, position, "echo", {}).taken()


def test_rows_are_grouped_per_snapshot_in_first_seen_order_with_positions_ascending():
    alice = MemorySnapshot("alice", list(range(100, 120)))
    bob = MemorySnapshot("bob", list(range(200, 220)))
    carol = MemorySnapshot("carol", list(range(300, 320)))
    rows = [
        _row("b3", "B", bob, 3),
        _row("a8", "A", alice, 8),
        _row("c8", "C", carol, 8),
        _row("a2", "A", alice, 2),
    ]
    assert group_rows(rows) == [
        JobGroup(bob.token_ids, [JobRow("b3", "bob", 3)]),
        JobGroup(alice.token_ids, [JobRow("a2", "alice", 2), JobRow("a8", "alice", 8)]),
        JobGroup(carol.token_ids, [JobRow("c8", "carol", 8)]),
    ]


def test_the_template_end_is_the_end_of_a_leading_span_that_belongs_to_no_message():
    preamble = {"message_id": None, "role": "system", "start": 0, "end": 9}
    user = {"message_id": "m1", "role": "user", "start": 9, "end": 14}
    assert template_end([preamble, user]) == 9
    assert template_end([{**user, "start": 0}]) == 0
    assert template_end([]) == 0
    snapshot = MemorySnapshot("alice", list(range(14)), [preamble, user])
    [group] = group_rows([_row("a", "A", snapshot, 12)])
    assert group.rows == [JobRow("a", "alice", 12, template_end=9)]


# DjangoStore on PostgreSQL


def _queued(name: str, position: int, first_token: int, **overrides: Any) -> Explanation:
    conversation = start_conversation(make_persona(name).user)
    snapshot = snapshot_of(conversation, first_token=first_token)
    settings = overrides.pop("settings", ExplainSettings())
    return Explanation.objects.create(
        snapshot=snapshot,
        position=position,
        source_id=overrides.pop("source_id", snapshot.source_id),
        settings_key=settings.key(),
        settings=settings.as_dict(),
    )


@pytest.mark.django_db(transaction=True)  # the store runs outside a test transaction
def test_a_job_claims_its_rows_and_other_users_queued_rows_each_with_its_own_conversation():
    alice_8 = _queued("alice", 8, 100)
    alice_2 = Explanation.objects.create(
        snapshot=alice_8.snapshot,
        position=2,
        source_id=alice_8.source_id,
        settings_key=alice_8.settings_key,
        settings=alice_8.settings,
    )
    bob_3 = _queued("bob", 3, 200)
    carol_8 = _queued("carol", 8, 300)
    dave_5 = _queued("dave", 5, 400, settings=ExplainSettings(temperature=0.7))
    erin_5 = _queued("erin", 5, 500, source_id="another-source")

    job = DjangoStore().explain_job([str(alice_8.id), str(alice_2.id)])

    assert job is not None
    mine = [alice_2, alice_8]
    expected = [(alice_8.snapshot, mine), (bob_3.snapshot, [bob_3]), (carol_8.snapshot, [carol_8])]
    assert job.groups == [
        JobGroup(
            snapshot.token_ids,
            [JobRow(str(r.id), str(snapshot.conversation_id), r.position) for r in rows],
        )
        for snapshot, rows in expected
    ]
    positions = [row.position for row in job.rows]
    assert positions == [2, 8, 3, 8] and positions != sorted(positions)
    statuses = {e.pk: e.status for e in Explanation.objects.all()}
    assert {pk for pk, status in statuses.items() if status == "running"} == {
        r.pk for r in (alice_2, alice_8, bob_3, carol_8)
    }
    assert (statuses[dave_5.pk], statuses[erin_5.pk]) == ("queued", "queued")


@pytest.mark.django_db(transaction=True)  # the store runs outside a test transaction
def test_each_claimed_row_of_several_users_stores_the_result_of_its_own_token():
    alice_8 = _queued("alice", 8, 100)
    bob_3 = _queued("bob", 3, 200)
    carol_8 = _queued("carol", 8, 300)
    engine = EchoEngine()

    run_explain(DjangoStore(), [str(alice_8.id)], engine_for=lambda source_id: engine)

    assert [[positions for _, positions in request] for request in engine.requests] == [
        [[8], [3], [8]]
    ]
    for row in (alice_8, bob_3, carol_8):
        row.refresh_from_db()
        tokens = row.snapshot.token_ids
        assert (row.status, row.error) == ("done", "")
        assert row.token_id == tokens[row.position]
        assert row.text == echo_text(tokens, row.position)
