"""Celery boundary of the GPU worker: ids in, rows and frames out. Models load lazily, once per
process, on the first job (never at import, never before a fork). Each job's rows carry its task id
and a heartbeat while it runs, so the sweeper can tell a dead job from a slow one."""

from __future__ import annotations

import logging
import threading

from celery import Task, shared_task
from django.conf import settings

from workers.contracts import TASK_EXPLAIN, TASK_REPLY, TASK_TOKENIZE, TASK_VECTORS
from workers.nla.errors import NlaError
from workers.nla.types import Engine
from workers.source_config import served_sources

log = logging.getLogger(__name__)
_configured = threading.Lock()
_done = False


def _configure_engines() -> None:
    """Tell the engine registry which sources this worker serves (from settings, once)."""
    global _done
    with _configured:
        if _done:
            return
        from nlaweb.sources.configured import configured_sources
        from workers.nla import registry

        try:
            served = served_sources(configured_sources(), settings.NLA_WORKER_SOURCES)
        except NlaError as error:  # jobs then fail with "this worker serves: none", not hang
            log.error("%s", error.message)
            served = []
        registry.configure(
            served,
            device=settings.NLA_DEVICE,
            dtype=settings.NLA_DTYPE,
            backend=settings.NLA_BACKEND,
        )
        _done = True


def _engine(source_id: str) -> Engine:
    """The engine of `source_id`, configuring this process's sources first: only a job that has
    rows to run imports torch (a redelivered job whose rows are done or failed returns at once)."""
    from workers.pipeline import registry_engine

    _configure_engines()
    return registry_engine(source_id)


@shared_task(name=TASK_REPLY, ignore_result=True, bind=True)
def reply(task: Task, message_id: str) -> None:
    from nlaweb.jobs.django_store import DjangoStore
    from workers.pipeline import run_reply

    store = DjangoStore(job_id=task.request.id)
    with store.heartbeat():
        run_reply(store, message_id, settings.REPLY_MAX_NEW_TOKENS, engine_for=_engine)


@shared_task(name=TASK_EXPLAIN, ignore_result=True, bind=True)
def explain(task: Task, explanation_ids: list[str]) -> None:
    from nlaweb.jobs.django_store import DjangoStore
    from workers.pipeline import run_explain

    store = DjangoStore(job_id=task.request.id)
    with store.heartbeat():
        run_explain(store, explanation_ids, engine_for=_engine)


@shared_task(name=TASK_TOKENIZE, ignore_result=True, bind=True)
def tokenize(task: Task, job_id: str) -> None:
    from nlaweb.jobs.api_store import ApiStore
    from workers.tokenize import run_tokenize

    _configure_engines()
    store = ApiStore(job_id=task.request.id)
    with store.heartbeat():
        run_tokenize(store, job_id)


@shared_task(name=TASK_VECTORS, ignore_result=True, bind=True)
def vectors(task: Task, job_id: str) -> None:
    from nlaweb.jobs.api_store import ApiStore
    from workers.raw_vectors import run_vectors

    _configure_engines()
    store = ApiStore(job_id=task.request.id)
    with store.heartbeat():
        run_vectors(store, job_id)
