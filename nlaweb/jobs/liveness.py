"""When a worker counts as gone, and the sentences a row gets when workers keep dying on it.

Shared by the QuerySets of explanations, replies and API jobs, the store and the sweeper."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q


def silent_before(now: datetime) -> datetime:
    """A running row whose worker last showed life before this has lost its worker (killed, its
    machine gone, cut off from the database): HEARTBEAT_TIMEOUT_S without a heartbeat."""
    return now - timedelta(seconds=settings.HEARTBEAT_TIMEOUT_S)


def silent(now: datetime) -> Q:
    """Rows whose worker showed no life since `silent_before(now)`; combine with status=running.
    A row from before heartbeats existed is judged by when it started."""
    before = silent_before(now)
    return Q(heartbeat_at__lt=before) | Q(heartbeat_at__isnull=True, started_at__lt=before)


def gave_up(attempts: int) -> bool:
    """Workers died on it JOB_MAX_ATTEMPTS times: it fails instead of being taken again."""
    return attempts >= settings.JOB_MAX_ATTEMPTS


def explanation_gave_up(attempts: int) -> str:
    return (
        f"The worker stopped {attempts} times while explaining this token (it was killed, perhaps "
        "for lack of memory); try fewer tokens or a shorter conversation."
    )


def reply_gave_up(attempts: int) -> str:
    return (
        f"The reply could not be written (the worker stopped {attempts} times while writing it); "
        "send again or regenerate."
    )


def api_job_gave_up(attempts: int) -> str:
    return (
        f"The worker stopped {attempts} times while running this job (it was killed, perhaps for "
        "lack of memory); send fewer or shorter vectors, or try again later."
    )
