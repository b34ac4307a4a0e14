"""What a browser might send on the conversation websocket (through the ASGI app: origin check,
session auth, the consumer): JSON text is ignored; a binary frame, text that is not JSON or a frame
over the limit closes the socket with the code that says why, and nothing is logged as an error.
tests/integration/test_live_stack.py sends the same through daphne, which limits the codes an app
may send."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from nlaweb.asgi import application
from nlaweb.chat.consumers import (
    CLOSE_BINARY,
    CLOSE_NOT_JSON,
    CLOSE_TOO_BIG,
    MAX_INCOMING_FRAME_CHARS,
)
from nlaweb.chat.conversation import start_conversation
from tests.personas import Persona
from workers.contracts import ChatDone, conversation_group

# The consumer reads the database from another thread: rows must be committed to be seen.
pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

#: A bound on waiting for the app's answer; it never times a healthy run.
ANSWER_S = 30


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def path(owner: Persona) -> str:
    return f"/ws/conversations/{start_conversation(owner.user).id}/"


@pytest.fixture
async def socket(owner: Persona, path: str) -> AsyncIterator[WebsocketCommunicator]:
    cookie = f"sessionid={owner.client.cookies['sessionid'].value}"
    headers = [(b"origin", b"http://127.0.0.1"), (b"cookie", cookie.encode())]
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=ANSWER_S)
    assert connected
    yield communicator
    await communicator.disconnect(timeout=ANSWER_S)


@pytest.fixture(autouse=True)
def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> Any:
    with caplog.at_level(logging.WARNING):
        yield
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def _closed_with(socket: WebsocketCommunicator) -> int:
    """The code of the close the app sends next (any other output fails the test)."""
    output = await socket.receive_output(timeout=ANSWER_S)
    assert output["type"] == "websocket.close", output
    return int(output["code"])


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param({"bytes": b"\x00\x01binary"}, CLOSE_BINARY, id="binary"),
        pytest.param({"bytes": b""}, CLOSE_BINARY, id="empty-binary"),
        pytest.param({"text": "{not json"}, CLOSE_NOT_JSON, id="malformed-json"),
        pytest.param({"text": ""}, CLOSE_NOT_JSON, id="empty-text"),
        pytest.param(
            {"text": '"' + "a" * MAX_INCOMING_FRAME_CHARS + '"'}, CLOSE_TOO_BIG, id="too-big-json"
        ),
        pytest.param({"text": "x" * (MAX_INCOMING_FRAME_CHARS + 1)}, CLOSE_TOO_BIG, id="too-big"),
    ],
)
async def test_a_frame_the_page_never_sends_closes_the_socket_with_its_code(socket, frame, code):
    await socket.send_input({"type": "websocket.receive", **frame})
    assert await _closed_with(socket) == code


async def test_a_json_frame_is_ignored_and_the_socket_keeps_its_frames_coming(socket, path):
    await socket.send_json_to({"type": "hello", "anything": [1, 2]})
    conversation_id = path.split("/")[-2]
    frame = ChatDone(message_id="m1")
    await get_channel_layer().group_send(conversation_group(conversation_id), frame.model_dump())
    assert await socket.receive_json_from(timeout=ANSWER_S) == frame.model_dump()
    # The JSON frame closed nothing: the first thing out after a binary frame is its own close.
    await socket.send_to(bytes_data=b"\x00")
    assert await _closed_with(socket) == CLOSE_BINARY
