"""The conversation websocket: server → browser frames only. Authorized per conversation; group
handlers validate the frame against its typed contract and send it on."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from nlaweb.chat.models import Conversation
from workers.contracts import FRAME_ADAPTER, conversation_group

CLOSE_FORBIDDEN = 4403


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

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Browsers only listen here; clicks go through CSRF-protected forms."""

    async def forward(self, event: dict[str, Any]) -> None:
        frame = FRAME_ADAPTER.validate_python(event)
        await self.send_json(frame.model_dump())

    chat_delta = chat_done = chat_failed = forward
    explanation_progress = explanation_text = explanation_done = explanation_failed = forward
    explanation_queued = run_progress = forward
