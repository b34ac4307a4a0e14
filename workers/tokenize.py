"""The API's tokenize job: store the snapshot of a conversation the API created, chat-templated by the
target's template (`messages`) or tokenized as it is (`text`), so its tokens can be explained.

Django-free: rows go through an ApiStore (workers/store.py; nlaweb/jobs/api_store.py in a worker)."""

from __future__ import annotations

import logging
from typing import Any

from workers.nla.errors import InputTooLong, NlaError
from workers.nla.types import Engine, TokenizedConversation
from workers.pipeline import EngineFor, _save_snapshot, _turns, readable, registry_engine
from workers.store import ApiStore

log = logging.getLogger(__name__)


class TemplateRefused(NlaError):
    """The target's chat template raised on these messages (e.g. roles that must alternate)."""


def error_code(error: BaseException) -> str:
    """What kind of failure, for the web side to pick a status: the NlaError's class name, else
    `WorkerError`."""
    return type(error).__name__ if isinstance(error, NlaError) else "WorkerError"


def _check_length(engine: Engine, count: int) -> None:
    if count > engine.max_sequence_tokens:
        raise InputTooLong(
            f"This input has {count} tokens; the source accepts at most "
            f"{engine.max_sequence_tokens}. Send a shorter one."
        )


def _tokenized(engine: Engine, history: list[Any], raw: bool) -> TokenizedConversation:
    """The tokens of the input, refused when too long or when the chat template refuses it."""
    from jinja2 import TemplateError

    try:
        tokens = (
            engine.tokenize_text(history[-1].content) if raw else engine.tokenize(_turns(history))
        )
    except TemplateError as error:
        raise TemplateRefused(
            f"The target's chat template refuses these messages: {error}"
        ) from error
    _check_length(engine, len(tokens.token_ids))
    return tokens


def _save_raw_snapshot(
    store: ApiStore, engine: Engine, leaf_id: str, source_id: str, text: str
) -> None:
    tokenized = engine.tokenize_text(text)
    spans = [
        {
            "message_id": leaf_id if s.message_index == 0 else None,
            "role": s.role,
            "start": s.start,
            "end": s.end,
        }
        for s in tokenized.spans
    ]
    store.save_snapshot(
        leaf_id, source_id, list(tokenized.token_ids), list(tokenized.token_texts), spans
    )


def run_tokenize(store: ApiStore, job_id: str, engine_for: EngineFor = registry_engine) -> None:
    """Tokenize the job's leaf path and save its snapshot; the job row ends done or failed."""
    job = store.claim_api_job(job_id)
    if job is None:
        return
    try:
        leaf_id, raw = str(job.payload["leaf_id"]), bool(job.payload.get("raw_text"))
        history = store.tokenize_input(leaf_id)
        engine = engine_for(job.source_id)
        _tokenized(engine, history, raw)  # refused before anything is stored
        if raw:
            _save_raw_snapshot(store, engine, leaf_id, job.source_id, history[-1].content)
        else:
            _save_snapshot(store, engine, leaf_id, job.source_id, history)
        store.finish_api_job(job_id, {"leaf_id": leaf_id})
    except Exception as error:
        log.exception("tokenize job %s failed", job_id)
        store.fail_api_job(job_id, readable(error, "tokenizing this text"), error_code(error))
