"""Celery boundary of the GPU worker: ids in, rows and frames out. Models load lazily, once per
process, on the first job (never at import, never before a fork)."""

from __future__ import annotations

import logging
import threading

from celery import shared_task
from django.conf import settings

from workers.contracts import TASK_EXPLAIN, TASK_REPLY, TASK_TOKENIZE, TASK_VECTORS
from workers.nla.errors import NlaError
from workers.sources import served_sources

log = logging.getLogger(__name__)
_configured = threading.Lock()
_done = False


def _configure_engines() -> None:
    """Tell the engine registry which sources this worker serves (from settings, once)."""
    global _done
    with _configured:
        if _done:
            return
        from nlaweb.sources import configured_sources
        from workers.nla import registry

        try:
            served = served_sources(configured_sources(), settings.NLA_WORKER_SOURCES)
        except NlaError as error:  # jobs then fail with "this worker serves: none", not hang
            log.error("%s", error.message)
            served = []
        registry.configure(served, device=settings.NLA_DEVICE, dtype=settings.NLA_DTYPE)
        _done = True


@shared_task(name=TASK_REPLY, ignore_result=True)
def reply(message_id: str) -> None:
    from workers.jobs import run_reply
    from workers.store import DjangoStore

    _configure_engines()
    run_reply(DjangoStore(), message_id, settings.REPLY_MAX_NEW_TOKENS)


@shared_task(name=TASK_EXPLAIN, ignore_result=True)
def explain(explanation_ids: list[str]) -> None:
    from workers.jobs import run_explain
    from workers.store import DjangoStore

    _configure_engines()
    run_explain(DjangoStore(), explanation_ids)


@shared_task(name=TASK_TOKENIZE, ignore_result=True)
def tokenize(job_id: str) -> None:
    from workers.api_store import ApiStore
    from workers.tokenize import run_tokenize

    _configure_engines()
    run_tokenize(ApiStore(), job_id)


@shared_task(name=TASK_VECTORS, ignore_result=True)
def vectors(job_id: str) -> None:
    from workers.api_store import ApiStore
    from workers.vectors import run_vectors

    _configure_engines()
    run_vectors(ApiStore(), job_id)
