"""What a worker does for one job: drive the engine, store results, publish progress frames.

Django-free: it talks to the database and the channel layer only through a store (the Store
protocol of workers/store.py; workers/tasks.py hands it nlaweb/jobs/django_store.py's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from workers.contracts import (
    ChatDelta,
    ChatDone,
    ChatFailed,
    ExplanationDone,
    ExplanationFailed,
    ExplanationProgress,
    ExplanationText,
)
from workers.nla.errors import NlaError, is_time_limit
from workers.nla.types import MAX_POSITIONS_PER_REQUEST, Engine, Reply
from workers.store import ExplainJob, JobRow, ReplyJob, SnapshotStore, Store, Turn

log = logging.getLogger(__name__)

#: At most one text frame per row per this many seconds; the final text always goes out.
TEXT_FRAME_INTERVAL_S = 0.1

#: Most rows one job explains (its own included) when it refills freed slots: about four batches'
#: time, so a job under a stream of clicks ends well within its time limit.
REFILL_MAX_ROWS = 4 * MAX_POSITIONS_PER_REQUEST

#: The engine serving a source id (`workers.nla.registry.get_engine` in a worker).
EngineFor = Callable[[str], Engine]


def registry_engine(source_id: str) -> Engine:
    """The worker's engine for `source_id`: loaded once per process (imports torch on first use)."""
    from workers.nla.registry import get_engine

    return get_engine(source_id)


def readable(error: BaseException, doing: str) -> str:
    """One sentence for the user; stack traces go to the log only. A time limit reads as one
    wherever it fired, even inside an error that wrapped it."""
    if is_time_limit(error):
        return f"The worker gave up on {doing} after its time limit; try fewer tokens or a shorter conversation."
    if isinstance(error, NlaError):
        return error.message
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return f"The worker ran out of memory while {doing}; try a shorter conversation."
    return f"The worker failed while {doing} ({type(error).__name__}); the details are in its log."


class Throttle:
    """Calls `send` at most once per interval per key; `flush` sends the last held value."""

    def __init__(self, send: Callable[[int, str], None], interval: float = TEXT_FRAME_INTERVAL_S):
        self._send, self._interval = send, interval
        self._last: dict[int, float] = {}
        self._held: dict[int, str] = {}

    def __call__(self, key: int, text: str) -> None:
        now = time.monotonic()
        if now - self._last.get(key, 0.0) >= self._interval:
            self._last[key] = now
            self._held.pop(key, None)
            self._send(key, text)
        else:
            self._held[key] = text

    def flush(self, key: int | None = None) -> None:
        """Send what is held (for `key` only, when given)."""
        keys = list(self._held) if key is None else [key] if key in self._held else []
        for k in keys:
            self._send(k, self._held.pop(k))


def _turns(history: list[Any]) -> list[Any]:
    from workers.nla.types import ChatTurn

    return [ChatTurn(role=t.role, content=t.content) for t in history]


def _save_snapshot(
    store: SnapshotStore, engine: Engine, leaf_id: str, source_id: str, history: list[Any]
) -> None:
    tokenized = engine.tokenize(_turns(history))
    ids = [t.message_id for t in history]
    spans = [
        {
            "message_id": ids[s.message_index] if 0 <= s.message_index < len(ids) else None,
            "role": s.role,
            "start": s.start,
            "end": s.end,
        }
        for s in tokenized.spans
    ]
    store.save_snapshot(
        leaf_id, source_id, list(tokenized.token_ids), list(tokenized.token_texts), spans
    )


