"""Who is calling: an API key in `X-API-Key` or `Authorization: Bearer`, looked up by its public
prefix and compared by hash; or nobody, which only the embedded default on the loopback accepts when
API_LOCAL_NO_KEY=1. Each authenticated call is counted against its user's hourly limit here, before
any work; keys never reach a log (nothing here logs them, and the API accepts none in the URL)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import APIKeyHeader, HttpBearer

from nlaweb.api import ratelimit
from nlaweb.api.http_errors import RateLimited, Unauthorized
from nlaweb.api.models import ApiKey

LOCAL_USERNAME = "local-api"
NO_KEY = (
    "Send an API key in the X-API-Key header or as 'Authorization: Bearer <key>'; "
    "create one at /account/api-keys."
)
BAD_KEY = "This API key is not valid or was revoked; create a new one at /account/api-keys."

#: Which limit each path counts against; others (GET /sources, the docs) only report it.
_COUNTED = {
    "/explain": ratelimit.EXPLAIN,
    "/explain-vector": ratelimit.EXPLAIN,
    "/score": ratelimit.EXPLAIN,
    "/completion": ratelimit.COMPLETION,
}


@dataclass(frozen=True)
class Caller:
    user: Any
    key_id: int | None  # None: the keyless local caller


def _bucket(request: HttpRequest) -> tuple[str, bool]:
    """(bucket, counted) of this request's endpoint."""
    tail = "/" + request.path.rstrip("/").rsplit("/", 1)[-1]
    counted = request.method == "POST" and tail in _COUNTED
    return _COUNTED.get(tail, ratelimit.EXPLAIN), counted


def admit(request: HttpRequest, caller: Caller) -> Caller:
    """Count the request against its user's limit (raise RateLimited) and remember the state for
    the X-RateLimit-* headers of whatever answer follows."""
    bucket, counted = _bucket(request)
    state = (ratelimit.hit if counted else ratelimit.peek)(caller.user.pk, bucket)
    request.rate_state = state  # type: ignore[attr-defined]
    if not state.allowed and counted:
        raise RateLimited(
            f"You have made {state.limit} {bucket} requests in the last hour, your limit; "
            f"retry in {state.reset_s} s.",
            headers={"Retry-After": str(state.reset_s)},
        )
    return caller


def caller_for_key(raw: str) -> Caller:
    key = ApiKey.objects.for_raw_key(raw.strip())
    if key is None:
        raise Unauthorized(BAD_KEY)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    return Caller(key.user, key.pk)


def _loopback(request: HttpRequest) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def local_caller(request: HttpRequest) -> Caller | None:
    """The keyless caller of the embedded default (API_LOCAL_NO_KEY=1, a loopback client)."""
    if not (settings.API_LOCAL_NO_KEY and settings.EMBEDDED and _loopback(request)):
        return None
    user, _ = get_user_model().objects.get_or_create(username=LOCAL_USERNAME)
    return Caller(user, None)


class BearerKey(HttpBearer):
    def __call__(self, request: HttpRequest) -> Caller | None:
        """ninja's own HttpBearer logs a malformed header in DEBUG, the key with it: not here."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> Caller:
        return admit(request, caller_for_key(token))


class HeaderKey(APIKeyHeader):
    param_name = "X-API-Key"

    def authenticate(self, request: HttpRequest, key: str | None) -> Caller:
        """Runs after BearerKey found no bearer token: the header key, else the local caller."""
        if key:
            return admit(request, caller_for_key(key))
        if request.headers.get("Authorization"):
            raise Unauthorized(NO_KEY)  # an Authorization header that is not a bearer token
        caller = local_caller(request)
        if caller is None:
            raise Unauthorized(NO_KEY)
        return admit(request, caller)


AUTH = [BearerKey(), HeaderKey()]
