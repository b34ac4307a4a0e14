"""Guests: an account made on a visitor's first state-changing action (a POST), never on a GET, so a
crawler fills no user table; signing up keeps it (the same user, now with a password), logging in
takes its conversations along, and guests left with nothing are removed by a command."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model, login
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from nlaweb.accounts.models import Guest
from nlaweb.chat.models import Conversation

#: Usernames of guests start with this; people cannot sign up with it.
GUEST_PREFIX = "guest-"
_BACKEND = "django.contrib.auth.backends.ModelBackend"


def create_guest() -> Any:
    """A new user marked as a guest, with no usable password."""
    with transaction.atomic():
        user = get_user_model().objects.create_user(
            username=f"{GUEST_PREFIX}{secrets.token_hex(6)}"
        )
        Guest.objects.create(user=user)
    return user


def is_guest(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_authenticated and Guest.objects.filter(user_id=user.pk).exists())


def guest_on_post(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Give an anonymous visitor a guest account before `view` handles their POST (after the CSRF
    check has passed), so what it creates has an owner."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            user_or_new_guest(request)
        return view(request, *args, **kwargs)

    return wrapped


def keep_as_account(user: AbstractBaseUser) -> None:
    """The guest `user` has signed up: the same row (and so every conversation) stays, unmarked."""
    Guest.objects.filter(user_id=user.pk).delete()


def adopt_conversations(guest: AbstractBaseUser | AnonymousUser, user: AbstractBaseUser) -> int:
    """Move a guest's conversations to the account they logged in to; returns how many moved. The
    emptied guest is left for `remove_stale_guests`."""
    if not is_guest(guest) or guest.pk == user.pk:
        return 0
    return Conversation.objects.filter(owner_id=guest.pk).update(owner_id=user.pk)


def remove_stale_guests(older_than: timedelta, now: datetime | None = None) -> int:
    """Delete guests created before `now - older_than` that own no conversation; returns how many.

    The candidates are locked first: PostgreSQL makes a concurrent insert of a conversation for one
    of them wait on that lock, and the second look, a new statement, sees any that committed before."""
    cutoff = (now or timezone.now()) - older_than
    users = get_user_model().objects
    with transaction.atomic():
        candidates = set(
            users.select_for_update(of=("self",))
            .filter(guest__isnull=False, date_joined__lt=cutoff, conversations__isnull=True)
            .values_list("pk", flat=True)
        )
        owning = Conversation.objects.filter(owner_id__in=candidates).values_list(
            "owner_id", flat=True
        )
        stale = candidates - set(owning)
        users.filter(pk__in=stale).delete()
    return len(stale)


def user_or_new_guest(request: HttpRequest) -> Any:
    """The request's user; an anonymous visitor is given a guest account first (call it once the
    request has been validated, so a refused one leaves no account behind)."""
    if not request.user.is_authenticated:
        login(request, create_guest(), backend=_BACKEND)
    return request.user
