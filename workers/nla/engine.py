"""One NLA source served end to end: target capture → AV verbalization → AR scoring, batched."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from workers.nla.backends import use_backend
from workers.nla.cache import ActivationCache, prefix_keys
from workers.nla.errors import (
    CheckpointIncompatible,
    InputTooLong,
    NlaError,
    PositionOutOfRange,
    WorkerOutOfMemory,
    mismatch,
)
from workers.nla.loading import (
    LoadModel,
    load_causal_lm,
    resolve_checkpoint,
    resolve_device,
    resolve_dtype,
    text_config,
)
from workers.nla.reconstructor import Reconstructor
from workers.nla.reference_pool import ReferencePool, token_prefix
from workers.nla.scoring import fidelities
from workers.nla.shared_models import SharedModels
from workers.nla.sidecar import Overrides
from workers.nla.specificity import specificity
from workers.nla.target import TargetModel
from workers.nla.types import (
    EARLY_POSITIONS,
    EARLY_WARNING,
    MAX_POSITIONS_PER_REQUEST,
    ChatTurn,
    ExplainProgress,
    Fidelity,
    GenerationSettings,
    NextRow,
    RefillProgress,
    Reply,
    TokenExplanation,
    TokenizedConversation,
    VectorExplanation,
    VerbalizedText,
)
from workers.nla.verbalizer import INJECTION_SUSPECT, Verbalizer, injection_suspect
from workers.source_config import SourceConfig

MAX_SEQUENCE_TOKENS = 2048
DEFAULT_REPLY_TOKENS = 200


@contextmanager
def out_of_memory_as_error(doing: str) -> Iterator[None]:
    """Turn the device's out-of-memory errors into WorkerOutOfMemory (one sentence)."""
    try:
        yield
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise WorkerOutOfMemory(
            f"The worker ran out of memory while {doing}; try fewer tokens or a shorter conversation."
        ) from exc


