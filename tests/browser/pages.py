"""What the browser tests share: Debian's Chromium through Playwright (a `page` fixture, registered
in conftest.py), a recorder of what the panel showed, and the steps a person takes."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.db import connections
from playwright.sync_api import Page, expect, sync_playwright

from tests.live import FIRST_JOB_S, REPO

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NUMBER = re.compile(r"^-?\d+\.\d\d$")
STAGES_SHOWN = ["queued", "loading", "capturing", "verbalizing", "scoring"]

# Records what each explanation section of the panel shows after every change (one entry per section
# per DOM mutation batch), so a test can check the stages and the streamed text that were on screen
# before the final score.
PANEL_RECORDER = """
window.panelLog = [];
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("panel");
  if (!root) return;
  new MutationObserver(() => {
    root.querySelectorAll(".explanation").forEach((e) => {
      const active = e.querySelector(".stages li.active");
      const text = e.querySelector('[data-role="text"]');
      window.panelLog.push({
        id: e.dataset.explanationId,
        status: e.dataset.status,
        stage: active ? active.dataset.stage : null,
        text: text ? text.textContent : null,
      });
    });
  }).observe(root, { childList: true, subtree: true, attributes: true, characterData: true });
});
"""


def _open_page(monkeypatch, width: int) -> Iterator[Page]:
    """A fresh headless Chromium page `width` px wide (the `page` fixture's body)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop
    # expect() has its own 5 s default; a worker's first job imports torch and loads the models,
    # which on 2 loaded cores can take minutes: the bound only ends a hung run.
    expect.set_options(timeout=FIRST_JOB_S * 1000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.set_default_timeout(FIRST_JOB_S * 1000)
        page.add_init_script(PANEL_RECORDER)
        yield page
        # While Playwright's loop runs, Django keys its connections by context rather than by
        # thread, so the test's queries used a connection of their own: close it here, or the test
        # database cannot be dropped at the end of the session.
        connections.close_all()
        browser.close()


def _record_frames(page: Page) -> list[dict[str, Any]]:
    """Every websocket frame the page receives, parsed, in order."""
    frames: list[dict[str, Any]] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))),
    )
    return frames


def _start_conversation(page: Page, stack) -> None:
    page.goto(stack.base_url + "/")
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("body")).to_have_attribute("data-ws", "open")


def _send(page: Page, text: str) -> None:
    page.get_by_placeholder("Message the model…").fill(text)
    page.get_by_role("button", name="Send").click()


def _conversation_id(page: Page) -> str:
    return re.search(r"/c/([0-9a-f-]{36})/", page.url).group(1)


def _types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


def _words(text: str) -> str:
    return " ".join(text.split())


def _stages_shown(entries: list[dict[str, Any]]) -> list[str]:
    """The active stages a section showed, in order, without repeats."""
    shown: list[str] = []
    for entry in entries:
        if entry["stage"] and shown[-1:] != [entry["stage"]]:
            shown.append(entry["stage"])
    return shown


#: Screenshots of every page state the tests reach, for people to look at (CI keeps the folder).
ARTIFACTS = Path(os.environ.get("NLAWEB_ARTIFACTS", REPO / "var" / "test-artifacts"))


def screenshot(page: Page, name: str) -> Path:
    path = ARTIFACTS / "screens" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
