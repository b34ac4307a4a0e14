"""The Content-Security-Policy allows scripts and styles from the site's files only, so no template
may carry an inline script, an inline style or an event-handler attribute (this scan guards every
template, including ones added later), and private pages are never cached."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import reverse

from nlaweb.chat.conversation import start_conversation
from tests.live import REPO

TEMPLATES = sorted((REPO / "templates").rglob("*.html"))
#: An opening tag's attributes: quoted values may hold ">" (Django tags inside them do).
_TAG = re.compile(r"<(?P<name>[a-zA-Z][\w-]*)(?P<attrs>(?:\"[^\"]*\"|'[^']*'|[^'\">])*)>", re.S)
_SCRIPT = re.compile(r"<script\b(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.S | re.I)


def inline_code(html: str) -> list[str]:
    """What in `html` the policy would block: script bodies, <style>, style= and on*= attributes,
    javascript: URLs."""
    found = [f"<script>{m['body'][:40]}" for m in _SCRIPT.finditer(html) if m["body"].strip()]
    found += [
        f"<script{m['attrs']}> without src"
        for m in _SCRIPT.finditer(html)
        if "src=" not in m["attrs"]
    ]
    found += ["<style>" for _ in re.finditer(r"<style\b", html, re.I)]
    for tag in _TAG.finditer(html):
        attrs = re.sub(r"\"[^\"]*\"|'[^']*'", '""', tag["attrs"])  # names only, not values
        found += [
            f"<{tag['name']} {a}=" for a in re.findall(r"\s(style|on[a-z]+)\s*=", attrs, re.I)
        ]
    found += [m[0] for m in re.finditer(r"javascript:", html, re.I)]
    return found


def test_the_scan_finds_each_kind_of_inline_code():
    page = """<p style="color:red">x</p><button onclick="go()">y</button><style>p{}</style>
    <script>alert(1)</script><a href="javascript:go()">z</a><span title='a>b' onmouseover=x>w</span>"""
    assert len(inline_code(page)) == 7
    quiet = """<script src="/static/a.js" defer></script><code>&lt;iframe style="border:0"&gt;</code>
    <span data-heat="0.4" title="style=x">t</span><div hx-vals='{"on": "x"}'></div>"""
    assert inline_code(quiet) == []


def test_no_template_has_inline_script_or_style():
    assert len(TEMPLATES) > 20
    offenders = {
        str(p.relative_to(REPO)): found for p in TEMPLATES if (found := inline_code(p.read_text()))
    }
    assert offenders == {}


def test_the_static_scripts_never_write_a_style_attribute():
    for script in (REPO / "static" / "nlaweb").glob("*.js"):
        text = script.read_text()
        assert not re.search(r"setAttribute\(\s*['\"]style|cssText|\.innerHTML\s*=", text), script


def _policy(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in header.split("; ")}


def test_every_page_has_the_policy_without_unsafe_inline_or_eval(owner):
    conversation = start_conversation(owner.user)
    for client, url in (
        (Client(), reverse("home")),
        (Client(), reverse("login")),
        (owner.client, reverse("conversation", args=[conversation.id])),
    ):
        policy = _policy(client.get(url))
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"], url
        assert policy["default-src"] == ["'self'"] and policy["object-src"] == ["'none'"]
        assert policy["connect-src"] == ["'self'"]  # the websocket of the page's own origin
        assert policy["frame-ancestors"] == ["'none'"]


def test_htmx_is_told_not_to_inject_its_indicator_style(db):
    page = Client().get(reverse("home")).content.decode()
    assert """<meta name="htmx-config" content='{"includeIndicatorStyles": false}'>""" in page
    assert "nlaweb/styled.js" in page


def test_private_pages_are_never_stored_by_a_cache(owner):
    conversation = start_conversation(owner.user)
    private = owner.client.get(reverse("conversation", args=[conversation.id]))
    assert private.status_code == 200
    assert private.headers["Cache-Control"] == "private, no-store"
    for url in (reverse("home"), reverse("api_keys")):
        assert owner.client.get(url).headers["Cache-Control"] == "private, no-store", url
    # A view that chose its own header keeps it; the health probe reads no session.
    assert "Cache-Control" not in Client().get("/healthz").headers


def test_no_template_comment_spans_lines():
    """Django's {# … #} ends on its own line; one left open prints itself onto the page."""
    open_comments = {
        str(p.relative_to(REPO)): n
        for p in TEMPLATES
        for n, line in enumerate(p.read_text().splitlines(), start=1)
        if "{#" in line and "#}" not in line.split("{#", 1)[1]
    }
    assert open_comments == {}
