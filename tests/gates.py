"""Gates that hold a real worker at a known point of a job, so a test can kill it, or stop Redis or
PostgreSQL under it, at exactly that point (no sleeps, no luck).

The worker is started by `python -m tests.gated_worker …` with NLAWEB_TEST_GATES=<dir>; in each
worker process the store is wrapped so that at a gate point (`explain-<stage>` once the rows show
that stage; `reply-text` once a reply's first text was published; `heartbeat` before a job's
heartbeat thread writes a beat; `api-claimed` once an API job's row is running) the process writes
`reached-<point>-<pid>` and waits while `closed-<point>` exists. A gate with no `closed-` file lets
jobs through. Test code only: nothing in nlaweb/ or workers/ knows about it."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

ENV = "NLAWEB_TEST_GATES"
POLL_S = 0.05


class Gates:
    """The test's side: close and open gates, see which process reached one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def close(self, point: str) -> None:
        (self.root / f"closed-{point}").touch()

    def open(self, point: str) -> None:
        (self.root / f"closed-{point}").unlink(missing_ok=True)

    def forget(self) -> None:
        """Open every gate and forget which processes reached one (between tests)."""
        for mark in [*self.root.glob("reached-*"), *self.root.glob("closed-*")]:
            mark.unlink()

    def reached(self, point: str) -> list[int]:
        """Pids of the worker processes that reached `point`, in the order they did."""
        marks = sorted(self.root.glob(f"reached-{point}-*"), key=lambda p: p.stat().st_mtime_ns)
        return [int(p.name.rsplit("-", 1)[1]) for p in marks]


def _wait_at(point: str) -> None:
    root = Path(os.environ[ENV])
    closed = root / f"closed-{point}"
    if not closed.exists():
        return
    (root / f"reached-{point}-{os.getpid()}").touch()
    pause = threading.Event()
    while closed.exists():
        pause.wait(POLL_S)


def install() -> None:
    """Hold this worker process's jobs at the gate points: after a stage is stored
    (`explain-<stage>`), after a reply's first text is published (`reply-text`), and after an API
    job's row is taken (`api-claimed`). Patches the
    store, the worker's one seam into Django, so nothing heavy (torch) is imported before a job."""
    from nlaweb.jobs.api_store import ApiStore
    from nlaweb.jobs.django_store import DjangoStore

    set_stage, publish, beat = DjangoStore.set_stage, DjangoStore.publish, DjangoStore._beat
    claim_api_job = ApiStore.claim_api_job

    def gated_set_stage(store: DjangoStore, explanation_ids: list[str], stage: str) -> None:
        set_stage(store, explanation_ids, stage)
        _wait_at(f"explain-{stage}")

    def gated_publish(store: DjangoStore, conversation_id: str, frame: Any) -> None:
        publish(store, conversation_id, frame)
        if frame.type == "chat.delta" and not getattr(store, "_gated_reply", False):
            store._gated_reply = True  # type: ignore[attr-defined]
            _wait_at("reply-text")

    def gated_beat(store: DjangoStore) -> None:
        _wait_at("heartbeat")
        beat(store)

    def gated_claim_api_job(store: ApiStore, job_id: str) -> Any:
        taken = claim_api_job(store, job_id)
        if taken is not None:
            _wait_at("api-claimed")
        return taken

    ApiStore.claim_api_job = gated_claim_api_job  # type: ignore[method-assign]
    DjangoStore.set_stage = gated_set_stage  # type: ignore[method-assign]
    DjangoStore._beat = gated_beat  # type: ignore[method-assign]
    DjangoStore.publish = gated_publish  # type: ignore[method-assign]
