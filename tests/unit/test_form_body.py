"""Whatever encoding a form arrives in, the send and explain views answer 4xx at worst, never 500.
The client enforces CSRF as a browser's requests meet it: Django's CSRF check reads the form too, and
that is where a body Django cannot read used to turn its 400 into a bare 500."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from nlaweb.chat.models import Conversation
from nlaweb.middleware.form_body import UNREADABLE_SENTENCE
from tests.form_posts import conversation_with_tokens, csrf_browser, post_body
from tests.personas import Persona

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=XX"


def _part(name: str, value: bytes, headers: bytes = b"") -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"\r\n'.encode()
    return b"--XX\r\n" + disposition + headers + b"\r\n" + value + b"\r\n--XX--\r\n"


@pytest.fixture
def browser(owner: Persona) -> Client:
    return csrf_browser(owner.user)


@pytest.fixture
def conversation(owner: Persona) -> Conversation:
    return conversation_with_tokens(owner.user)


URLS: dict[str, Callable[[Conversation], str]] = {
    "send": lambda c: reverse("send", args=[c.id]),
    "explain": lambda c: reverse("explain", args=[c.id, c.snapshots.get().id]),
}
FIELD = {"send": "content", "explain": "position"}


UNREADABLE = [
    pytest.param(FORM + "; charset=utf-16", b"{field}=5", id="utf-16-declared"),
    pytest.param(FORM + "; charset=base64", b"{field}=5", id="no-text-charset"),
    pytest.param("multipart/form-data", b"{field}=5", id="multipart-without-boundary"),
    pytest.param(MULTIPART + "; charset=base64", _part("{field}", b"5"), id="multipart-base64"),
    pytest.param(FORM, b"&".join([b"x=1"] * 1001), id="too-many-fields"),
]


@pytest.mark.parametrize("view", ["send", "explain"])
@pytest.mark.parametrize(("content_type", "body"), UNREADABLE)
def test_a_form_django_cannot_read_gets_a_400_with_a_sentence(
    browser, conversation, view, content_type, body
):
    body = body.replace(b"{field}", FIELD[view].encode())
    response = post_body(browser, URLS[view](conversation), content_type, body)
    assert response.status_code == 400
    assert response.content.decode() == UNREADABLE_SENTENCE


@pytest.mark.parametrize("view", ["send", "explain"])
def test_a_form_over_the_upload_limit_gets_a_413(browser, conversation, view):
    body = FIELD[view].encode() + b"=" + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = post_body(browser, URLS[view](conversation), FORM, body)
    assert response.status_code == 413
    assert "larger than" in response.content.decode()


READABLE = [
    pytest.param(FORM, b"{field}=caf\xe9", id="latin-1-undeclared"),
    pytest.param(FORM, b"{field}=caf%E9", id="latin-1-percent-escaped"),
    pytest.param(FORM, b"{field}=%ED%A0%80", id="escaped-surrogate"),
    pytest.param(FORM, b"{field}=a%00b", id="nul-character"),
    pytest.param(FORM + "; charset=no-such-charset", b"{field}=5", id="unknown-charset"),
    pytest.param(
        MULTIPART,
        _part("{field}", b"caf\xe9", b"Content-Type: text/plain; charset=latin-1\r\n"),
        id="multipart-latin-1-part",
    ),
    pytest.param("text/plain", b"\xff\xfe{field}=5", id="text-plain"),
    pytest.param("application/json", b'{"{field}": 5}', id="json"),
    pytest.param(FORM, b"{field}=" + b"9" * 30, id="huge-number"),
]


@pytest.mark.parametrize("view", ["send", "explain"])
@pytest.mark.parametrize(("content_type", "body"), READABLE)
def test_any_other_odd_form_gets_the_page_or_a_4xx_never_a_500(
    browser, conversation, view, content_type, body
):
    body = body.replace(b"{field}", FIELD[view].encode())
    response = post_body(browser, URLS[view](conversation), content_type, body)
    assert response.status_code < 500


def test_a_well_formed_form_still_gets_through_the_csrf_check(browser, conversation):
    response = post_body(browser, URLS["send"](conversation), FORM, b"content=My+cat")
    assert response.status_code == 303  # a plain form post: to the page (post/redirect/get)
    assert conversation.messages.filter(role="user", content="My cat").exists()
    refused = browser.post(URLS["send"](conversation), {"content": "My dog"})  # no token
    assert refused.status_code == 403
