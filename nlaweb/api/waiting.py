"""Wait for workers without holding a thread: listen to a channel-layer group (the same frames the
page gets) and re-check the database, which is the truth, on each frame that matters and at least
every RECHECK_S seconds, so a lost frame costs a moment, never a result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

T = TypeVar("T")
P = ParamSpec("P")
RECHECK_S = 1.0


def db_async(function: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """`function` (a short ORM call, never a wait) run in the request's thread-sensitive executor,
    as Django's async views do: the request's connection is closed when the request ends."""
    return sync_to_async(function)


class Listener:
    """A fresh channel in `group` for the duration of an `async with`."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.layer: Any = get_channel_layer()
        self.channel = ""

    async def __aenter__(self) -> Listener:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.layer.group_discard(self.group, self.channel)

    async def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next frame of the group, or None after `timeout` seconds."""
        try:
            event: dict[str, Any] = await asyncio.wait_for(
                self.layer.receive(self.channel), max(timeout, 0.0)
            )
        except TimeoutError:
            return None
        return event


async def wait_for(
    group: str,
    check: Callable[[], Awaitable[T | None]],
    timeout: float,
    wakes: Callable[[dict[str, Any]], bool] = lambda _event: True,
) -> T | None:
    """`check()`'s first non-None value, re-checked on each frame of `group` that `wakes` and every
    RECHECK_S; None once `timeout` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with Listener(group) as listener:
        while True:
            found = await check()
            if found is not None:
                return found
            while (left := deadline - loop.time()) > 0:
                event = await listener.receive(min(left, RECHECK_S))
                if event is None or wakes(event):
                    break
            if deadline - loop.time() <= 0:
                return await check()
