"""Bytes that are not UTF-8 get one answer wherever they arrive: a form (raw, percent-escaped, or
declared as another charset), an htmx request, a JSON body of the API or of a page: a 400 with
NOT_UTF8, in the body shape that client reads, and nothing stored. UTF-8 text still gets through."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from nlaweb.api.models import ApiKey
from nlaweb.chat.models import Conversation, Message
from nlaweb.middleware.form_body import NOT_UTF8
from tests.form_posts import conversation_with_tokens, csrf_browser, post_body
from tests.personas import Persona
from tests.stack_fixtures import _use_tiny_source  # noqa: F401  (the API reads the tiny source)

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"
NOT_UTF8_FORMS = [
    pytest.param(FORM, b"content=caf\xe9", id="raw-latin-1"),
    pytest.param(FORM, b"content=caf%E9", id="percent-escaped-latin-1"),
    pytest.param(FORM, b"content=%ED%A0%80", id="percent-escaped-surrogate"),
    pytest.param(FORM, b"cont%FFent=cat", id="field-name"),
    pytest.param(FORM + "; charset=latin-1", b"content=caf\xe9", id="latin-1-declared"),
]


@pytest.fixture
def browser(owner: Persona) -> Client:
    return csrf_browser(owner.user)


@pytest.fixture
def conversation(owner: Persona) -> Conversation:
    return conversation_with_tokens(owner.user)


def _send(browser: Client, conversation: Conversation, content_type: str, body: bytes, **h: str):  # type: ignore[no-untyped-def]
    return post_body(browser, reverse("send", args=[conversation.id]), content_type, body, **h)


@pytest.mark.parametrize(("content_type", "body"), NOT_UTF8_FORMS)
def test_a_form_that_is_not_utf8_gets_a_400_with_one_sentence_and_stores_nothing(
    browser, conversation, content_type, body
):
    before = Message.objects.count()
    plain = _send(browser, conversation, content_type, body)
    assert (plain.status_code, plain.content.decode()) == (400, NOT_UTF8)
    htmx = _send(browser, conversation, content_type, body, **{"HX-Request": "true"})
    assert (htmx.status_code, htmx.json()) == (400, {"error": NOT_UTF8})
    assert Message.objects.count() == before


def test_a_json_body_that_is_not_utf8_gets_the_same_sentence_on_a_page_and_on_the_api(
    browser, conversation, owner
):
    page = _send(browser, conversation, "application/json", b'{"content": "caf\xe9"}')
    assert (page.status_code, page.json()) == (400, {"error": NOT_UTF8})
    key = ApiKey.objects.issue(owner.user, "tests")[1]
    body = b'{"text": "caf\xe9", "positions": [0]}'
    api = Client().post("/api/v1/explain", body, "application/json", HTTP_X_API_KEY=key)
    assert (api.status_code, api.json()) == (400, {"error": "bad_request", "detail": NOT_UTF8})


def test_utf8_text_with_accents_still_gets_through(browser, conversation, owner):
    sent = _send(browser, conversation, FORM, "content=caf%C3%A9 cr\u00e8me".encode())
    assert sent.status_code == 303  # a plain form post: to the page (post/redirect/get)
    assert Message.objects.filter(role="user", content="café crème").exists()
    key = ApiKey.objects.issue(owner.user, "tests")[1]
    body = '{"text": "café", "positions": []}'.encode()
    api = Client().post("/api/v1/explain", body, "application/json", HTTP_X_API_KEY=key)
    assert api.status_code == 400 and api.json()["detail"] != NOT_UTF8  # past the UTF-8 check
