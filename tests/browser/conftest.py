from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.browser.pages import _open_page
from tests.stack_fixtures import _use_tiny_source  # noqa: F401


@pytest.fixture
def page(stack, monkeypatch) -> Iterator[Page]:
    yield from _open_page(monkeypatch, 1400)
