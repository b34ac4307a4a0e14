"""A stranger test for every door. Every URL pattern and websocket route is collected from the URL
configuration and must be listed here: a door to a conversation's data (with the request that knocks
on it) or a public page (with the reason). A new view without an entry fails the first test.

A door is knocked on by a signed-in stranger and by an anonymous visitor: both get 404 and change
nothing. Then the owner knocks the same way and gets in, so the 404s are about ownership, not about
a wrong URL."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.test import Client
from django.urls import URLResolver, get_resolver

from nlaweb.api.models import ApiKey
from nlaweb.api.ratelimit import forget_windows
from nlaweb.chat.consumers import CLOSE_FORBIDDEN
from nlaweb.chat.models import Conversation, Message, Snapshot
from nlaweb.explanations.models import ExplainRun, Explanation
from nlaweb.latents.models import LatentLabel, LatentRun
from nlaweb.share.models import Share
from nlaweb.share.sharing import Pin, create_share
from tests.sharing import explained_conversation


@dataclass(frozen=True)
class Knock:
    method: str = "get"
    #: Form data (or the JSON body of an API call); a value `<name>` is the world's parameter.
    data: dict[str, Any] = field(default_factory=dict)
    owner_gets: int = 200  # what the owner's identical request answers
    anonymous_gets: int = 404  # an API call without a key is 401; a login_required page redirects
    api: bool = False  # a JSON body, and the caller's own API key in X-API-Key

    def send(self, client: Client, url: str, params: dict[str, Any], key: str = "") -> Any:
        data = {k: _filled(v, params) for k, v in self.data.items()}
        if not self.api:
            return getattr(client, self.method)(url, data)
        headers = {"HTTP_X_API_KEY": key} if key else {}
        body = json.dumps(data)
        return getattr(client, self.method)(url, body, content_type="application/json", **headers)


def _filled(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return params[value[1:-1]]
    return value


#: Doors to one conversation's data: a stranger gets 404 at each, whatever they send.
DOORS: dict[str, list[Knock]] = {
    "c/<uuid:conversation_id>/": [Knock()],
    "c/<uuid:conversation_id>/send": [Knock("post", {"content": "hello"}, owner_gets=303)],
    "c/<uuid:conversation_id>/branch": [Knock("post", {"to": "<message_id>"}, owner_gets=303)],
    "c/<uuid:conversation_id>/m/<uuid:message_id>/edit": [Knock()],
    "c/<uuid:conversation_id>/m/<uuid:message_id>/save": [
        Knock("post", {"content": "mine now"}, owner_gets=303)
    ],
    "c/<uuid:conversation_id>/m/<uuid:message_id>/regenerate": [
        Knock("post", {"temperature": "0.7", "seed": "3"}, owner_gets=303)
    ],
    "c/<uuid:conversation_id>/m/<uuid:message_id>/continue": [Knock("post", owner_gets=303)],
    "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/explain": [
        Knock("post", {"position": "3"}, owner_gets=303)
    ],
    "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/m/<uuid:message_id>/explain-all": [
        Knock("post", owner_gets=303)
    ],
    "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/m/<uuid:message_id>/table": [Knock()],
    "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/m/<uuid:message_id>/table.csv": [Knock()],
    "c/<uuid:conversation_id>/s/<uuid:snapshot_id>/m/<uuid:message_id>/table.json": [Knock()],
    "explanations/<uuid:explanation_id>/": [Knock()],
    "explanations/<uuid:explanation_id>/cancel": [Knock("post")],
    "explanations/<uuid:explanation_id>/compare": [Knock()],
    "explanations/<uuid:explanation_id>/compare/<uuid:snapshot_id>": [
        Knock("post", {"position": "2"})
    ],
    "explanations/<uuid:explanation_id>/sources": [Knock()],
    "explanations/<uuid:explanation_id>/with": [Knock("post", {"source": "smollm2-demo-l5"})],
    "runs/<uuid:run_id>/cancel": [Knock("post", owner_gets=303)],
    "c/<uuid:conversation_id>/close": [Knock()],
    "c/<uuid:conversation_id>/state": [Knock()],
    "c/<uuid:conversation_id>/share": [Knock(), Knock("post", {"pin": "2"}, owner_gets=302)],
    "c/<uuid:conversation_id>/export": [Knock()],
    "shares/<slug:share_id>/revoke": [Knock("post", owner_gets=302)],
    "api/v1/explain": [
        Knock(
            "post",
            {"cacheId": "<conversation_id>", "positions": [2]},
            anonymous_gets=401,
            api=True,
        )
    ],
    "account/api-keys/<int:key_id>/revoke": [Knock("post", owner_gets=302, anonymous_gets=302)],
    "sources/<str:source_id>/latents/runs/<uuid:latent_run_id>/": [Knock()],
    "sources/<str:source_id>/latents/runs/<uuid:latent_run_id>/cancel": [Knock("post")],
    "sources/<str:source_id>/latents/labels/<uuid:label_id>": [Knock()],
}

_BY_LINK = "anyone with the link reads the frozen snapshot; tests/unit/test_share.py checks it shows nothing else"
_LATENTS = (
    "a source's SAE latents and their explanations are decoder rows, nobody's data; runs and labels "
    "shown are the visitor's own (tests/unit/test_latents_page.py)"
)
#: Pages anyone may open, and why that leaks nothing of anyone's conversations.
PUBLIC: dict[str, str] = {
    "": "home lists the visitor's own conversations only",
    "c/new": "makes a new conversation of the visitor's own",
    "import/": "makes a new conversation of the visitor's own from their file",
    "shares/": "lists the visitor's own links only",
    "s/<slug:share_id>": _BY_LINK,
    "s/<slug:share_id>/embed": _BY_LINK,
    "s/<slug:share_id>/explanations/<int:position>": _BY_LINK,
    "s/<slug:share_id>/close": _BY_LINK,
    "s/<slug:share_id>/copy": _BY_LINK + ", into the visitor's own account",
    "accounts/signup/": "account pages",
    "accounts/login/": "account pages",
    "accounts/logout/": "account pages",
    "accounts/password/": "account pages (the signed-in user's own password)",
    "accounts/password/done/": "account pages",
    "healthz": "liveness probe",
    "account/api-keys": "the signed-in user's own keys (tests/unit/test_api_views.py)",
    "api/v1/": "the API's root",
    "api/v1/docs": "the API's documentation",
    "api/v1/openapi.json": "the API's documentation",
    "api/v1/sources": "the configured sources, for any key holder",
    "api/v1/completion": "a reply to the caller's own messages, in a new conversation of theirs",
    "api/v1/explain-vector": "the caller's own vectors",
    "api/v1/score": "the caller's own vector and label",
    "favicon.ico": "a redirect to a static file",
    **dict.fromkeys(
        [
            "sources/<str:source_id>/latents/",
            "sources/<str:source_id>/latents/<int:index>",
            "sources/<str:source_id>/latents/<int:index>/explanation",
        ],
        _LATENTS,
    ),
    "sources/<str:source_id>/latents/<int:index>/explain": _LATENTS + "; queued as the visitor's",
    "sources/<str:source_id>/latents/<int:index>/labels": "scores the visitor's own label",
    "sources/<str:source_id>/latents/runs": "starts a run of the visitor's own",
    "latents/": "a redirect to the default source's latents page",
    "api/v1/sources/<source_id>/latents/<index>": "a source's decoder rows, for any key holder",
    "sources/<str:source_id>/latents/export.<str:fmt>": _LATENTS + ", and the visitor's own labels",
}
#: Staff only (Django's admin checks is_staff): a stranger is sent to the admin's login.
STAFF_ONLY = {"admin/", "admin/nla-sources/"}

#: Websocket routes that carry one conversation's frames.
WS_DOORS = {"ws/conversations/<uuid:conversation_id>/"}


def url_routes() -> set[str]:
    def walk(patterns: list[Any], prefix: str) -> Any:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver) and pattern.namespace != "admin":
                yield from walk(pattern.url_patterns, route)
            else:
                yield route

    return set(walk(get_resolver().url_patterns, ""))


def websocket_routes() -> set[str]:
    from nlaweb.asgi import websocket_urlpatterns

    return {str(pattern.pattern) for pattern in websocket_urlpatterns}


def test_every_url_pattern_is_a_door_with_a_stranger_test_or_listed_as_public():
    routes = url_routes()
    listed = set(DOORS) | set(PUBLIC) | STAFF_ONLY
    unlisted = sorted(routes - listed)
    assert not unlisted, (
        f"URL patterns without a stranger test: {unlisted}. Add each to DOORS in {__file__} with "
        "the request that knocks on it, or to PUBLIC with the reason anyone may open it."
    )
    assert not sorted(listed - routes), (
        f"listed but not in the URL configuration: {sorted(listed - routes)}"
    )
    assert not set(DOORS) & set(PUBLIC)


def test_every_websocket_route_has_a_stranger_test():
    assert websocket_routes() == WS_DOORS


@dataclass
class World:
    """One owner's rows, and the URL parameters that name them."""

    owner: Any
    params: dict[str, str]
    owner_key: str  # the owner's API key

    def url(self, route: str) -> str:
        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            assert name in self.params, f"no value for <{name}> of {route}: add it to the world"
            return self.params[name]

        return "/" + re.sub(r"<(?:\w+:)?(\w+)>", fill, route)


