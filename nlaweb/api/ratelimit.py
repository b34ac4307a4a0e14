"""Per-user hourly limits in a sliding window shared by every web process: a Redis sorted set per user
and bucket in production, rows of RateEvent in the embedded default. Time is a parameter (`now`,
Unix seconds), so tests decide it."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from nlaweb.api.models import ApiLimits, RateEvent

WINDOW_S = 3600
KEY_PREFIX = "nlaweb:ratelimit:"
EXPLAIN = "explain"
COMPLETION = "completion"


@dataclass(frozen=True)
class RateState:
    """Where a user stands in one bucket after (or without) counting a request."""

    limit: int
    used: int
    #: Seconds until the oldest counted request leaves the window (0 when none is counted).
    reset_s: int
    allowed: bool

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }


def _state(limit: int, used: int, oldest: float | None, now: float, allowed: bool) -> RateState:
    reset = 0 if oldest is None else max(1, math.ceil(oldest + WINDOW_S - now))
    return RateState(limit, used, reset, allowed)


class Window(Protocol):
    def hit(self, user_id: int, bucket: str, limit: int, now: float) -> RateState:
        """Count one request if the window has room; `allowed` says whether it had."""

    def peek(self, user_id: int, bucket: str, limit: int, now: float) -> RateState:
        """The state without counting anything."""


class DatabaseWindow:
    """RateEvent rows; the user's row is locked while counting, so processes take turns."""

    def hit(self, user_id: int, bucket: str, limit: int, now: float) -> RateState:
        return self._count(user_id, bucket, limit, now, add=True)

    def peek(self, user_id: int, bucket: str, limit: int, now: float) -> RateState:
        return self._count(user_id, bucket, limit, now, add=False)

    def _count(self, user_id: int, bucket: str, limit: int, now: float, add: bool) -> RateState:
        with transaction.atomic():
            list(get_user_model().objects.select_for_update().filter(pk=user_id).values("pk"))
            events = RateEvent.objects.filter(user_id=user_id, bucket=bucket)
            events.filter(at__lte=now - WINDOW_S).delete()
            used = events.count()
            allowed = used < limit
            if add and allowed:
                RateEvent.objects.create(user_id=user_id, bucket=bucket, at=now)
                used += 1
            oldest = events.order_by("at").values_list("at", flat=True).first()
        return _state(limit, used, oldest, now, allowed)


_SCRIPT = """
local key, now, window, limit, member, add = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), ARGV[4], ARGV[5]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local used = redis.call('ZCARD', key)
local allowed = 0
if used < limit then allowed = 1 end
if add == '1' and allowed == 1 then
  redis.call('ZADD', key, now, member)
  used = used + 1
end
redis.call('EXPIRE', key, window)
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {allowed, used, oldest[2] or ''}
"""


class RedisWindow:
    """One sorted set per user and bucket (scores: Unix times), updated by one atomic script."""

    def __init__(self, url: str) -> None:
        import redis

        self.client: Any = redis.Redis.from_url(url)
        self.script: Any = self.client.register_script(_SCRIPT)

    def hit(self, user_id: int, bucket: str, limit: int, now: float) -> RateState:
        return self._run(user_id, bucket, limit, now, add=True)

    def peek(self, user_id: int, bucket: str, limit: int, now: float) -> RateState:
        return self._run(user_id, bucket, limit, now, add=False)

    def _run(self, user_id: int, bucket: str, limit: int, now: float, add: bool) -> RateState:
        key = f"{KEY_PREFIX}{bucket}:{user_id}"
        member = f"{now!r}:{uuid.uuid4().hex}"
        allowed, used, oldest = self.script(
            keys=[key], args=[repr(now), WINDOW_S, limit, member, "1" if add else "0"]
        )
        first = float(oldest) if oldest not in (b"", "", None) else None
        return _state(limit, int(used), first, now, bool(allowed))


@cache
def _redis_window(url: str) -> RedisWindow:
    return RedisWindow(url)


def window() -> Window:
    """Redis when REDIS_URL is set (every web process shares it), else the database."""
    url = settings.REDIS_URL
    return _redis_window(url) if url else DatabaseWindow()


def forget_windows() -> None:
    """Drop every Redis window (tests: user ids of a new test database repeat old ones)."""
    if settings.REDIS_URL:
        client = _redis_window(settings.REDIS_URL).client
        for key in client.scan_iter(match=f"{KEY_PREFIX}*"):
            client.delete(key)


def limit_for(user_id: int, bucket: str) -> int:
    """The user's own limit for `bucket` (admin override), else the settings' default."""
    own = ApiLimits.objects.filter(user_id=user_id).first()
    if bucket == COMPLETION:
        custom = own.completion_per_hour if own else None
        return custom if custom is not None else settings.API_COMPLETION_PER_HOUR
    custom = own.explain_per_hour if own else None
    return custom if custom is not None else settings.API_EXPLAIN_PER_HOUR


def hit(user_id: int, bucket: str, now: float | None = None) -> RateState:
    return window().hit(user_id, bucket, limit_for(user_id, bucket), now or time.time())


def peek(user_id: int, bucket: str, now: float | None = None) -> RateState:
    return window().peek(user_id, bucket, limit_for(user_id, bucket), now or time.time())
