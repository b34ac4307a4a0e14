"""Enqueue worker jobs by task name, after the current transaction commits (the row exists first)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from nlaweb.celery import app
from workers.contracts import GPU_QUEUE


@dataclass(frozen=True)
class Job:
    """One task to send: a value, so tests can read what a commit would enqueue."""

    task_name: str
    args: list[str | list[str]]

    def __call__(self) -> None:
        app.send_task(self.task_name, args=self.args, queue=GPU_QUEUE)


def enqueue(task_name: str, *args: str | list[str]) -> None:
    transaction.on_commit(Job(task_name, list(args)))
