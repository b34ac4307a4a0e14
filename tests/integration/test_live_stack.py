"""End to end on real parts: PostgreSQL, Redis broker and channel layer, a Celery worker process and a
daphne server with websockets, on a tiny NLA source built by the test session."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from nlaweb.chat.consumers import (
    CLOSE_BINARY,
    CLOSE_NOT_JSON,
    CLOSE_TOO_BIG,
    MAX_INCOMING_FRAME_CHARS,
)
from nlaweb.chat.conversation import send_message, start_conversation
from nlaweb.chat.models import Message, Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import request_explanation
from tests.live import FIRST_JOB_S, START_S, wait_until
from tests.personas import make_persona
from workers.contracts import FRAME_ADAPTER

pytestmark = pytest.mark.django_db(transaction=True)


def _session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def _socket(stack, conversation_id, cookie: str, origin: str | None = None):
    return connect(
        f"{stack.ws_url}/ws/conversations/{conversation_id}/",
        additional_headers={"Cookie": cookie, "Origin": origin or stack.base_url},
        open_timeout=10,
    )


def _frames_until(ws, final_types: set[str], timeout: float = FIRST_JOB_S) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=timeout))
        FRAME_ADAPTER.validate_python(frame)  # every frame matches its typed contract
        frames.append(frame)
        if frame["type"] in final_types:
            return frames


def _replied_conversation(stack, persona) -> tuple[Any, Snapshot]:
    conversation = start_conversation(persona.user)
    with _socket(stack, conversation.id, _session_cookie(persona.user)) as ws:
        reply = send_message(conversation, "My cat loves to sleep")
        frames = _frames_until(ws, {"chat.done", "chat.failed"})
    assert frames[-1] == {"type": "chat.done", "message_id": str(reply.id)}, stack.logs()
    reply.refresh_from_db()
    return conversation, Snapshot.objects.get(leaf=reply)


def test_the_worker_writes_a_reply_streams_it_and_stores_its_tokens(stack):
    persona = make_persona("alice")
    conversation, snapshot = _replied_conversation(stack, persona)
    reply = conversation.messages.get(role="assistant")
    assert reply.status == Message.Status.DONE
    spans = snapshot.spans
    assert spans[0]["start"] == 0 and spans[-1]["end"] == len(snapshot.token_ids)
    assert {s["role"] for s in spans} >= {"user", "assistant"}
    assert len(snapshot.token_texts) == len(snapshot.token_ids)


def test_a_celery_worker_process_explains_a_token_and_streams_typed_progress(stack):
    persona = make_persona("bob")
    conversation, snapshot = _replied_conversation(stack, persona)
    position = len(snapshot.token_ids) - 2
    with _socket(stack, conversation.id, _session_cookie(persona.user)) as ws:
        explanation = request_explanation(snapshot, position)
        frames = _frames_until(ws, {"explanation.done", "explanation.failed"})
    assert frames[-1]["type"] == "explanation.done", stack.logs()
    stages = [f["stage"] for f in frames if f["type"] == "explanation.progress"]
    assert [s for s in ("loading", "capturing", "verbalizing", "scoring") if s in stages] == [
        "loading",
        "capturing",
        "verbalizing",
        "scoring",
    ]
    assert all(f["explanation_id"] == str(explanation.id) for f in frames)
    explanation.refresh_from_db()
    assert (explanation.status, explanation.stage) == ("done", "done")
    assert explanation.token_id == snapshot.token_ids[position]
    assert explanation.mse is not None and 0.0 <= explanation.mse <= 4.0
    assert frames[-1]["text"] == explanation.text
    # A second request is a lookup: same row, nothing new queued.
    assert request_explanation(snapshot, position).pk == explanation.pk
    assert Explanation.objects.count() == 1


def test_a_job_for_a_source_no_worker_serves_fails_with_a_sentence_and_loses_nothing(stack):
    persona = make_persona("carol")
    conversation, snapshot = _replied_conversation(stack, persona)
    retired = Snapshot.objects.get(pk=snapshot.pk)
    Snapshot.objects.filter(pk=snapshot.pk).update(source_id="retired-source")
    retired.refresh_from_db()
    explanation = request_explanation(retired, 3)
    wait_until(
        lambda: Explanation.objects.get(pk=explanation.pk).status == "failed",
        FIRST_JOB_S,
        "the explanation to fail",
    )
    explanation.refresh_from_db()
    assert "retired-source" in explanation.error
    assert "Traceback" not in explanation.error
    assert conversation.messages.count() == 2


def test_the_websocket_refuses_a_foreign_origin(stack):
    persona = make_persona("dave")
    conversation = start_conversation(persona.user)
    with pytest.raises(InvalidStatus) as refused:
        _socket(stack, conversation.id, _session_cookie(persona.user), origin="http://evil.example")
    assert refused.value.response.status_code == 403


def test_the_websocket_refuses_someone_elses_conversation(stack):
    owner, stranger = make_persona("erin"), make_persona("frank")
    conversation = start_conversation(owner.user)
    with pytest.raises(InvalidStatus) as refused:
        _socket(stack, conversation.id, _session_cookie(stranger.user))
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(b"\x00\x01", CLOSE_BINARY, id="binary"),
        pytest.param("{not json", CLOSE_NOT_JSON, id="malformed-json"),
        pytest.param("x" * (MAX_INCOMING_FRAME_CHARS + 1), CLOSE_TOO_BIG, id="too-big"),
    ],
)
def test_daphne_closes_a_socket_that_sent_what_the_page_never_sends_with_the_consumers_code(
    stack, frame, code
):
    persona = make_persona(f"grace-{code}")
    conversation = start_conversation(persona.user)
    logged = len(stack.server_log.read_text(errors="replace"))
    with _socket(stack, conversation.id, _session_cookie(persona.user)) as ws:
        ws.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=START_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code, stack.logs()
    assert "Exception inside application" not in stack.server_log.read_text()[logged:]
