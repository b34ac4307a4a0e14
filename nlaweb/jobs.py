"""Enqueue worker jobs by task name, after the current transaction commits (the row exists first)."""

from __future__ import annotations

from django.db import transaction

from nlaweb.celery import app
from workers.contracts import GPU_QUEUE


def enqueue(task_name: str, *args: str | list[str]) -> None:
    transaction.on_commit(lambda: app.send_task(task_name, args=list(args), queue=GPU_QUEUE))
