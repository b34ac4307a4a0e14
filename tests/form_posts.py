"""What the form tests (test_form_body.py, test_not_utf8.py) post with: a logged-in client that must
send the CSRF token, holding the cookie a page view set, as a browser's requests meet the check."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.test import Client

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Conversation
from tests.factories import snapshot_of


def csrf_browser(user: Any) -> Client:
    """A client logged in as `user` that must send the CSRF token, holding the cookie a page view
    set."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/")
    return client


def conversation_with_tokens(user: Any) -> Conversation:
    """A conversation of `user` with a snapshot, so both send and explain can be posted to."""
    conversation = start_conversation(user)
    snapshot_of(conversation)
    return conversation


def post_body(browser: Client, url: str, content_type: str, body: bytes, **headers: str) -> Any:
    """POST `body` as it is, with the CSRF token of the browser's cookie (and `headers`)."""
    token = browser.cookies[settings.CSRF_COOKIE_NAME].value
    return browser.generic(
        "POST", url, body, content_type=content_type, headers={"X-CSRFToken": token, **headers}
    )
