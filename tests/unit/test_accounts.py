"""Accounts: guests made on the first POST only, sign up keeps a guest's conversations, log in
brings them, log out, change password, and the command that removes guests left with nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from nlaweb.accounts.guests import create_guest, is_guest, remove_stale_guests
from nlaweb.accounts.models import Guest
from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation

pytestmark = pytest.mark.django_db

STRONG = "violet-harbour-71"
User = get_user_model()


def _guest_client() -> tuple[Client, Conversation]:
    """A visitor who pressed New conversation: a guest with one conversation."""
    client = Client()
    response = client.post(reverse("new_conversation"))
    assert response.status_code == 302
    return client, Conversation.objects.get(pk=response.url.split("/")[2])


def test_a_visitor_without_cookies_reads_pages_and_no_account_is_made():
    client = Client()
    for name in ("home", "login", "signup"):
        assert client.get(reverse(name)).status_code == 200
    home = client.get(reverse("home")).content.decode()
    assert "New conversation" in home and "Log in" in home and "Sign up" in home
    assert User.objects.count() == 0
    assert "sessionid" not in client.cookies


def test_head_on_the_home_page_answers_200_like_get_and_makes_no_account():
    response = Client().head(reverse("home"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert User.objects.count() == 0


def test_new_conversation_makes_the_guest_account_that_owns_it():
    client, conversation = _guest_client()
    guest = conversation.owner
    assert is_guest(guest) and guest.username.startswith("guest-")
    assert not guest.has_usable_password()
    assert client.get(reverse("conversation", args=[conversation.id])).status_code == 200
    # The same browser keeps its guest: a second conversation makes no second account.
    client.post(reverse("new_conversation"))
    assert User.objects.count() == 1 and guest.conversations.count() == 2


def test_a_post_that_fails_the_csrf_check_makes_no_account():
    client = Client(enforce_csrf_checks=True)
    assert client.post(reverse("new_conversation")).status_code == 403
    assert User.objects.count() == 0


def test_a_guest_who_signs_up_keeps_the_same_user_and_conversations():
    client, conversation = _guest_client()
    guest_id = conversation.owner_id
    response = client.post(
        reverse("signup"), {"username": "ada", "password1": STRONG, "password2": STRONG}
    )
    assert response.status_code == 302
    ada = User.objects.get(username="ada")
    assert ada.pk == guest_id and not is_guest(ada) and ada.check_password(STRONG)
    assert list(ada.conversations.all()) == [conversation]
    assert client.get(reverse("conversation", args=[conversation.id])).status_code == 200
    header = client.get(reverse("home")).content.decode()
    assert "ada" in header and "Log out" in header
    fresh = Client()
    assert fresh.login(username="ada", password=STRONG)
    assert fresh.get(reverse("conversation", args=[conversation.id])).status_code == 200


@pytest.mark.parametrize(
    ("password", "sentence"),
    [
        ("12345678", "This password is entirely numeric."),
        ("password", "This password is too common."),
        ("x7!", "This password is too short. It must contain at least 8 characters."),
        ("ada-lovelace", "The password is too similar to the username."),
    ],
)
def test_sign_up_applies_djangos_password_validators(password, sentence):
    response = Client().post(
        reverse("signup"),
        {"username": "ada-lovelace", "password1": password, "password2": password},
    )
    assert response.status_code == 200
    assert sentence in response.content.decode()
    assert not User.objects.filter(username="ada-lovelace").exists()


def test_guest_names_are_reserved():
    response = Client().post(
        reverse("signup"), {"username": "guest-abc", "password1": STRONG, "password2": STRONG}
    )
    assert "are reserved for guests" in response.content.decode()
    assert User.objects.count() == 0


def test_a_guest_who_logs_in_brings_their_conversations_along():
    ada = User.objects.create_user("ada", password=STRONG)
    client, conversation = _guest_client()
    response = client.post(reverse("login"), {"username": "ada", "password": STRONG})
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.owner_id == ada.pk
    assert client.get(reverse("conversation", args=[conversation.id])).status_code == 200


def test_a_wrong_password_is_refused_with_a_sentence():
    User.objects.create_user("ada", password=STRONG)
    response = Client().post(reverse("login"), {"username": "ada", "password": "nope"})
    assert "Please enter a correct username and password." in response.content.decode()


def test_log_out_is_a_post_and_ends_the_session():
    User.objects.create_user("ada", password=STRONG)
    client = Client()
    client.login(username="ada", password=STRONG)
    assert client.get(reverse("logout")).status_code == 405
    assert client.post(reverse("logout")).status_code == 302
    assert "Log in" in client.get(reverse("home")).content.decode()


def test_changing_the_password_keeps_the_session_and_the_new_one_works():
    ada = User.objects.create_user("ada", password=STRONG)
    client = Client()
    client.login(username="ada", password=STRONG)
    new = "amber-lantern-93"
    response = client.post(
        reverse("password_change"),
        {"old_password": STRONG, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302
    assert client.get(reverse("password_change_done")).status_code == 200
    ada.refresh_from_db()
    assert ada.check_password(new)
    wrong = client.post(
        reverse("password_change"),
        {"old_password": STRONG, "new_password1": new, "new_password2": new},
    )
    assert "Your old password was entered incorrectly." in wrong.content.decode()


def test_a_guest_is_sent_to_sign_up_to_set_a_password_and_a_visitor_to_log_in():
    client, _ = _guest_client()
    assert client.get(reverse("password_change")).url == reverse("signup")
    assert Client().get(reverse("password_change")).url.startswith(reverse("login"))


def _aged(user, days: float) -> None:
    User.objects.filter(pk=user.pk).update(date_joined=timezone.now() - timedelta(days=days))


def test_stale_guests_with_no_conversation_are_removed_and_no_one_else():
    empty_old, busy_old, empty_new = create_guest(), create_guest(), create_guest()
    member = User.objects.create_user("ada", password=STRONG)
    start_conversation(busy_old)
    for user in (empty_old, busy_old, member):
        _aged(user, 30)
    _aged(empty_new, 1)
    assert remove_stale_guests(timedelta(days=7)) == 1
    assert set(User.objects.values_list("pk", flat=True)) == {busy_old.pk, empty_new.pk, member.pk}
    assert Guest.objects.count() == 2


def test_the_command_takes_the_age_threshold(capsys):
    guest = create_guest()
    _aged(guest, 3)
    call_command("remove_stale_guests", "--older-than-days", "5")
    assert "Removed 0 stale guest accounts." in capsys.readouterr().out
    call_command("remove_stale_guests", "--older-than-days", "2")
    assert "Removed 1 stale guest account." in capsys.readouterr().out
    assert not User.objects.filter(pk=guest.pk).exists()
