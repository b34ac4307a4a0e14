from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.browser.pages import _open_page
from tests.stack_fixtures import _use_tiny_source, quiet_database_at_teardown  # noqa: F401


@pytest.fixture
def page(stack, monkeypatch, quiet_database_at_teardown) -> Iterator[Page]:  # noqa: F811
    yield from _open_page(monkeypatch, 1400)
