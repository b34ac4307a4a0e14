"""Fixtures of the live stack. `stack` and `tiny_sources_file` are registered once, in tests/conftest.py,
so one session starts one worker and one server for tests/integration and tests/browser together
(a test that pauses the worker then pauses the only consumer of the queue); `_use_tiny_source` is
imported by those two directories' conftest only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from nlaweb.sources import configured as web_sources
from tests.live import START_S, Stack, running_stack, wait_until, write_sources_file


@pytest.fixture(scope="session")
def tiny_sources_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from tests.tiny_models import build_tiny_source  # torch: only when a stack test runs

    root = tmp_path_factory.mktemp("tiny-nla")
    source = build_tiny_source(root / "llama", family="llama")
    return write_sources_file(root / "sources.toml", [source]), source.id


@pytest.fixture(autouse=True)
def _use_tiny_source(settings, tiny_sources_file):
    path, source_id = tiny_sources_file
    settings.NLA_SOURCES_FILE = path
    settings.NLA_DEFAULT_SOURCE = source_id
    web_sources.configured_sources.cache_clear()
    web_sources.build_figures.cache_clear()
    yield
    web_sources.configured_sources.cache_clear()
    web_sources.build_figures.cache_clear()


def _test_database_url() -> str:
    db = settings.DATABASES["default"]
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{db.get('USER') or 'postgres'}@{host}:{port}/{db['NAME']}"


@pytest.fixture(scope="session")
def stack(
    django_db_setup, django_db_blocker, tiny_sources_file, tmp_path_factory
) -> Iterator[Stack]:
    path, source_id = tiny_sources_file
    env = {
        "DATABASE_URL": _test_database_url(),
        "NLA_SOURCES_FILE": str(path),
        "NLA_DEFAULT_SOURCE": source_id,
        "REPLY_MAX_NEW_TOKENS": "6",
        "DEBUG": "1",
    }
    with running_stack(env, tmp_path_factory.mktemp("stack-logs")) as live:
        yield live


def _busy_sessions() -> int:
    """Other sessions on the test database that are in a query or hold a transaction open."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
        )
        return int(cursor.fetchone()[0])


@pytest.fixture
def quiet_database_at_teardown(transactional_db):
    """After a live test, wait until the worker's last writes are over before the test database is
    flushed: TRUNCATE beside a worker's row locks can deadlock, and PostgreSQL then kills the flush."""
    yield
    wait_until(lambda: _busy_sessions() == 0, START_S, "the worker's last queries to end")