def run_reply(
    store: Store, message_id: str, max_new_tokens: int, engine_for: EngineFor = registry_engine
) -> None:
    """Write the assistant message of a placeholder (generate it, continue it, or take the text the
    person edited in), streaming deltas; then tokenize the path to it."""
    job = store.reply_job(message_id)
    if job is None:
        return
    text = job.content  # a failure keeps what the person wrote (edited, continued turns)
    try:
        engine = engine_for(job.source_id)
        user_leaf = job.history[-1]
        _save_snapshot(store, engine, user_leaf.message_id, job.source_id, job.history)
        throttle = Throttle(
            lambda _k, t: store.publish(
                job.conversation_id, ChatDelta(message_id=message_id, text=t)
            )
        )

        def on_text(so_far: str) -> None:
            nonlocal text
            text = so_far
            throttle(0, so_far)

        reply = _write(engine, job, max_new_tokens, on_text)
        text = reply.text
        throttle.flush()
        # Tokens first, then "done": a reply that reads as done always has its snapshot, so a page
        # (or a test) that sees it done can render and explain its tokens at once.
        full = [*job.history, Turn(message_id, "assistant", text)]
        _save_snapshot(store, engine, message_id, job.source_id, full)
        store.finish_reply(message_id, text, truncated=reply.truncated)
        store.publish(job.conversation_id, ChatDone(message_id=message_id))
    except Exception as error:
        log.exception("reply %s failed", message_id)
        reason = readable(error, "writing the reply")
        store.fail_reply(message_id, text, reason)
        store.publish(job.conversation_id, ChatFailed(message_id=message_id, error=reason))


def _write(
    engine: Engine, job: ReplyJob, max_new_tokens: int, on_text: Callable[[str], None]
) -> Reply:
    """The message's final text: the person's own for an edited turn, else generated (after the
    message's current text when it is continued)."""
    from workers.nla.types import GenerationSettings, Reply

    if job.origin == "edited":
        return Reply(job.content, truncated=False)
    settings = GenerationSettings(
        temperature=job.temperature, max_new_tokens=max_new_tokens, seed=job.seed
    )
    prefix = job.content if job.origin == "continued" else ""
    return engine.reply(_turns(job.history), settings, on_text, prefix=prefix)


class _Progress:
    """RefillProgress that stores stages and results and publishes throttled frames, for the job's
    rows and for those it takes into freed slots (`more`), one row at a time where asked."""

    def __init__(self, store: Store, job: ExplainJob) -> None:
        self.store, self.job = store, job
        self.text = Throttle(self._send_text)
        self.rows: list[JobRow] = list(job.rows)  # by index: the job's, then those taken later
        self.ended: set[int] = set()  # indexes stored as done or failed
        self.reported: set[int] = set()  # indexes whose waiters heard (`job_finished`)

    def stage(self, name: str, done: int, total: int) -> None:
        self.text.flush()  # the last text of a stage goes out before the next stage begins
        self.store.set_stage(self.job.explanation_ids, name)
        for row in self.job.rows:
            self.store.publish(
                row.conversation_id,
                ExplanationProgress(
                    explanation_id=row.explanation_id, stage=name, done=done, total=total
                ),
            )

    def row_stage(self, index: int, name: str) -> None:
        row = self.rows[index]
        self.text.flush(index)
        self.store.set_stage([row.explanation_id], name)
        frame = ExplanationProgress(explanation_id=row.explanation_id, stage=name, done=0, total=1)
        self.store.publish(row.conversation_id, frame)

    def more(self) -> tuple[list[int], int] | None:
        """The next waiting row of the job's source and settings, taken by this job; None when
        none waits, or once the job took REFILL_MAX_ROWS."""
        if len(self.rows) >= REFILL_MAX_ROWS:
            return None
        taken = self.store.take_waiting(self.job, 1)
        if taken is None:
            return None
        [group] = taken.groups
        self.rows += group.rows
        if (len(self.rows) - len(self.job.rows)) % MAX_POSITIONS_PER_REQUEST == 1:
            self.store.queue_moved(self.job.source_id)  # as often as a job of a full batch does
        return group.token_ids, group.rows[0].position

    def store_result(self, index: int, result: Any) -> None:
        row = self.rows[index]
        self.store.finish_explanation(row.explanation_id, _result_fields(result, row.template_end))
        self.store.publish(row.conversation_id, _done_frame(row.explanation_id, result))
        self.ended.add(index)

    def done(self, index: int, result: Any) -> None:
        """A row that stopped before the others: stored, and whatever waited on it moves on."""
        self.text.flush(index)
        self.store_result(index, result)
        self.report([index])

    def failed(self, index: int, error: str) -> None:
        """A row whose own request failed (the others go on)."""
        self._fail([index], error)
        self.report([index])

    def fail_unfinished(self, error: str) -> None:
        self._fail([k for k in range(len(self.rows)) if k not in self.ended], error)

    def _fail(self, indexes: list[int], error: str) -> None:
        self.store.fail_explanations([self.rows[k].explanation_id for k in indexes], error)
        for k in indexes:
            row = self.rows[k]
            frame = ExplanationFailed(explanation_id=row.explanation_id, error=error)
            self.store.publish(row.conversation_id, frame)
        self.ended.update(indexes)

    def report(self, indexes: list[int] | None = None) -> None:
        """Tell what waits on these rows (all not yet told, by default) that they finished."""
        if indexes is None:
            indexes = [k for k in range(len(self.rows)) if k not in self.reported]
        if indexes:
            self.store.job_finished([self.rows[k].explanation_id for k in indexes])
            self.reported.update(indexes)

    def _send_text(self, index: int, raw_so_far: str) -> None:
        """Publish the explanation so far as the panel will show it (without the AV's tags)."""
        from workers.nla.verbalizer import extract_explanation

        row = self.rows[index]
        text = extract_explanation(raw_so_far)
        self.store.publish(
            row.conversation_id, ExplanationText(explanation_id=row.explanation_id, text=text)
        )


