"""A job that runs past CELERY_TASK_TIME_LIMIT is stopped by a prefork worker (as in production) and
its explanation fails with a sentence that says so, wherever the limit fired; the conversation is
untouched.

Where the limit fires is fixed by the test, not by how fast the machine is: first a warm-up job with
a generous limit of its own loads the models (the worker imports torch and transformers then), and
then, under the 10 s limit,
- a source whose verbalizer never writes a stop (its LM head is all zeros: greedy picks <bos> for
  ever) generates until the limit fires during generation;
- a source whose target is a hub id, on a hub that accepts the connection and never answers (a local
  socket), waits in the download until the limit fires during loading."""

from __future__ import annotations

import dataclasses
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from celery import Celery
from safetensors.torch import load_file, save_file

from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Message
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings
from tests.factories import snapshot_of
from tests.live import Stack, redis_server, running_stack, wait_until, write_sources_file
from tests.personas import make_persona
from tests.stack_fixtures import _test_database_url
from workers.contracts import GPU_QUEUE, TASK_EXPLAIN
from workers.source_config import parse_sources

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT_S = 10  # the smallest the settings accept; the soft limit is 5 s earlier
WARM_UP_LIMIT_S = 600  # the warm-up job's own limit: loading takes what it takes
ENDLESS, STALLED = "tiny-endless", "tiny-stalled-hub"
GAVE_UP = (
    "The worker gave up on explaining this token after its time limit; "
    "try fewer tokens or a shorter conversation."
)


@dataclasses.dataclass
class Worker:
    stack: Stack
    broker: str

    def explain(self, explanation: Explanation, **limits: Any) -> None:
        Celery(broker=self.broker).send_task(
            TASK_EXPLAIN, args=[[str(explanation.id)]], queue=GPU_QUEUE, **limits
        )

    def traceback_of(self, explanation: Explanation) -> str:
        """What the worker logged from the line that reports this explanation's failure on."""
        log = self.stack.worker_log.read_text(errors="replace")
        start = log.find(f"explain ['{explanation.id}'] failed")
        assert start >= 0, log[-4000:]
        return log[start:]


def _endless_av(av: Path, directory: Path) -> Path:
    """A copy of the AV whose LM head is zero: every logit ties, greedy takes id 0 (<bos>, not an
    end token, decoded to nothing), so no stop string or end token ever comes, on any machine."""
    shutil.copytree(av, directory)
    weights = directory / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["lm_head.weight"] = torch.zeros_like(tensors["lm_head.weight"])
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return directory


@pytest.fixture(scope="module")
def silent_hub() -> Iterator[str]:
    """A hub endpoint that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="module")
def warm_worker(
    django_db_setup, django_db_blocker, tiny_sources_file, tmp_path_factory, silent_hub
) -> Iterator[Worker]:
    """A prefork worker with its own broker that has loaded the endless source in a warm-up job."""
    path, _ = tiny_sources_file
    [tiny] = parse_sources(path.read_text(encoding="utf-8"))
    root = tmp_path_factory.mktemp("time-limit")
    endless = dataclasses.replace(
        tiny, id=ENDLESS, av=str(_endless_av(Path(tiny.av), root / "endless-av"))
    )
    stalled = dataclasses.replace(tiny, id=STALLED, target="nlaweb-tests/stalled-checkpoint")
    sources = write_sources_file(root / "sources.toml", [endless, stalled])
    with redis_server(root) as broker:
        env = {
            "DATABASE_URL": _test_database_url(),
            "REDIS_URL": broker,
            "NLA_SOURCES_FILE": str(sources),
            "CELERY_TASK_TIME_LIMIT": str(LIMIT_S),
            "HF_ENDPOINT": silent_hub,
            "HF_HOME": str(root / "hf-home"),  # nothing cached: the download must ask the hub
            "HF_HUB_OFFLINE": "0",
            "DEBUG": "1",
        }
        with running_stack(env, root) as stack:
            worker = Worker(stack, broker)
            with django_db_blocker.unblock():
                warm_up = _explanation("warm-up", ENDLESS, ExplainSettings())
                worker.explain(
                    warm_up, time_limit=WARM_UP_LIMIT_S, soft_time_limit=WARM_UP_LIMIT_S - 5
                )
                wait_until(
                    lambda: Explanation.objects.get(pk=warm_up.pk).status in {"done", "failed"},
                    WARM_UP_LIMIT_S,
                    "the warm-up job to load the models",
                )
                warm_up.refresh_from_db()
                assert (warm_up.status, warm_up.error) == ("done", ""), stack.logs()
            yield worker


def _explanation(name: str, source_id: str, settings: ExplainSettings) -> Explanation:
    conversation = start_conversation(make_persona(name).user)
    snapshot = snapshot_of(conversation, [("user", "My cat", 6)], source_id=source_id)
    return Explanation.objects.create(
        snapshot=snapshot,
        position=2,
        source_id=source_id,
        settings_key=settings.key(),
        settings=settings.as_dict(),
    )


def _wait_for_failure(worker: Worker, explanation: Explanation) -> Explanation:
    wait_until(
        lambda: Explanation.objects.get(pk=explanation.pk).status in {"done", "failed"},
        LIMIT_S + 60,
        "the job to be stopped by its time limit",
    )
    explanation.refresh_from_db()
    assert explanation.status == "failed", worker.stack.logs()
    return explanation


def test_a_job_past_its_time_limit_during_generation_fails_with_a_sentence(warm_worker):
    settings = ExplainSettings(max_new_tokens=10_000_000)
    explanation = _explanation("patient", ENDLESS, settings)
    warm_worker.explain(explanation)
    explanation = _wait_for_failure(warm_worker, explanation)
    assert explanation.error == GAVE_UP, warm_worker.stack.logs()
    traceback = warm_worker.traceback_of(explanation)
    # Inside the AV's decode: fixed batches (decode.py) or slot refill (refill.py), as the AV allows.
    decoding = "workers/nla/decode.py" in traceback or "workers/nla/refill.py" in traceback
    assert "SoftTimeLimitExceeded" in traceback and decoding, traceback
    assert Message.objects.filter(pk=explanation.snapshot.leaf_id).exists()


def test_a_job_past_its_time_limit_while_loading_fails_with_a_sentence_not_a_load_error(
    warm_worker,
):
    explanation = _explanation("hopeful", STALLED, ExplainSettings())
    warm_worker.explain(explanation)
    explanation = _wait_for_failure(warm_worker, explanation)
    assert explanation.error == GAVE_UP, warm_worker.stack.logs()
    traceback = warm_worker.traceback_of(explanation)
    assert "SoftTimeLimitExceeded" in traceback and "in resolve_checkpoint" in traceback
    assert "could not be fetched" not in explanation.error
