"""A websocket opened while the database or Redis is down is closed cleanly: code 4503 ("try again
later", 4000 + the HTTP status as the conversation socket's other codes; RFC 6455's 1013 cannot be
sent through daphne) with one sentence, logged as a warning without a traceback, where the
handshake used to end in a 500. The page's script reconnects with backoff by itself.

Outermost inside the origin check: the session and user are read from the database by Channels'
AuthMiddlewareStack, and the consumer joins its group on Redis, both before the socket is accepted."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CLOSE_UNAVAILABLE = 4503
#: Sent as the close reason (daphne 4.2 drops reasons; servers that forward them show it).
UNAVAILABLE = "The server cannot reach its database or Redis right now; reconnecting shortly."
#: What a database or Redis that is down raises on the way in: the ORM's errors, redis-py's, and a
#: refused or cut socket raised as it is.
OUTAGE_ERRORS = (DatabaseError, RedisError, OSError, TimeoutError)

Scope = dict[str, Any]


class SocketOutageGuard:
    """ASGI middleware: websockets whose opening meets an outage get CLOSE_UNAVAILABLE; everything
    else passes through untouched."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.inner(scope, receive, send)
            return
        seen: set[str] = set()

        async def receive_seen() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            seen.add(message["type"])
            return message

        async def send_seen(message: dict[str, Any]) -> None:
            seen.add(message["type"])
            await send(message)

        try:
            await self.inner(scope, receive_seen, send_seen)
        except OUTAGE_ERRORS as error:
            if "websocket.close" in seen or "websocket.disconnect" in seen:
                return
            log.warning("websocket %s refused: outage: %r", scope.get("path"), error)
            await _refuse(seen, receive, send)


async def _refuse(seen: set[str], receive: Any, send: Any) -> None:
    """Accept the handshake (a refused one reaches a browser as a bare 1006) and close it with
    CLOSE_UNAVAILABLE and the sentence."""
    if "websocket.accept" not in seen:
        if "websocket.connect" not in seen:
            await receive()  # the handshake's websocket.connect, which the app never read
        await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE, "reason": UNAVAILABLE})