@pytest.fixture
def world(owner) -> World:
    forget_windows()  # the API's rate windows live in Redis, beyond the test's transaction
    found = explained_conversation(owner.user)
    share = create_share(found.conversation, Pin(2), "mine")
    key, raw_key = ApiKey.objects.issue(owner.user, "doors")
    reply = found.snapshot.leaf
    run = ExplainRun.objects.create(snapshot=found.snapshot, message=reply, positions=[6, 7])
    source_id = found.conversation.source_id
    latent_run = LatentRun.objects.create(owner=owner.user, source_id=source_id, indices=[1, 2])
    label = LatentLabel.objects.create(owner=owner.user, source_id=source_id, index=1, label="cats")
    return World(
        owner,
        {
            "conversation_id": str(found.conversation.id),
            "snapshot_id": str(found.snapshot.id),
            "message_id": str(reply.id),
            "explanation_id": str(found.explanations[2].id),
            "run_id": str(run.id),
            "share_id": share.id,
            "key_id": str(key.pk),
            "source_id": source_id,
            "latent_run_id": str(latent_run.id),
            "label_id": str(label.id),
        },
        raw_key,
    )


def _state() -> list[Any]:
    """Everything a knock could change."""
    return [
        get_user_model().objects.count(),
        list(Conversation.objects.values_list("id", "owner_id", "head_id", "title")),
        list(Message.objects.values_list("id", "content", "status")),
        Snapshot.objects.count(),
        list(Explanation.objects.values_list("id", "status", "stage")),
        list(ExplainRun.objects.values_list("id", "fed", "cancelled")),
        list(Share.objects.values_list("id", "revoked_at", "comment", "views")),
        list(ApiKey.objects.values_list("id", "revoked_at")),
        list(LatentRun.objects.values_list("id", "cancelled")),
        list(LatentLabel.objects.values_list("id", "label")),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("route", "knock"),
    [(route, knock) for route, knocks in sorted(DOORS.items()) for knock in knocks],
)
def test_a_stranger_gets_404_at_every_door_and_changes_nothing(
    route, knock, world, stranger, settings, django_capture_on_commit_callbacks
):
    settings.API_WAIT_SECONDS = 1  # no worker here: an API answer shows the rows as they stand
    url = world.url(route)
    strangers_key = ApiKey.objects.issue(stranger.user, "knocking")[1]
    before = _state()
    for visitor, key, expected in (
        (stranger.client, strangers_key, 404),
        (Client(), "", knock.anonymous_gets),
    ):
        with django_capture_on_commit_callbacks() as callbacks:
            response = knock.send(visitor, url, world.params, key)
        assert response.status_code == expected, (route, knock, response.status_code)
        assert callbacks == []  # no job enqueued
    assert _state() == before
    response = knock.send(world.owner.client, url, world.params, world.owner_key)
    assert response.status_code == knock.owner_gets, (route, response.status_code)


