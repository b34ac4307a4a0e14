"""Log-in and sign-up are rate-limited per account and per client address: the attempt over the
limit answers 429 with one sentence and changes nothing; other accounts and addresses go on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from nlaweb.accounts.models import AuthAttempt

pytestmark = pytest.mark.django_db
STRONG = "violet-harbour-71"


@pytest.fixture(autouse=True)
def _small_limits(settings):
    settings.AUTH_LIMIT_PER_ACCOUNT = 3
    settings.AUTH_LIMIT_PER_ADDRESS = 5


def log_in(username: str, password: str, address: str = "10.0.0.1"):
    data = {"username": username, "password": password}
    return Client(REMOTE_ADDR=address).post(reverse("login"), data)


def sign_up(username: str, password: str, address: str = "10.0.0.1"):
    data = {"username": username, "password1": password, "password2": password}
    return Client(REMOTE_ADDR=address).post(reverse("signup"), data)


def test_an_account_is_locked_after_its_failed_log_ins_even_with_the_right_password():
    get_user_model().objects.create_user("ada", password=STRONG)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):  # spread over addresses: per account
        assert log_in("ada", "wrong", address).status_code == 200
    refused = log_in("Ada", STRONG, "10.0.0.4")  # the name is matched case-insensitively
    assert refused.status_code == 429
    assert "Too many failed log-ins for this account in the last hour: try again in 60 min." in (
        refused.content.decode()
    )
    assert "_auth_user_id" not in refused.client.session
    assert log_in("bob", "wrong", "10.0.0.4").status_code == 200  # another account goes on


def test_an_address_is_locked_after_its_failed_log_ins_over_several_accounts():
    get_user_model().objects.create_user("ada", password=STRONG)
    for name in ("u1", "u2", "u3", "u4", "u5"):
        assert log_in(name, "wrong").status_code == 200
    refused = log_in("ada", STRONG)
    assert refused.status_code == 429
    assert "Too many failed log-ins from your address in the last hour" in refused.content.decode()
    assert log_in("ada", STRONG, "10.0.0.9").status_code == 302  # from elsewhere: logged in


def test_a_good_log_in_is_not_counted_and_old_failures_expire():
    get_user_model().objects.create_user("ada", password=STRONG)
    for _ in range(5):
        assert log_in("ada", STRONG).status_code == 302
    assert AuthAttempt.objects.count() == 0
    for _ in range(3):
        log_in("ada", "wrong")
    AuthAttempt.objects.update(at=timezone.now() - timedelta(minutes=61))
    assert log_in("ada", STRONG).status_code == 302
    log_in("ada", "wrong")
    assert AuthAttempt.objects.count() == 1  # recording a failure removes the expired ones


def test_sign_up_is_limited_per_address_and_the_refused_one_makes_no_account():
    for i in range(5):
        assert sign_up(f"user{i}", STRONG).status_code == 302
    refused = sign_up("user5", STRONG)
    assert refused.status_code == 429
    assert (
        "Too many sign-up attempts from your address in the last hour" in refused.content.decode()
    )
    assert not get_user_model().objects.filter(username="user5").exists()
    assert sign_up("user5", STRONG, "10.0.0.2").status_code == 302


def test_sign_up_attempts_naming_one_account_are_limited():
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert sign_up("ada", "short", address).status_code == 200  # the validators refuse it
    refused = sign_up("ada", STRONG, "10.0.0.4")
    assert refused.status_code == 429
    assert "Too many sign-up attempts for this account" in refused.content.decode()
    assert not get_user_model().objects.filter(username="ada").exists()