@dataclass
class NlaEngine:
    source: SourceConfig
    target: TargetModel
    verbalizer: Verbalizer
    reconstructor: Reconstructor
    cache: ActivationCache
    max_sequence_tokens: int = MAX_SEQUENCE_TOKENS
    #: What specificity ranks against; `load` seeds it with the AR checkpoint's pool file.
    pool: ReferencePool = field(init=False)

    def __post_init__(self) -> None:
        self.pool = ReferencePool(self.reconstructor.meta.d_model)

    @classmethod
    def load(
        cls,
        source: SourceConfig,
        *,
        device: str | None = None,
        dtype: str | None = None,
        backend: str = "hf",
        models: SharedModels | None = None,
    ) -> NlaEngine:
        """Load target, AV and AR of `source` and check that they fit together; `backend` writes
        replies and explanations unless the source names its own (workers/nla/backends.py).
        With `models`, the target and the AV are taken from it, shared with every other source of
        the same weights (shared_models.py); the AR is always this source's own."""
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        overrides = Overrides(
            source.layer,
            source.injection_scale,
            source.mse_scale,
            source.var_baseline,
            source.calibration,
        )
        load: LoadModel = load_causal_lm
        if models is not None:
            load = partial(models.causal_lm, user=source.id)
        target = TargetModel.from_checkpoint(resolve_checkpoint(source.target), dev, dt, load)
        av = Verbalizer.from_checkpoint(resolve_checkpoint(source.av), dev, dt, overrides, load)
        ar_path = resolve_checkpoint(source.ar)
        ar = Reconstructor.from_checkpoint(ar_path, dev, dt, overrides)
        _check_pair(source, target, av, ar)
        use_backend(source.backend or backend, source, target, av, dt)
        engine = cls(source, target, av, ar, ActivationCache())
        engine.pool = ReferencePool.from_checkpoint(ar_path, ar.meta.d_model)
        return engine

    @property
    def layer(self) -> int:
        return self.reconstructor.meta.layer

    def info(self) -> dict[str, Any]:
        ar = self.reconstructor.meta
        return {
            "source_id": self.source.id,
            "label": self.source.label,
            "layer": self.layer,
            "d_model": ar.d_model,
            "var_baseline": ar.var_baseline,
            "uncalibrated": ar.uncalibrated or self.verbalizer.meta.uncalibrated,
            "heldout": ar.heldout,
        }

    def tokenize(
        self, turns: Sequence[ChatTurn], *, add_generation_prompt: bool = False
    ) -> TokenizedConversation:
        return self.target.tokenize(turns, add_generation_prompt=add_generation_prompt)

    def tokenize_text(self, text: str) -> TokenizedConversation:
        """`text` tokenized as it is (no chat template), as Neuronpedia's API does for `text`."""
        return self.target.tokenize_text(text)

    def reply(
        self,
        turns: Sequence[ChatTurn],
        settings: GenerationSettings,
        on_text: Callable[[str], None],
        *,
        prefix: str = "",
    ) -> Reply:
        """The next assistant message (or the continuation of `prefix`, its start)."""
        with out_of_memory_as_error("writing the reply"):
            return self.target.reply(turns, settings, DEFAULT_REPLY_TOKENS, on_text, prefix=prefix)

    def capture(self, token_ids: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        """`[P, d]` float32 activations at `positions`, from the cache or one forward pass that
        stops after block K and covers only tokens[:max(uncached)+1]; every position that pass
        computed is cached, so the next click on an earlier token needs no forward pass."""
        self._check_request(token_ids, positions)
        if not positions:
            return torch.empty(0, self.reconstructor.meta.d_model)
        keys = prefix_keys(self.source.id, token_ids, range(max(positions) + 1))
        found = {p: self.cache.get(keys[p]) for p in positions}
        missing = sorted(p for p, v in found.items() if v is None)
        if missing:
            hidden = self.target.capture(token_ids[: missing[-1] + 1], self.layer).cpu()
            for p in range(len(hidden)):
                self.cache.put(keys[p], hidden[p])
            found.update({p: hidden[p] for p in missing})
        return torch.stack([found[p] for p in positions])  # type: ignore[misc]

    def explain(
        self,
        token_ids: Sequence[int],
        positions: Sequence[int],
        settings: GenerationSettings,
        progress: ExplainProgress,
    ) -> list[TokenExplanation]:
        """Explain `positions` of `token_ids` in one capture, one AV batch and one AR batch."""
        return self.explain_batch([(token_ids, positions)], settings, progress)[0]

    def explain_batch(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        settings: GenerationSettings,
        progress: ExplainProgress,
    ) -> list[list[TokenExplanation]]:
        """Explain the positions of several token sequences (e.g. different users' conversations)
        with one capture pass each, then one AV batch and one AR batch for all of them; results come
        back per request, in order. `progress.text` indexes the positions across all requests.
        Each result's specificity leaves out the pool entries of its own snapshot; the batch's
        predictions join the pool afterwards."""
        total = sum(len(positions) for _, positions in requests)
        _check_count(total)
        snapshots = [token_prefix(ids) for ids, positions in requests for _ in positions]
        with out_of_memory_as_error("explaining these tokens"):
            captured: list[torch.Tensor] = []
            for token_ids, positions in requests:
                progress.stage("capturing", sum(len(c) for c in captured), total)
                captured.append(self.capture(token_ids, positions))
            scored, predicted = self._verbalize_and_score(
                torch.cat(captured), settings, progress, snapshots
            )
        self.pool.add(
            predicted,
            [token_prefix(ids[: p + 1]) for ids, positions in requests for p in positions],
        )
        results = iter(scored)
        return [
            [self._token_result(token_ids, p, next(results)) for p in positions]
            for token_ids, positions in requests
        ]

    def can_refill(self) -> bool:
        """Whether `explain_refill` may run: the AV decodes on transformers, over a KV cache it can
        pad (a vLLM AV and sliding-window layers keep fixed batches)."""
        av = self.verbalizer
        return (av.generator is None or av.meta.injection_layer > 0) and av.can_refill()

    def explain_refill(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        settings: GenerationSettings,
        progress: RefillProgress,
        more: NextRow,
    ) -> None:
        """Explain the requests' positions (captured first, as `explain_batch` does) in one
        slot-refill decode of MAX_POSITIONS_PER_REQUEST slots: each time a slot frees, `more()`
        may hand out a row of another request, captured then and joined to the running decode.
        Rows are numbered as handed out, the requests' positions first; each is scored when it
        stops and handed to `progress.done`, so no row waits for the others."""
        total = sum(len(positions) for _, positions in requests)
        _check_count(total)
        with out_of_memory_as_error("explaining these tokens"):
            rows: list[_Row] = []
            for token_ids, positions in requests:
                progress.stage("capturing", len(rows), total)
                vectors = self.capture(token_ids, positions)
                rows += [_Row(token_ids, p, v) for p, v in zip(positions, vectors, strict=True)]
            progress.stage("verbalizing", 0, total)
            feed = _RefillFeed(self, rows, more, progress)
            self.verbalizer.verbalize_refill(
                feed.next_vector,
                settings,
                slots=MAX_POSITIONS_PER_REQUEST,
                on_text=feed.text,
                on_done=feed.score,
            )

    def score_rows(
        self, rows: Sequence[_Row], texts: Sequence[VerbalizedText]
    ) -> list[TokenExplanation]:
        """Score the AV's texts of `rows` as one AR batch (specificity as `explain_batch` ranks
        it); their predictions join the reference pool."""
        vectors = torch.stack([row.vector for row in rows])
        snapshots = [token_prefix(row.token_ids) for row in rows]
        scores, predicted = self._score([t.text for t in texts], vectors, snapshots)
        self.pool.add(predicted, [token_prefix(r.token_ids[: r.position + 1]) for r in rows])
        norms = vectors.float().norm(dim=-1).tolist()
        return [
            self._token_result(row.token_ids, row.position, VectorExplanation(t, s, n))
            for row, t, s, n in zip(rows, texts, scores, norms, strict=True)
        ]

    def _token_result(
        self, token_ids: Sequence[int], position: int, result: VectorExplanation
    ) -> TokenExplanation:
        token_id = int(token_ids[position])
        return TokenExplanation(
            position=position,
            token_id=token_id,
            token_text=self.target.tokenizer.decode([token_id]),
            text=result.verbalized.text,
            raw_text=result.verbalized.raw_text,
            truncated=result.verbalized.truncated,
            fidelity=result.fidelity,
            l2_norm=result.l2_norm,
            warnings=self._warnings(position, result.verbalized.text),
        )

    def _warnings(self, position: int, text: str) -> list[str]:
        early = [EARLY_WARNING] if position < EARLY_POSITIONS else []
        suspect = injection_suspect(text, self.verbalizer.meta.injection_char)
        return [*early, *([INJECTION_SUSPECT] if suspect else [])]

    def explain_vectors(
        self,
        vectors: Sequence[Sequence[float]] | torch.Tensor,
        settings: GenerationSettings,
        progress: ExplainProgress,
    ) -> list[VectorExplanation]:
        """Explain raw `[B, d]` vectors (e.g. SAE decoder rows) through the AV, scored by the AR."""
        tensor = torch.as_tensor(vectors, dtype=torch.float32)
        if tensor.ndim != 2 or tensor.shape[1] != self.reconstructor.meta.d_model:
            raise CheckpointIncompatible(
                f"Vectors must have shape [n, {self.reconstructor.meta.d_model}], "
                f"found {list(tensor.shape)}."
            )
        _check_count(tensor.shape[0])
        with out_of_memory_as_error("explaining these vectors"):
            scored, _ = self._verbalize_and_score(
                tensor, settings, progress, [None] * tensor.shape[0]
            )
        return scored

    def score(self, texts: Sequence[str], vectors: torch.Tensor) -> list[Fidelity]:
        """AR fidelity of each text against its `[d]` vector (`[B, d]` in all), with its
        specificity against the whole reference pool."""
        return self._score(texts, vectors, [None] * len(texts))[0]

    def _score(
        self, texts: Sequence[str], vectors: torch.Tensor, snapshots: Sequence[bytes | None]
    ) -> tuple[list[Fidelity], torch.Tensor]:
        """Fidelities, each ranked against the pool less its snapshot's entries, and the `[B, d]`
        predictions (float32, CPU)."""
        ar = self.reconstructor.meta
        predicted = self.reconstructor.predict(texts).float().cpu()
        goals = vectors.float().cpu()
        specific = [
            specificity(p, g, self.pool.against(s), ar.mse_scale)
            for p, g, s in zip(predicted, goals, snapshots, strict=True)
        ]
        scores = fidelities(
            predicted, goals, ar.mse_scale, ar.var_baseline, specific, ar.calibration
        )
        return scores, predicted

    def _verbalize_and_score(
        self,
        vectors: torch.Tensor,
        settings: GenerationSettings,
        progress: ExplainProgress,
        snapshots: Sequence[bytes | None],
    ) -> tuple[list[VectorExplanation], torch.Tensor]:
        total = vectors.shape[0]
        progress.stage("verbalizing", 0, total)
        texts = self.verbalizer.verbalize(vectors, settings, progress.text)
        progress.stage("scoring", 0, total)
        scores, predicted = self._score([t.text for t in texts], vectors, snapshots)
        norms = vectors.float().norm(dim=-1).tolist()
        explained = [
            VectorExplanation(t, s, n) for t, s, n in zip(texts, scores, norms, strict=True)
        ]
        return explained, predicted

    def _check_request(self, token_ids: Sequence[int], positions: Sequence[int]) -> None:
        if len(token_ids) > self.max_sequence_tokens:
            raise InputTooLong(
                f"This conversation has {len(token_ids)} tokens; the source accepts at most "
                f"{self.max_sequence_tokens}. Start a new conversation or shorten this one."
            )
        for p in positions:
            if not 0 <= p < len(token_ids):
                raise PositionOutOfRange(
                    f"Token position {p} is outside this conversation, which has "
                    f"{len(token_ids)} tokens (positions 0 to {len(token_ids) - 1})."
                )


@dataclass(frozen=True)
class _Row:
    """One token to explain in a slot-refill decode, with its captured `[d]` activation."""

    token_ids: Sequence[int]
    position: int
    vector: torch.Tensor


class _RefillFeed:
    """The rows of one slot-refill decode: the requests' first, then those `more` hands out.
    Indexes count rows as they were handed out (what `progress` hears); `decoded[k]` is the index
    of the decode's row k (a row whose own request failed has an index, but no decode row)."""

    def __init__(
        self, engine: NlaEngine, rows: list[_Row], more: NextRow, progress: RefillProgress
    ) -> None:
        self.engine, self.more, self.progress = engine, more, progress
        self.rows = dict(enumerate(rows))
        self.count = len(rows)
        self.pending = deque(range(len(rows)))
        self.decoded: list[int] = []

    def next_vector(self) -> torch.Tensor | None:
        if not self.pending and not self._take():
            return None
        index = self.pending.popleft()
        self.decoded.append(index)
        return self.rows[index].vector

    def _take(self) -> bool:
        """Capture the next row `more` hands out; one whose own request fails is reported and
        the next one asked for."""
        while (row := self.more()) is not None:
            token_ids, position = row
            index, self.count = self.count, self.count + 1
            self.progress.row_stage(index, "capturing")
            try:
                vector = self.engine.capture(token_ids, [position])[0]
            except NlaError as error:
                self.progress.failed(index, error.message)
                continue
            self.rows[index] = _Row(token_ids, position, vector)
            self.pending.append(index)
            self.progress.row_stage(index, "verbalizing")
            return True
        return False

    def text(self, row: int, text: str) -> None:
        self.progress.text(self.decoded[row], text)

    def score(self, finished: list[tuple[int, VerbalizedText]]) -> None:
        indexes = [self.decoded[row] for row, _ in finished]
        for index in indexes:
            self.progress.row_stage(index, "scoring")
        rows = [self.rows[index] for index in indexes]
        results = self.engine.score_rows(rows, [text for _, text in finished])
        for index, result in zip(indexes, results, strict=True):
            self.progress.done(index, result)


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_POSITIONS_PER_REQUEST:
        raise InputTooLong(
            f"One request explains 1 to {MAX_POSITIONS_PER_REQUEST} tokens or vectors; "
            f"this one asked for {count}."
        )


def _check_pair(
    source: SourceConfig, target: TargetModel, av: Verbalizer, ar: Reconstructor
) -> None:
    """The target, AV and AR agree on width and layer."""
    where = f"source '{source.id}'"
    width = text_config(target.model.config).hidden_size
    if av.meta.d_model != width:
        raise mismatch(where, "av d_model", width, av.meta.d_model)
    if ar.meta.d_model != width:
        raise mismatch(where, "ar d_model", width, ar.meta.d_model)
    if av.meta.layer is not None and av.meta.layer != ar.meta.layer:
        raise mismatch(where, "av layer", ar.meta.layer, av.meta.layer)
    if ar.meta.layer >= target.num_layers:
        raise mismatch(where, "layer", f"< {target.num_layers} (target blocks)", ar.meta.layer)
