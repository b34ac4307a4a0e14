"""A job's time limit reads as a time limit wherever it fires: loading (tokenizer, weights, a hub
download), capture, generation, scoring, a reply. The limit arrives as it does in a prefork child:
Celery's pool sends SIGUSR1 and billiard's handler raises SoftTimeLimitExceeded in whatever runs. Here
the signal is sent from inside the step under test (a wrapped loader, a forward hook), so where it
fires does not depend on how fast the machine is."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Iterator
from typing import Any

import huggingface_hub
import pytest
import transformers
from billiard.exceptions import SoftTimeLimitExceeded
from billiard.pool import SIG_SOFT_TIMEOUT, soft_timeout_sighandler

from tests.fakes import MemoryStore
from tests.tiny_models import build_tiny_source
from workers.nla.cache import ActivationCache
from workers.nla.engine import NlaEngine
from workers.pipeline import run_explain, run_reply
from workers.source_config import SourceConfig
from workers.store import Turn

CONVERSATION = "conversation-time-limit"


def gave_up(doing: str) -> str:
    return (
        f"The worker gave up on {doing} after its time limit; "
        "try fewer tokens or a shorter conversation."
    )


@pytest.fixture
def time_limit() -> Iterator[Callable[[], None]]:
    """Fires the soft time limit as the pool does: SIGUSR1 to this process, billiard's handler."""
    assert SIG_SOFT_TIMEOUT is not None
    previous = signal.signal(SIG_SOFT_TIMEOUT, soft_timeout_sighandler)
    yield lambda: signal.raise_signal(SIG_SOFT_TIMEOUT)
    signal.signal(SIG_SOFT_TIMEOUT, previous)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> SourceConfig:
    return build_tiny_source(tmp_path_factory.mktemp("time-limit"))


@pytest.fixture(scope="module")
def engine(source: SourceConfig) -> NlaEngine:
    return NlaEngine.load(source, device="cpu", dtype="float32")


def _explain(source: SourceConfig, engine_for: Callable[[str], Any]) -> tuple[MemoryStore, str]:
    """Run one explain job for position 3 of a short conversation; returns the store and its row."""
    store = MemoryStore()
    snapshot = store.add_snapshot(CONVERSATION, list(range(5, 17)))
    pk = store.queue(snapshot, 3, source_id=source.id)
    run_explain(store, [pk], engine_for=engine_for)
    return store, pk


def _stages_then_end(store: MemoryStore) -> list[str]:
    return [getattr(f, "stage", f.type) for f in store.frames[CONVERSATION]]


def _fire_before(cls: Any, fire: Callable[[], None]) -> Callable[..., Any]:
    original = cls.from_pretrained

    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        fire()
        return original(*args, **kwargs)

    return from_pretrained


# Loading


@pytest.mark.parametrize(
    "loader",
    [
        pytest.param(transformers.AutoModelForCausalLM, id="target-weights"),
        pytest.param(transformers.AutoTokenizer, id="tokenizer"),
        pytest.param(transformers.AutoModel, id="reconstructor-trunk"),
    ],
)
def test_a_time_limit_while_loading_reads_as_a_time_limit_not_as_a_load_error(
    source, time_limit, monkeypatch, loader
):
    monkeypatch.setattr(loader, "from_pretrained", _fire_before(loader, time_limit))
    store, pk = _explain(source, lambda _: NlaEngine.load(source, device="cpu", dtype="float32"))
    row = store.rows[pk]
    assert (row.status, row.error) == ("failed", gave_up("explaining this token"))
    assert _stages_then_end(store) == ["loading", "explanation.failed"]
    assert store.frames[CONVERSATION][-1].error == row.error


def test_a_time_limit_while_downloading_from_the_hub_reads_as_a_time_limit(
    source, time_limit, monkeypatch
):
    def snapshot_download(*args: Any, **kwargs: Any) -> str:
        time_limit()
        raise AssertionError("the time limit must have fired")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    on_the_hub = dataclasses.replace(source, target="nlaweb-tests/never-downloaded")
    store, pk = _explain(on_the_hub, lambda _: NlaEngine.load(on_the_hub, device="cpu"))
    assert store.rows[pk].error == gave_up("explaining this token")


def test_a_time_limit_that_a_loader_wrapped_in_its_own_error_still_reads_as_a_time_limit(
    source, time_limit, monkeypatch
):
    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        try:
            time_limit()
        except SoftTimeLimitExceeded as exc:
            raise OSError("Unable to load weights from the checkpoint") from exc
        raise AssertionError("the time limit must have fired")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    store, pk = _explain(source, lambda _: NlaEngine.load(source, device="cpu"))
    assert store.rows[pk].error == gave_up("explaining this token")


def test_a_loader_error_that_is_no_time_limit_still_reads_as_a_load_error(source, monkeypatch):
    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        raise OSError("Unable to load weights from the checkpoint")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    store, pk = _explain(source, lambda _: NlaEngine.load(source, device="cpu"))
    assert store.rows[pk].error == (
        f"The weights in {source.target} could not be loaded: "
        "Unable to load weights from the checkpoint."
    )


# Capture, generation, scoring: the limit fires inside that stage's forward pass


@pytest.mark.parametrize(
    ("stage", "model_of"),
    [
        pytest.param("capturing", lambda e: e.target.model, id="capture"),
        pytest.param("verbalizing", lambda e: e.verbalizer.model, id="generation"),
        pytest.param("scoring", lambda e: e.reconstructor.model, id="scoring"),
    ],
)
def test_a_time_limit_inside_a_forward_pass_reads_as_a_time_limit(
    engine, source, time_limit, monkeypatch, stage, model_of
):
    monkeypatch.setattr(engine, "cache", ActivationCache())  # the capture must run its forward pass
    hook = model_of(engine).register_forward_pre_hook(lambda *args: time_limit())
    try:
        store, pk = _explain(source, lambda _: engine)
    finally:
        hook.remove()
    assert store.rows[pk].error == gave_up("explaining this token")
    assert _stages_then_end(store)[-2:] == [stage, "explanation.failed"]


def test_a_time_limit_while_writing_a_reply_reads_as_a_time_limit_and_keeps_the_text_so_far(
    engine, source, time_limit
):
    store = MemoryStore()
    message_id = store.add_reply(CONVERSATION, [Turn("m1", "user", "My cat")], source.id)
    calls = 0

    def fire_on_the_third_step(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:  # after the prompt's pass and one token's: two tokens are written
            time_limit()

    hook = engine.target.model.register_forward_pre_hook(fire_on_the_third_step)
    try:
        run_reply(store, message_id, 20, engine_for=lambda _: engine)
    finally:
        hook.remove()
    message = store.messages[message_id]
    assert (message.status, message.error) == ("failed", gave_up("writing the reply"))
    frames: list[Any] = store.frames[CONVERSATION]
    assert frames[-1].type == "chat.failed" and frames[-1].error == message.error
    deltas = [f.text for f in frames if f.type == "chat.delta"]  # throttled: may lag behind
    assert message.content and message.content.startswith(deltas[-1] if deltas else "")
