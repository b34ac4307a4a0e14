"""Publish a typed frame to a conversation's (or an API job's) channel-layer group, best effort.

Frames are hints and the database is the truth: a channel layer that is down (Redis restarting) costs
an open page a re-render when its socket comes back, never a row or a reply. After a failure, frames
are dropped for PAUSE_AFTER_FAILURE_S before the layer is tried again, so a job does not wait on a
dead Redis for every chunk of text.
"""

from __future__ import annotations

import logging
import threading
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from pydantic import BaseModel

from workers.contracts import conversation_group

log = logging.getLogger(__name__)

PAUSE_AFTER_FAILURE_S = 5.0

_lock = threading.Lock()
_paused_until = 0.0


def publish(conversation_id: str, frame: BaseModel) -> bool:
    """Send `frame` to the conversation's group; False (logged once per pause) when it was dropped."""
    return publish_group(conversation_group(conversation_id), frame)


def publish_group(group: str, frame: BaseModel) -> bool:
    """Send `frame` to the channel-layer `group` (an API job's, a conversation's), best effort."""
    global _paused_until
    with _lock:
        if time.monotonic() < _paused_until:
            return False
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.group_send)(group, frame.model_dump())
    except Exception as error:  # whatever the layer raises, a frame is never worth a job
        with _lock:
            _paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_S
        log.warning(
            "channel layer unavailable, frames dropped for %.0f s: %r", PAUSE_AFTER_FAILURE_S, error
        )
        return False
    return True
