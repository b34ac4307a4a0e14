"""`/healthz` for a container's healthcheck and an operator: 200 when the database, Redis and the
worker queue all answer, 503 otherwise, with a JSON body saying which is up.

Served by a middleware placed first, so a probe needs no allowed host, no session and no user (a
request with a stale session cookie would otherwise read the database before the check runs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from nlaweb.jobs import broker as jobs

PATH = "/healthz"


@dataclass(frozen=True)
class Check:
    up: bool
    detail: str = ""  # why it is down, or how it is used


@dataclass(frozen=True)
class Health:
    database: Check
    redis: Check
    queue: Check
    queued_jobs: int | None  # jobs waiting in the gpu queue

    @property
    def ok(self) -> bool:
        return self.database.up and self.redis.up and self.queue.up

    def as_json(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "unavailable", **asdict(self)}


def check_health() -> Health:
    depth = jobs.BROKER.depth()
    queue = Check(True) if depth is not None else Check(False, "the broker is not reachable")
    return Health(_database(), _redis(), queue, depth)


def _database() -> Check:
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        return Check(False, type(error).__name__)
    return Check(True)


def _redis() -> Check:
    if not settings.REDIS_URL:
        return Check(True, "not used (embedded mode)")
    timeout = settings.BROKER_CONNECT_TIMEOUT_S
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        client.ping()
    except redis.RedisError as error:
        return Check(False, type(error).__name__)
    finally:
        client.close()
    return Check(True)


def healthz(request: HttpRequest) -> JsonResponse:
    health = check_health()
    return JsonResponse(health.as_json(), status=200 if health.ok else 503)


class HealthMiddleware:
    """Answers `/healthz` before any other middleware runs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == PATH:
            return healthz(request)
        return self.get_response(request)
