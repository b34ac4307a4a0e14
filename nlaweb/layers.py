"""The channel layers: Redis's configuration, and an in-memory layer that the embedded worker thread
can publish to.

Channels' InMemoryChannelLayer keeps asyncio queues bound to the server's event loop; putting into them
from the worker thread (through `async_to_sync`, which runs another loop) would wake the waiting
consumer from the wrong thread. Here every operation is marshalled onto the loop that owns the layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from channels.layers import InMemoryChannelLayer

#: channels_redis waits for frames in BZPOPMIN calls that block up to its `brpop_timeout` (5 s) on
#: the server; redis-py 8 reads every reply with a 5 s socket timeout by default, so an idle
#: websocket's receive races the two and the consumer dies with close code 1011
#: (django/channels_redis#422). Replies are awaited well beyond what the server ever blocks.
REDIS_SOCKET_TIMEOUT_S = 15


def redis_channel_layer(url: str, connect_timeout_s: float = 2) -> dict[str, Any]:
    """The CHANNEL_LAYERS entry for Redis at `url`. A Redis that does not answer costs a publisher
    `connect_timeout_s`, not the system's TCP timeout (minutes), before its frame is dropped."""
    host = {
        "address": url,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": connect_timeout_s,
    }
    return {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [host]}}


class ThreadSafeInMemoryChannelLayer(InMemoryChannelLayer):  # type: ignore[misc]
    """InMemoryChannelLayer whose sends from a foreign thread run on the owning event loop."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._owner: asyncio.AbstractEventLoop | None = None

    async def _on_owner(self, coro: Coroutine[Any, Any, Any]) -> Any:
        current = asyncio.get_running_loop()
        owner = self._owner
        if owner is None or owner is current or owner.is_closed() or not owner.is_running():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, owner))

    async def receive(self, channel: str) -> Any:
        self._owner = asyncio.get_running_loop()
        return await super().receive(channel)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._on_owner(super().send(channel, message))

    async def group_add(self, group: str, channel: str) -> None:
        self._owner = self._owner or asyncio.get_running_loop()
        await self._on_owner(super().group_add(group, channel))

    async def group_discard(self, group: str, channel: str) -> None:
        await self._on_owner(super().group_discard(group, channel))

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._on_owner(super().group_send(group, message))
