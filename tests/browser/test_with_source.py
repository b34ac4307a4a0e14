"""Issue 17 item 4 in Chromium: a token explained by its conversation's NLA, then "Explain with…" an
NLA of the same target at another layer, both side by side with their scores; a reload of the link
shows the same view. The quick start's mode serves both sources (`manage.py serve`: SQLite, the
in-process broker and the embedded worker thread), as it serves both demo blocks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import _open_page, _send, screenshot
from tests.live import REPO, START_S, free_port, wait_until, write_sources_file

pytestmark = [pytest.mark.browser]


@pytest.fixture(scope="module")
def two_source_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded mode serving two tiny sources of one target (blocks 2 and 1); its base URL."""
    from tests.two_sources import build_two_sources

    root = tmp_path_factory.mktemp("two-sources")
    sources = build_two_sources(root / "nla")
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env |= {
        "NLAWEB_DATA_DIR": str(root / "data"),
        "NLA_SOURCES_FILE": str(write_sources_file(root / "sources.toml", list(sources))),
        "REPLY_MAX_NEW_TOKENS": "6",
        "PYTHONUNBUFFERED": "1",
        "DEBUG": "1",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=300)
    port = free_port()
    log_path = root / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [*manage, "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "Listening on TCP" in log_path.read_text() or server.poll() is not None,
            START_S,
            "manage.py serve",
        )
        assert server.poll() is None, log_path.read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine: the worker thread is mid-job
            server.kill()
            server.wait(timeout=30)


@pytest.fixture
def page(monkeypatch) -> Iterator[Page]:
    yield from _open_page(monkeypatch, 1400)


def _explain_first_word(page: Page):
    reply = page.locator("article.message.user")
    token = reply.locator(".tok:not(.tpl):not(.ws)").first
    with page.expect_response(re.compile(r"/explain$")):
        token.click()
    section = page.locator("#panel > .explanation, #panel .explanation").first
    expect(section).to_have_attribute("data-status", "done")
    return section


def test_a_token_is_read_by_two_nlas_side_by_side_and_a_reload_keeps_them(
    page: Page, two_source_server
):
    page.goto(two_source_server + "/")
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("body")).to_have_attribute("data-ws", "open")
    _send(page, "My cat loves to sleep")
    expect(page.locator("#thread")).to_have_attribute("data-generating", "")
    section = _explain_first_word(page)
    mine_id = section.get_attribute("data-explanation-id")

    section.get_by_role("button", name="Explain with…").click()
    choice = section.get_by_role("button", name="tiny llama · layer 1 · test NLA")
    expect(choice).to_be_visible()
    expect(section.locator('[data-role="with-source"]')).not_to_contain_text("layer 2")
    choice.click()
    side = section.locator(".by-source")
    theirs = side.locator(".source-side .explanation")
    expect(theirs).to_have_attribute("data-status", "done")
    expect(side.locator(".mine .source-head")).to_have_text(re.compile(r"tiny llama · layer 2"))
    expect(side.locator(".source-side .source-head")).to_have_text(
        re.compile(r"tiny llama · layer 1")
    )
    for column in (side.locator(".mine"), side.locator(".source-side")):
        expect(column).to_contain_text("relative MSE")
        expect(column).to_contain_text("FVE")
        expect(column).to_contain_text("cosine")
    theirs_id = theirs.get_attribute("data-explanation-id")
    assert theirs_id != mine_id
    expect(page).to_have_url(re.compile(rf"open={mine_id},{theirs_id}"))
    # The other source's reading tints nothing: the token keeps its own source's tint.
    token = page.locator(f'#thread .tok[data-position="{section.get_attribute("data-position")}"]')
    mine_tint = section.get_attribute("data-confidence")
    expect(token).to_have_class(re.compile(rf"\b{mine_tint}\b"))
    screenshot(page, "with-source-side-by-side")

    page.reload()
    section = page.locator(f'#panel [data-explanation-id="{mine_id}"]')
    side = section.locator(".by-source")
    expect(side.locator(f'.source-side [data-explanation-id="{theirs_id}"]')).to_have_attribute(
        "data-status", "done"
    )
    expect(page.locator("#panel .explanation:not(.source-side .explanation)")).to_have_count(1)
    expect(page).to_have_url(re.compile(rf"open={mine_id},{theirs_id}"))
    screenshot(page, "with-source-after-reload")
    page.set_viewport_size({"width": 800, "height": 900})
    expect(side.locator(".source-side")).to_be_visible()
    screenshot(page, "with-source-800px")

    side.locator('[data-role="close-with"]').click()
    expect(section.locator(".by-source")).to_have_count(0)
    expect(page).to_have_url(re.compile(rf"open={mine_id}$"))