@pytest.mark.django_db
@pytest.mark.parametrize("route", sorted(STAFF_ONLY))
def test_a_stranger_is_sent_to_the_admin_login_from_staff_pages(route, stranger):
    for visitor in (stranger.client, Client()):
        response = visitor.get("/" + route)
        assert response.status_code == 302 and "/admin/login/" in response.url


# -- websockets -------------------------------------------------------------------------------------
async def _connect(
    application: Any, path: str, user: Any = None, headers: Any = ()
) -> tuple[bool, Any]:
    communicator = WebsocketCommunicator(application, path, headers=list(headers))
    if user is not None:
        communicator.scope["user"] = user
    connected, detail = await communicator.connect(timeout=30)
    if connected:
        await communicator.disconnect(timeout=30)
    return connected, detail


@pytest.fixture
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("in_memory_layer")
@pytest.mark.parametrize("route", sorted(WS_DOORS))
def test_a_stranger_cannot_open_a_conversations_websocket(route, world, stranger):
    from nlaweb.asgi import websocket_urlpatterns

    router = URLRouter(websocket_urlpatterns)
    path = world.url(route)
    for user in (stranger.user, AnonymousUser()):
        assert async_to_sync(_connect)(router, path, user) == (False, CLOSE_FORBIDDEN)
    assert async_to_sync(_connect)(router, path, world.owner.user)[0]


def _cookie(user: Any) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("in_memory_layer")
def test_the_asgi_app_refuses_a_strangers_session_and_a_foreign_origin(world, stranger):
    """The whole websocket stack of nlaweb.asgi (origin check, session auth, router, consumer)."""
    from nlaweb.asgi import application

    path = world.url(sorted(WS_DOORS)[0])
    origin = (b"origin", b"http://127.0.0.1")
    assert async_to_sync(_connect)(application, path, headers=[origin, _cookie(stranger.user)]) == (
        False,
        CLOSE_FORBIDDEN,
    )
    assert async_to_sync(_connect)(application, path, headers=[origin]) == (False, CLOSE_FORBIDDEN)
    owner = _cookie(world.owner.user)
    assert async_to_sync(_connect)(application, path, headers=[origin, owner])[0]
    foreign = (b"origin", b"http://evil.example")
    assert not async_to_sync(_connect)(application, path, headers=[foreign, owner])[0]
