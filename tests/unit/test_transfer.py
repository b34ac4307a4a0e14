"""Export and import: a conversation with every branch, its snapshots and explanations as one JSON
document; an import makes a new conversation, or refuses with one sentence and writes nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation, Message, Snapshot, hash_tokens
from nlaweb.explanations.models import Explanation
from nlaweb.share.document import MAX_IMPORT_BYTES
from nlaweb.share.revisions import source_revisions
from nlaweb.share.transfer import (
    ImportRejected,
    export_conversation,
    export_json,
    import_bytes,
)
from nlaweb.sources.configured import get_source
from tests.sharing import SOURCE_ID, finished, local_source, normalized  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("local_source")]


def _turn(conversation, parent, role: str, content: str, **fields) -> Message:
    return Message.objects.create(
        conversation=conversation, parent=parent, role=role, content=content, **fields
    )


def _snapshot(leaf: Message, tokens_per_message: int = 5) -> Snapshot:
    """A snapshot of the path to `leaf`: `tokens_per_message` synthetic tokens per message."""
    path = leaf.path()
    base = 1000 * (Snapshot.objects.count() + 1)
    ids = [base + i for i in range(len(path) * tokens_per_message)]
    spans = [
        {
            "message_id": str(m.id),
            "role": m.role,
            "start": i * tokens_per_message,
            "end": (i + 1) * tokens_per_message,
        }
        for i, m in enumerate(path)
    ]
    return Snapshot.objects.create(
        conversation=leaf.conversation,
        leaf=leaf,
        source_id=leaf.conversation.source_id,
        token_ids=ids,
        token_texts=[f"w{i}" for i in ids],
        spans=spans,
        tokens_hash=hash_tokens(ids),
    )


def branched(owner) -> Conversation:
    """Two branches from an edited first message, a continued one, done, failed and queued rows,
    and a reply still being written (which an export leaves out)."""
    conversation = start_conversation(owner)
    conversation.title = "Cats, then dogs"
    first = _turn(conversation, None, "user", "My cat")
    reply = _turn(conversation, first, "assistant", "Cats nap.", truncated=True)
    edited = _turn(conversation, None, "user", "My dog")
    edited_reply = _turn(
        conversation, edited, "assistant", "", status="failed", error="Out of memory."
    )
    follow = _turn(conversation, reply, "user", "Why?")
    answer = _turn(conversation, follow, "assistant", "Warmth.\n\nSafety.")
    _turn(conversation, answer, "user", "More?")
    writing = _turn(
        conversation, Message.objects.get(content="More?"), "assistant", "", status="generating"
    )
    _turn(
        conversation,
        first,
        "assistant",
        "Cats purr.",
        origin="regenerated",
        temperature=0.7,
        seed=5,
    )
    a, b = _snapshot(reply), _snapshot(edited)
    c = _snapshot(answer)
    finished(a, 2)
    finished(a, 3, status=Explanation.Status.FAILED)
    finished(b, 1, text="A dog.")
    finished(c, 14, text="Why, asked.\n\nA reason follows.")
    Explanation.objects.create(
        snapshot=c, position=15, source_id=c.source_id, settings_key="{}", status="queued"
    )
    assert edited_reply.status == "failed"
    conversation.head = writing
    conversation.save()
    return conversation


def _export(conversation) -> dict[str, Any]:
    return json.loads(export_json(export_conversation(conversation)))


def _counts() -> tuple[int, int, int, int]:
    return (
        Conversation.objects.count(),
        Message.objects.count(),
        Snapshot.objects.count(),
        Explanation.objects.count(),
    )


def test_an_export_holds_every_branch_and_the_sources_checkpoint_revisions(owner):
    conversation = branched(owner.user)
    response = owner.client.get(reverse("export", args=[conversation.id]))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="nlaweb-cats-then-dogs.json"'
    document = json.loads(response.content)
    assert (document["format"], document["version"]) == ("nlaweb.conversation", 1)
    assert document["sources"] == [
        {
            "id": SOURCE_ID,
            "label": "Tiny local · layer 1",
            "revisions": source_revisions(get_source(SOURCE_ID)),
        }
    ]
    contents = [m["content"] for m in document["messages"]]
    assert contents == [
        "My cat",
        "Cats nap.",
        "Why?",
        "Warmth.\n\nSafety.",
        "More?",
        "Cats purr.",
        "My dog",
        "",
    ]
    regenerated = document["messages"][5]
    assert (regenerated["origin"], regenerated["temperature"], regenerated["seed"]) == (
        "regenerated",
        0.7,
        5,
    )
    assert len(document["snapshots"]) == 3
    # Finished rows only (a queued one has nothing to show); the reply being written is left out
    # and the head falls back to the message before it.
    assert sorted((e["position"], e["status"]) for e in document["explanations"]) == [
        (1, "done"),
        (2, "done"),
        (3, "failed"),
        (14, "done"),
    ]
    by_id = {m["id"]: m for m in document["messages"]}
    assert by_id[document["head"]]["content"] == "More?"


def test_export_then_import_then_export_gives_the_same_document_but_ids_and_times(owner, stranger):
    original = branched(owner.user)
    first = _export(original)
    copy = import_bytes(stranger.user, json.dumps(first).encode())
    assert copy.owner == stranger.user and copy.pk != original.pk
    second = _export(copy)
    assert normalized(second) == normalized(first)
    assert {m["id"] for m in second["messages"]}.isdisjoint({m["id"] for m in first["messages"]})
    # The copy works like any conversation: its snapshots' rows are found by token prefix again.
    snapshot = Snapshot.objects.get(conversation=copy, leaf__content="Cats nap.")
    row = Explanation.objects.get(snapshot=snapshot, position=2)
    assert row.prefix_hash and row.text == "A cat, the pet.\n\nSleep and warmth nearby."
    assert [m.created_at for m in copy.messages.order_by("created_at")] == sorted(
        m.created_at for m in copy.messages.all()
    )


def test_the_import_page_makes_a_new_conversation_for_the_visitor_as_a_guest(owner):
    data = export_json(export_conversation(branched(owner.user)))
    visitor = Client()
    response = visitor.post(reverse("import_conversation"), {"file": _upload(data)})
    imported = Conversation.objects.exclude(owner=owner.user).get()
    assert response.url == reverse("conversation", args=[imported.id])
    assert imported.owner.username.startswith("guest-")
    assert visitor.get(response.url).status_code == 200


def _upload(data: bytes, name: str = "export.json"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="application/json")


def _valid(owner) -> dict[str, Any]:
    return _export(branched(owner))


def _mutated(document: dict[str, Any], change) -> bytes:
    change(document)
    return json.dumps(document).encode()


def _set(path: list[Any], value: Any):
    def change(document):
        node = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _rename_source(document):
    for node in [document, *document["snapshots"], *document["explanations"], *document["sources"]]:
        key = "id" if node in document["sources"] else "source_id"
        node[key] = "qwen-7b-l20"


CASES = {
    "not json": (
        lambda d: b'{"format": nlaweb}',
        "This file is not valid JSON: expecting value at line 1, column 12.",
    ),
    "truncated": (
        lambda d: json.dumps(d).encode()[: len(json.dumps(d)) // 2],
        "This file stops in the middle of its JSON",
    ),
    "truncated in a string": (
        lambda d: b'{"format": "nlaweb.conv',
        "This file stops in the middle of its JSON (after 23 characters): it looks truncated; "
        "export the conversation again.",
    ),
    "empty": (lambda d: b"  \n", "This file is empty."),
    "not utf-8": (
        lambda d: b"\xff\xfe{}",
        "This file is not UTF-8 text, so it is not an nlaweb export.",
    ),
    "not an object": (
        lambda d: b"[1, 2]",
        "This file holds JSON but not an nlaweb conversation export",
    ),
    "another format": (
        lambda d: _mutated(d, _set(["format"], "librechat")),
        "This file is not an nlaweb conversation export: its format is 'librechat', not "
        "'nlaweb.conversation'.",
    ),
    "a newer version": (
        lambda d: _mutated(d, _set(["version"], 2)),
        "This export has version 2; this server reads version 1.",
    ),
    "a wrong field": (
        lambda d: _mutated(d, _set(["messages", 0, "role"], "robot")),
        "This export is not valid at messages.0.role: input should be 'system', 'user' or 'assistant'.",
    ),
    "a broken reference": (
        lambda d: _mutated(d, _set(["explanations", 0, "position"], 99)),
        "This export does not hold together: explanation ",
    ),
    "NaN": (
        lambda d: json.dumps(
            {**d, "explanations": [{**d["explanations"][0], "mse": float("nan")}]}
        ).encode(),
        "This file is not valid JSON: it holds NaN, which JSON does not allow.",
    ),
    "another checkpoint": (
        lambda d: _mutated(d, _set(["sources", 0, "revisions", "av"], "sha256:0000000000000000")),
        f"This file was made with source '{SOURCE_ID}' at AV revision sha256:0000000000000000, but "
        "this server has sha256:",
    ),
    "a source not served here": (
        lambda d: _mutated(d, _rename_source),
        f"This file was made with source 'qwen-7b-l20', which this server does not serve (it serves '{SOURCE_ID}').",
    ),
    "a NUL the database refuses": (
        lambda d: _mutated(d, _set(["explanations", -1, "text"], "nul \x00 here")),
        "This file holds a value the database cannot store (",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_file_gets_one_sentence_naming_the_problem_and_writes_nothing(owner, stranger, case):
    make, sentence = CASES[case]
    data = make(_valid(owner.user))
    before = _counts()
    with pytest.raises(ImportRejected) as rejected:
        import_bytes(stranger.user, data)
    assert str(rejected.value).startswith(sentence)
    assert str(rejected.value).count(". ") == 0 and str(rejected.value).endswith(".")
    assert _counts() == before


def test_the_import_page_shows_the_sentence_and_makes_no_account(owner):
    before = (_counts(), type(owner.user).objects.count())
    visitor = Client()
    response = visitor.post(
        reverse("import_conversation"), {"file": _upload(b'{"format": "nlaweb.conv')}
    )
    assert response.status_code == 400
    assert "This file stops in the middle of its JSON" in response.content.decode()
    assert (_counts(), type(owner.user).objects.count()) == before


def test_a_file_over_20_mb_is_refused_before_it_is_read(owner):
    response = owner.client.post(
        reverse("import_conversation"), {"file": _upload(b" " * (MAX_IMPORT_BYTES + 1))}
    )
    assert response.status_code == 400
    assert (
        "This file is 20,971,521 bytes; the limit is 20 MB (20,971,520 bytes)."
        in response.content.decode()
    )
    with pytest.raises(ImportRejected, match="the limit is 20 MB"):
        import_bytes(owner.user, b" " * (MAX_IMPORT_BYTES + 1))


def test_a_conversation_of_another_user_cannot_be_exported(owner, stranger):
    conversation = branched(owner.user)
    assert stranger.client.get(reverse("export", args=[conversation.id])).status_code == 404
    assert Client().get(reverse("export", args=[uuid.uuid4()])).status_code == 404


#: Columns an export leaves out on purpose: the job machinery of rows in flight, hashes derived
#: from the tokens again on import, and who owns what here.
NOT_EXPORTED = {
    "Conversation": {"id", "owner", "updated_at"},
    "Message": {"conversation", "sent_at", "heartbeat_at", "attempts", "job_id"},
    "Snapshot": {"conversation", "tokens_hash"},
    "Explanation": {"prefix_hash", "sent_at", "heartbeat_at", "attempts", "job_id"}
    # Added by issue 14 (calibrated confidence) without an export field: not exported today, as on
    # main; whether an export should carry them is issue 14's call (noted for the lead).
    | {"calibration", "confidence_note"},
}


def test_every_column_of_the_exported_rows_is_in_the_document_or_left_out_on_purpose():
    from nlaweb.share.document import ConversationDoc, ExplanationDoc, MessageDoc, SnapshotDoc

    documents = {
        Conversation: ConversationDoc,
        Message: MessageDoc,
        Snapshot: SnapshotDoc,
        Explanation: ExplanationDoc,
    }
    renamed = {"leaf", "parent", "snapshot", "head"}  # foreign keys under their own names
    for model, document in documents.items():
        columns = {f.name for f in model._meta.concrete_fields}
        missing = columns - set(document.model_fields) - NOT_EXPORTED[model.__name__] - renamed
        assert not missing, (
            f"{model.__name__} columns neither exported nor listed: {sorted(missing)}"
        )
