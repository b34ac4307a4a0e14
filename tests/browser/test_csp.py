"""The page works under its Content-Security-Policy, and the policy stops what an attacker's markup
would bring: an injected inline script does not run, an injected inline style does not apply."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import _send, _start_conversation, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

#: Installed before the page's own scripts: every violation the browser reports, in order.
VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push({directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample});
});
"""


def test_the_page_works_under_the_policy_and_an_injected_inline_script_is_blocked(
    page: Page, stack
):
    page.add_init_script(VIOLATIONS)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    with page.expect_response(lambda r: r.url == stack.base_url + "/") as home:
        _start_conversation(page, stack)
    policy = home.value.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy

    # The whole flow: websocket, streamed reply, a click, the stages, the score.
    _send(page, "My cat loves to sleep")
    page.locator("article.message.user .tok:not(.tpl):not(.ws)").last.click()
    panel = page.locator("#panel .explanation")
    expect(panel).to_have_attribute("data-status", "done")
    expect(panel.locator('[data-role="relative-mse"]')).to_have_text(re.compile(r"\d"))
    assert page.evaluate("window.__violations") == []  # nothing of the app's own was blocked
    screenshot(page, "csp-page-works")

    page.evaluate(
        """() => {
      const s = document.createElement("script");
      s.textContent = "window.__injected = true";
      document.body.append(s);
      const p = document.createElement("p");
      p.id = "styled"; p.textContent = "x"; p.setAttribute("style", "color: rgb(255, 0, 0)");
      document.body.append(p);
    }"""
    )
    page.wait_for_function("window.__violations.length >= 2")
    assert page.evaluate("window.__injected") is None
    directives = sorted(v["directive"] for v in page.evaluate("window.__violations"))
    assert directives == ["script-src-elem", "style-src-attr"]
    color = page.evaluate("getComputedStyle(document.getElementById('styled')).color")
    assert color != "rgb(255, 0, 0)"
    assert any("Content Security Policy" in line for line in console), console
