"""The explain answer as server-sent events, fed by the frames the page gets (the conversation's
channel-layer group) and the stored rows (the truth): `metadata`, `partial` text per position as the
AV writes it, one `result` per position as its row finishes, `{cacheId}`, then `[DONE]`.
Waiting holds no thread: an async generator awaits the channel layer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from nlaweb.api.explain import FINAL_FRAMES, Asked, refreshed, result
from nlaweb.api.waiting import RECHECK_S, Listener
from workers.contracts import conversation_group

DONE = "data: [DONE]\n\n"


def event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, cls=DjangoJSONEncoder)}\n\n"


def metadata(asked: Asked) -> dict[str, Any]:
    return {
        "type": "metadata",
        "cacheId": asked.conversation_id,
        "nlaSourceId": asked.source.id,
        "layer_index": asked.source.layer,
        "prompt_length": len(asked.snapshot.token_ids),
        "positions": asked.positions,
        "tokens": [asked.snapshot.token_texts[p] for p in asked.positions],
    }


class _Results:
    """Emits each position's result once, when its row is finished (or at the end, as it is)."""

    def __init__(self, asked: Asked) -> None:
        self.asked, self.sent = asked, set[int]()
        self.position_of = {str(r.pk): p for p, r in asked.rows.items()}

    def new(self, asked: Asked, final: bool = False) -> list[str]:
        self.asked = asked
        ready = [
            p
            for p in asked.positions
            if p not in self.sent and (final or asked.rows[p].is_finished)
        ]
        self.sent.update(ready)
        return [event({"type": "result", **result(asked, p)}) for p in ready]

    @property
    def pending(self) -> bool:
        return len(self.sent) < len(self.asked.positions)


async def explain_events(asked: Asked) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.API_WAIT_SECONDS
    results = _Results(asked)
    yield event(metadata(asked))
    async with Listener(conversation_group(str(asked.conversation_id))) as listener:
        for chunk in results.new(await refreshed(asked)):
            yield chunk
        while results.pending and (left := deadline - loop.time()) > 0:
            frame = await listener.receive(min(left, RECHECK_S))
            partial = _partial(frame, results.position_of, results.sent)
            if partial is not None:
                yield partial
            elif frame is None or frame.get("type") in FINAL_FRAMES:
                for chunk in results.new(await refreshed(results.asked)):
                    yield chunk
    for chunk in results.new(await refreshed(results.asked), final=True):
        yield chunk
    yield event({"cacheId": asked.conversation_id})
    yield DONE


def _partial(
    frame: dict[str, Any] | None, position_of: dict[str, int], sent: set[int]
) -> str | None:
    if frame is None or frame.get("type") != "explanation.text":
        return None
    position = position_of.get(str(frame.get("explanation_id")))
    if position is None or position in sent:  # a page click's row, or one already answered
        return None
    return event({"type": "partial", "position": position, "text": frame["text"], "done": False})