def warnings_for(result: Any, template_end: int) -> list[str]:
    """The engine's warnings, plus one for tokens of the template's preamble past the early ones."""
    from workers.nla.types import EARLY_POSITIONS, TEMPLATE_WARNING

    extra = EARLY_POSITIONS <= result.position < template_end
    return [*result.warnings, *([TEMPLATE_WARNING] if extra else [])]


def _result_fields(result: Any, template_end: int) -> dict[str, Any]:
    f = result.fidelity
    return {
        "token_id": result.token_id,
        "token_text": result.token_text[:200],
        "text": result.text,
        "raw_text": result.raw_text,
        "truncated": result.truncated,
        "mse": f.mse,
        "cosine": f.cosine,
        "fve": f.fve,
        "relative_mse": f.relative_mse,
        "confidence": f.confidence or "",
        "specificity": f.specificity,
        "calibration": f.calibration or "",
        "confidence_note": f.confidence_note,
        "l2_norm": result.l2_norm,
        "warnings": warnings_for(result, template_end),
        "error": "",
    }


def run_explain(
    store: Store, explanation_ids: list[str], engine_for: EngineFor = registry_engine
) -> None:
    """Explain the job's rows (and other queued rows of its source it could take) in one engine
    batch; store each result and publish it to its own conversation. Where the engine refills
    slots, each row is stored as it stops, and waiting rows of the source (anyone's, in turns)
    join the running decode as slots free. The rows still waiting hear their new place in the
    queue; whatever waited on these rows (whole-message runs) moves on."""
    job = store.explain_job(explanation_ids)
    if job is None:
        return
    store.queue_moved(job.source_id)
    progress = _Progress(store, job)
    try:
        _explain(job, engine_for, progress)
    finally:
        progress.report()


def _explain(job: ExplainJob, engine_for: EngineFor, progress: _Progress) -> None:
    from workers.nla.types import GenerationSettings

    try:
        progress.stage("loading", 0, len(job.rows))
        engine = engine_for(job.source_id)
        settings = GenerationSettings(**job.settings)
        requests = [(g.token_ids, [r.position for r in g.rows]) for g in job.groups]
        if engine.can_refill():
            engine.explain_refill(requests, settings, progress, progress.more)
            return
        results = [r for group in engine.explain_batch(requests, settings, progress) for r in group]
        progress.text.flush()
        for index, result in enumerate(results):
            progress.store_result(index, result)
    except Exception as error:
        log.exception("explain %s failed", job.explanation_ids)
        progress.fail_unfinished(readable(error, "explaining this token"))


def _done_frame(explanation_id: str, result: Any) -> ExplanationDone:
    f = result.fidelity
    return ExplanationDone(
        explanation_id=explanation_id,
        text=result.text,
        mse=f.mse,
        cosine=f.cosine,
        fve=f.fve,
        relative_mse=f.relative_mse,
        confidence=f.confidence,
        specificity=f.specificity,
    )
