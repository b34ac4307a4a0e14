"""Turn an API request's input into a stored conversation and its snapshot (the tokens to explain).

`messages` become a conversation of those messages and `text` a conversation of one raw-text message;
the worker tokenizes them (the web never loads a tokenizer) in a `workers.tokenize` job whose ApiJob
row the request waits on. The same input asked again by the same user for the same source reuses its
conversation, so stored explanations come back cached. `cacheId` names a conversation of the caller's
(made by the API or on the page) and uses the snapshot of its current path."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from nlaweb.api.http_errors import BadRequest, NotFound, TimedOut, Unavailable
from nlaweb.api.models import ApiInput, ApiJob
from nlaweb.api.waiting import db_async, wait_for
from nlaweb.chat.models import Conversation, Message, Snapshot
from nlaweb.jobs.broker import enqueue
from workers.contracts import TASK_TOKENIZE, api_job_group

#: Worker failures that the request itself caused (a 400, not a 503).
INPUT_ERRORS = {"InputTooLong", "PositionOutOfRange", "CheckpointIncompatible", "TemplateRefused"}


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class Prepared:
    """A conversation, the leaf whose snapshot is wanted, and the job tokenizing it (if needed)."""

    conversation_id: UUID
    leaf_id: UUID
    job_id: UUID | None


def input_hash(turns: Sequence[Turn], raw_text: bool) -> str:
    doc = {"raw": raw_text, "turns": [[t.role, t.content] for t in turns]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _create(user: User, source_id: str, turns: Sequence[Turn], raw: bool, digest: str) -> ApiInput:
    conversation = Conversation.objects.create(
        owner=user, source_id=source_id, title=turns[0].content[:80]
    )
    parent = None
    for turn in turns:
        parent = Message.objects.create(
            conversation=conversation, parent=parent, role=turn.role, content=turn.content
        )
    assert parent is not None  # turns are never empty (the schema's min_length)
    conversation.head = parent
    conversation.save(update_fields=["head", "updated_at"])
    return ApiInput.objects.create(
        conversation=conversation,
        leaf=parent,
        owner=user,
        source_id=source_id,
        input_hash=digest,
        raw_text=raw,
    )


def _tokenize_job(user: User, source_id: str, leaf: Message, raw: bool) -> UUID:
    """A pending tokenize job of `leaf` (one whose worker went silent does not count: the sweeper
    requeues or fails it), else a new one enqueued after commit."""
    silent = ApiJob.objects.silent(timezone.now()).values("pk")
    pending = (
        ApiJob.objects.filter(
            kind=ApiJob.Kind.TOKENIZE,
            payload__leaf_id=str(leaf.pk),
            status__in=[ApiJob.Status.QUEUED, ApiJob.Status.RUNNING],
        )
        .exclude(pk__in=silent)
        .first()
    )
    if pending is not None:
        return pending.pk
    job = ApiJob.objects.create(
        owner=user,
        kind=ApiJob.Kind.TOKENIZE,
        source_id=source_id,
        payload={"leaf_id": str(leaf.pk), "raw_text": raw},
    )
    enqueue(TASK_TOKENIZE, str(job.pk))
    return job.pk


@transaction.atomic
def prepare_input(user: User, source_id: str, turns: Sequence[Turn], raw: bool) -> Prepared:
    digest = input_hash(turns, raw)
    key = dict(owner=user, source_id=source_id, input_hash=digest)
    found = ApiInput.objects.filter(**key).select_related("leaf").first()
    if found is None:
        try:
            with transaction.atomic():
                found = _create(user, source_id, turns, raw, digest)
        except IntegrityError:  # the same input, asked at the same moment by another request
            found = ApiInput.objects.select_related("leaf").get(**key)
    leaf = found.leaf
    has_snapshot = Snapshot.objects.filter(leaf=leaf).exists()
    job = None if has_snapshot else _tokenize_job(user, source_id, leaf, raw)
    return Prepared(found.conversation_id, leaf.pk, job)


def prepare_cached(user: User, conversation_id: UUID, source_id: str | None) -> Prepared:
    """The caller's conversation and the deepest snapshot on its current path."""
    conversation = Conversation.objects.filter(pk=conversation_id, owner=user).first()
    if conversation is None:
        raise NotFound(f"You have no conversation {conversation_id} (cacheId).")
    if source_id and conversation.source_id != source_id:
        check_reads_conversation(conversation, source_id)
    path = conversation.path()
    snapshots = {s.leaf_id for s in Snapshot.objects.filter(leaf__in=path)}
    leaf = next((m for m in reversed(path) if m.pk in snapshots), None)
    if leaf is None:
        raise BadRequest(f"Conversation {conversation_id} has no tokens yet; try again shortly.")
    return Prepared(conversation.pk, leaf.pk, None)


def check_reads_conversation(conversation: Conversation, source_id: str) -> None:
    """BadRequest unless `source_id` serves the target model of the conversation's own source (its
    tokens are that target's): another NLA of the same model may explain them (explain with…)."""
    from nlaweb.explanations.request import ExplainRejected
    from nlaweb.explanations.with_source import check_same_target

    try:
        check_same_target(conversation.source_id, source_id)
    except ExplainRejected as rejected:
        raise BadRequest(
            f"Conversation {conversation.pk} uses the NLA source '{conversation.source_id}', "
            f"not '{source_id}': {rejected}"
        ) from None


@db_async
def _finished_job(job_id: UUID) -> ApiJob | None:
    job = ApiJob.objects.filter(pk=job_id).first()
    return job if job is None or job.is_finished else None


def job_failure(job: ApiJob) -> BadRequest | Unavailable:
    """The error a failed job answers: the request's fault (400) or the workers' (503)."""
    if job.error_code in INPUT_ERRORS:
        return BadRequest(job.error)
    return Unavailable(job.error or "The worker failed this job.")


async def finished_job(job_id: UUID, doing: str) -> ApiJob:
    """The job's row once it is done; raises its failure, or TimedOut after API_WAIT_SECONDS."""
    job = await wait_for(
        api_job_group(str(job_id)), lambda: _finished_job(job_id), settings.API_WAIT_SECONDS
    )
    if job is None:
        raise TimedOut(
            f"The workers did not finish {doing} within {settings.API_WAIT_SECONDS} s; "
            "the job goes on, and the same request asked again later picks it up."
        )
    if job.status != ApiJob.Status.DONE:
        raise job_failure(job)
    return job


@db_async
def _snapshot(leaf_id: UUID) -> Snapshot:
    return Snapshot.objects.get(leaf_id=leaf_id)


async def snapshot_of(prepared: Prepared) -> Snapshot:
    """The prepared leaf's snapshot, once its tokenize job (if any) has stored it."""
    if prepared.job_id is not None:
        await finished_job(prepared.job_id, "tokenizing the input")
    return await _snapshot(prepared.leaf_id)
