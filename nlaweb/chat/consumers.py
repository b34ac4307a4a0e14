"""The conversation websocket: server → browser frames only. Authorized per conversation; group
handlers validate the frame against its typed contract and send it on."""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from nlaweb.chat.models import Conversation
from workers.contracts import FRAME_ADAPTER, conversation_group

#: Close codes are 4000 + the HTTP status that says the same thing. RFC 6455's own codes for these
#: cases (1003 unsupported data, 1008 policy, 1009 too big) cannot be sent from an app: daphne's
#: autobahn refuses any code but 1000 and 3000-4999 and the socket then ends with 1011.
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_JSON = 4400  # a text frame that is not JSON (RFC 6455: 1008)
CLOSE_TOO_BIG = 4413  # a frame over MAX_INCOMING_FRAME_CHARS (RFC 6455: 1009)
CLOSE_BINARY = 4415  # a binary frame: unsupported media type (RFC 6455: 1003)
#: Longest text frame accepted from a browser (daphne itself refuses messages over 1 MiB).
MAX_INCOMING_FRAME_CHARS = 4096


@database_sync_to_async
def _can_view(user: Any, conversation_id: str) -> bool:
    if not user.is_authenticated:
        return False
    return Conversation.objects.filter(pk=conversation_id, owner=user).exists()


class ConversationConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    group: str | None = None

    async def connect(self) -> None:
        conversation_id = str(self.scope["url_route"]["kwargs"]["conversation_id"])
        if not await _can_view(self.scope.get("user"), conversation_id):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.group = conversation_group(conversation_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Browsers only listen here; clicks go through CSRF-protected forms. A JSON text frame is
        ignored; anything else closes the socket with the code that says why."""
        if text_data is None:
            await self.close(code=CLOSE_BINARY)
        elif len(text_data) > MAX_INCOMING_FRAME_CHARS:
            await self.close(code=CLOSE_TOO_BIG)
        elif not _is_json(text_data):
            await self.close(code=CLOSE_NOT_JSON)

    async def forward(self, event: dict[str, Any]) -> None:
        frame = FRAME_ADAPTER.validate_python(event)
        await self.send_json(frame.model_dump())

    chat_delta = chat_done = chat_failed = forward
    explanation_progress = explanation_text = explanation_done = explanation_failed = forward
    explanation_queued = run_progress = forward


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
