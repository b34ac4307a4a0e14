"""The conversation page through an outage, in Debian's Chromium (issue 16 item 3a). While its Redis
or PostgreSQL is down, a socket the page opens is refused cleanly (close 4503, body[data-ws] reads
"unavailable", no 500 and no traceback anywhere); once the service is back the page's script opens
the socket again by itself, catches up with what finished while it was closed, and a click on a
token gets its explanation live.

A stack of the module's own (tests/live.py's `gated_stack`: its own PostgreSQL cluster and
redis-server, which the test stops and starts; never the machine's shared ones). The page's safety
poll is switched off, so what reaches the panel came by a frame or by the reconnect's catch-up.
Every wait is on a visible state or an event."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from nlaweb.middleware.socket_outage import CLOSE_UNAVAILABLE
from tests.browser.pages import _open_page, _record_frames, _send, _start_conversation, _types
from tests.integration.test_faults import VERBALIZING
from tests.live import GatedStack, Timeline, gated_stack, wait_until

pytestmark = pytest.mark.browser

#: Bound on the page's own reconnecting (its backoff tops out at 10 s) and on a worker's broker
#: reconnecting once Redis is back; it ends a hung run, it does not time a healthy one.
BACK_WITHIN_MS = 90_000

#: Every socket the page makes, and the code each one closed with; and the safety poll off.
SOCKETS = """
window.NLAWEB_SAFETY_POLL_MS = 1e9;
window.sockets = [];
window.closeCodes = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    window.sockets.push(this);
    this.addEventListener("close", (event) => window.closeCodes.push(event.code));
  }
};
"""
#: Every socket the page made is closed (so its script waits on its backoff timer).
SETTLED = "window.sockets.every((s) => s.readyState === WebSocket.CLOSED)"
USER_CHIPS = "article.message.user .tok:not(.tpl):not(.ws)"


@pytest.fixture(scope="module")
def services(tiny_sources_file, tmp_path_factory) -> Iterator[GatedStack]:
    root = tmp_path_factory.mktemp("reconnect")
    with gated_stack(tiny_sources_file, root, {}) as services:
        yield services


@pytest.fixture
def page(services: GatedStack, monkeypatch) -> Iterator[Page]:
    for page in _open_page(monkeypatch, 1400):
        page.add_init_script(SOCKETS)
        page.clock.install()  # real time flows; the test pauses the page's timers around a restart
        yield page
    services.gates.forget()
    if not services.redis.answers():
        services.redis.start()
    if not (services.pg.root / "data" / "postmaster.pid").exists():
        services.pg.start()


def _down(services: GatedStack, service: str) -> Any:
    return services.redis if service == "redis" else services.pg


def _drop_the_socket(page: Page) -> None:
    """What a network blip does: the page's open socket closes, and its script reconnects."""
    page.evaluate("window.sockets.forEach((s) => s.close())")


@pytest.mark.parametrize("service", ["redis", "postgres"])
def test_the_page_reads_unavailable_while_a_service_is_down_and_catches_up_by_itself_after(
    services: GatedStack, page: Page, service: str
):
    stack, body = services.stack, page.locator("body")
    t = Timeline(f"the page through a {service} outage")
    frames = _record_frames(page)
    statuses: list[int] = []
    page.on("response", lambda response: statuses.append(response.status))
    _start_conversation(page, stack)
    _send(page, "My cat loves to sleep")
    expect(page.locator("article.message.assistant .tok:not(.tpl):not(.ws)").first).to_be_visible()
    chips = page.locator(USER_CHIPS)

    # A click whose job is held mid-verbalizing; it finishes while the socket is closed.
    services.gates.close(VERBALIZING)
    with page.expect_response(re.compile(r"/explain$")):
        chips.last.click()
    held = page.locator("#panel .explanation")
    expect(held).to_have_attribute("data-status", "queued")
    wait_until(lambda: services.gates.reached(VERBALIZING), 120, "the worker to verbalize")
    held_id = held.get_attribute("data-explanation-id")

    t.mark("a click held mid-verbalizing")
    logged = stack.server_log.stat().st_size
    down = _down(services, service)
    down.stop()
    _drop_the_socket(page)
    expect(body).to_have_attribute("data-ws", "unavailable", timeout=BACK_WITHIN_MS)
    t.mark(f"{service} stopped, the socket dropped; the page reads unavailable")
    refused = page.evaluate("window.closeCodes.length")
    # Tried again with backoff while it lasts, refused each time the same way.
    wait_until(lambda: page.evaluate("window.closeCodes.length") > refused, 60, "a second refusal")
    expect(body).to_have_attribute("data-ws", "unavailable")
    # The page's timers held while the service starts again, and no attempt in flight: the next
    # socket is opened after the service is back, so "open" below can only come from it (a refused
    # socket is accepted before its 4503, so it reads "open" for a moment).
    page.clock.pause_at(page.evaluate("Date.now()") + 1)
    wait_until(lambda: page.evaluate(SETTLED), 60, "the page's last attempt to be refused")
    services.gates.open(VERBALIZING)
    down.start()
    t.mark(f"{service} back")
    page.clock.resume()

    expect(body).to_have_attribute("data-ws", "open", timeout=BACK_WITHIN_MS)
    t.mark("the page's socket open again, by itself")
    # The job finished while the socket was closed, its frames lost: the catch-up re-reads it.
    expect(held).to_have_attribute("data-status", "done", timeout=BACK_WITHIN_MS)
    t.mark("the section held during the outage done")

    # Frames flow again: a click on another token is explained live.
    before = len(frames)
    with page.expect_response(re.compile(r"/explain$")):
        chips.first.click()
    fresh = page.locator(f'#panel .explanation:not([data-explanation-id="{held_id}"])')
    expect(fresh).to_have_attribute("data-status", "done", timeout=BACK_WITHIN_MS)
    fresh_id = fresh.get_attribute("data-explanation-id")
    live = [f for f in frames[before:] if f.get("explanation_id") == fresh_id]
    assert _types(live)[-1:] == ["explanation.done"], _types(frames[before:])
    t.mark("a new click explained live")
    print(t)

    # Every socket opened during the outage was refused with 4503; the one open now never was.
    codes, open_now = page.evaluate(
        "[window.closeCodes, window.sockets.at(-1).readyState === WebSocket.OPEN]"
    )
    print("close codes of the page's sockets:", codes)
    assert open_now and len(codes) == page.evaluate("window.sockets.length") - 1, codes
    assert codes[0] in (1000, 1005, CLOSE_UNAVAILABLE), codes  # the drop, or the server's 4503
    assert len(codes) >= 3 and set(codes[1:]) == {CLOSE_UNAVAILABLE}, codes
    assert not [s for s in statuses if s >= 500 and s != 503], statuses

    expect(page.locator("#problem")).to_have_count(0)
    assert "Traceback" not in page.content()
    server_log = stack.server_log.read_bytes()[logged:].decode(errors="replace")
    assert "Traceback" not in server_log and "Exception inside application" not in server_log
    assert "refused: outage" in server_log
    assert " 500 " not in server_log, server_log
