"""API keys (hashed, shown once, prefix lookup, revocation) and the per-user sliding windows, on
PostgreSQL and Redis, with time given by the test."""

from __future__ import annotations

import pytest
from django.conf import settings

from nlaweb.api import ratelimit
from nlaweb.api.keys import hash_key, matches, new_key, prefix_of
from nlaweb.api.models import ApiKey, ApiLimits, RateEvent
from nlaweb.api.ratelimit import WINDOW_S, DatabaseWindow, RedisWindow


def test_a_new_key_has_a_public_prefix_and_only_its_hash_is_kept():
    made = new_key()
    assert made.raw.startswith(f"nla_{made.prefix}_") and len(made.raw) == 45
    assert prefix_of(made.raw) == made.prefix
    assert made.digest == hash_key(made.raw) and made.raw not in made.digest
    assert matches(made.raw, made.digest)
    assert not matches(made.raw[:-1] + ("A" if made.raw[-1] != "A" else "B"), made.digest)


def test_malformed_keys_have_no_prefix():
    for raw in ("", "nla_", "nla_zzzzzzzz_" + "a" * 32, "sk-" + "a" * 40, "nla_0123abcd_short"):
        assert prefix_of(raw) is None


def test_a_stored_key_is_found_by_its_raw_value_until_it_is_revoked(owner):
    key, raw = ApiKey.objects.issue(owner.user, "laptop")
    stored = ApiKey.objects.get(pk=key.pk)
    assert raw not in (stored.digest, stored.prefix, stored.name)
    assert ApiKey.objects.for_raw_key(raw) == key
    assert ApiKey.objects.for_raw_key(raw[:-2] + "xx") is None
    key.revoke()
    assert ApiKey.objects.for_raw_key(raw) is None


def test_a_deactivated_users_key_is_refused(owner):
    _, raw = ApiKey.objects.issue(owner.user, "old")
    owner.user.is_active = False
    owner.user.save()
    assert ApiKey.objects.for_raw_key(raw) is None


@pytest.fixture(params=["database", "redis"])
def window(request, db):
    if request.param == "database":
        return DatabaseWindow()
    redis_window = RedisWindow(settings.REDIS_URL or "redis://127.0.0.1:6379/15")
    redis_window.client.flushdb()
    return redis_window


def test_the_window_counts_up_to_the_limit_then_refuses(window, owner):
    uid, t0 = owner.user.pk, 1_000_000.0
    states = [window.hit(uid, "explain", 3, t0 + i) for i in range(4)]
    assert [s.allowed for s in states] == [True, True, True, False]
    assert [s.remaining for s in states] == [2, 1, 0, 0]
    # The oldest request (t0) leaves the window at t0 + 3600: 3597 s after t0 + 3.
    assert states[-1].reset_s == WINDOW_S - 3
    assert states[-1].headers() == {
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(WINDOW_S - 3),
    }


def test_the_window_slides_one_request_at_a_time(window, owner):
    uid, t0 = owner.user.pk, 2_000_000.0
    for i in range(2):
        window.hit(uid, "explain", 2, t0 + i * 100)
    assert not window.hit(uid, "explain", 2, t0 + WINDOW_S - 1).allowed
    assert window.hit(uid, "explain", 2, t0 + WINDOW_S + 1).allowed  # the first one left
    assert not window.hit(uid, "explain", 2, t0 + WINDOW_S + 2).allowed  # the second is still in


def test_buckets_and_users_are_counted_apart_and_peeking_counts_nothing(window, owner, stranger):
    t0 = 3_000_000.0
    window.hit(owner.user.pk, "explain", 1, t0)
    assert window.hit(owner.user.pk, "completion", 1, t0).allowed
    assert window.hit(stranger.user.pk, "explain", 1, t0).allowed
    assert window.peek(owner.user.pk, "explain", 1, t0).remaining == 0
    assert window.peek(stranger.user.pk, "explain", 5, t0).remaining == 4


def test_the_database_window_forgets_requests_older_than_the_window(owner):
    window = DatabaseWindow()
    window.hit(owner.user.pk, "explain", 5, 10.0)
    window.hit(owner.user.pk, "explain", 5, 10.0 + WINDOW_S + 1)
    assert RateEvent.objects.filter(user=owner.user).count() == 1


def test_limits_default_to_the_settings_and_an_admin_override_wins(owner, settings):
    settings.API_EXPLAIN_PER_HOUR, settings.API_COMPLETION_PER_HOUR = 120, 240
    assert ratelimit.limit_for(owner.user.pk, ratelimit.EXPLAIN) == 120
    assert ratelimit.limit_for(owner.user.pk, ratelimit.COMPLETION) == 240
    ApiLimits.objects.create(user=owner.user, explain_per_hour=5)
    assert ratelimit.limit_for(owner.user.pk, ratelimit.EXPLAIN) == 5
    assert ratelimit.limit_for(owner.user.pk, ratelimit.COMPLETION) == 240
