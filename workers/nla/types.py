"""Plain typed values of the NLA engine: what callers pass in and get back. No torch here."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: Most positions one explain request may ask for (Neuronpedia's limit, and one AV batch).
MAX_POSITIONS_PER_REQUEST = 16
#: Positions before this index were under-sampled in NLA training; their explanations are unreliable.
EARLY_POSITIONS = 10
EARLY_WARNING = (
    "Early position: explanations of the first 10 tokens of a conversation are unreliable "
    "(NLAs were trained on few of them)."
)


TEMPLATE_WARNING = (
    "Template position: this token belongs to the chat template's preamble (BOS, default system "
    "prompt), which NLAs saw little of in training; its explanation is unreliable."
)


def settings_key(temperature: float, max_new_tokens: int | None, seed: int) -> str:
    """The canonical string of AV sampling settings: part of an Explanation's cache key. The web's
    ExplainSettings and the worker's GenerationSettings both key through this one function."""
    return json.dumps({"t": temperature, "n": max_new_tokens, "s": seed}, sort_keys=True)


@dataclass(frozen=True)
class GenerationSettings:
    """AV sampling settings; `temperature` 0 is greedy. Part of the Explanation cache key."""

    temperature: float = 0.0
    max_new_tokens: int | None = None  # None: the source's default
    seed: int = 0

    def key(self) -> str:
        return settings_key(self.temperature, self.max_new_tokens, self.seed)


@dataclass(frozen=True)
class Reply:
    """An assistant reply: its text, and whether the token limit cut it (not an end token)."""

    text: str
    truncated: bool


@dataclass(frozen=True)
class ChatTurn:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class MessageSpan:
    """Token positions [start, end) of one turn in the templated sequence, template tokens included.

    `message_index` indexes the turns given to `tokenize()`; -1 is template text before the first
    turn (e.g. BOS or a default system prompt); len(turns) is the generation prompt."""

    message_index: int
    role: str
    start: int
    end: int


@dataclass(frozen=True)
class TokenizedConversation:
    token_ids: list[int]
    token_texts: list[str]
    spans: list[MessageSpan]


@dataclass(frozen=True)
class Fidelity:
    """AR score of one explanation against its activation (both normalised to L2 norm mse_scale)."""

    mse: float  # mean((p̂ − ĝ)²); 2·(1 − cos)·mse_scale²/d, so 2.0 is orthogonal when mse_scale = √d
    cosine: float
    fve: float | None  # 1 − mse/Var; None without a Var baseline
    relative_mse: float | None  # mse/Var
    confidence: (
        str | None
    )  # "high" | "medium" | "low" on the source's scale (workers/nla/calibration.py), capped by specificity
    #: Fraction of the reference pool whose reconstruction of this activation is worse (ties half);
    #: None while the pool is too small (workers/nla/specificity.py).
    specificity: float | None = None
    #: Where relative_mse falls between the source's matched and shuffled medians ("matched",
    #: "between", "shuffled"); None when the source carries no calibration.
    calibration: str | None = None
    #: Why the pill and specificity point different ways; "" when they agree.
    confidence_note: str = ""


@dataclass(frozen=True)
class VerbalizedText:
    """What the AV generated for one vector."""

    text: str  # the extracted explanation
    raw_text: str  # everything generated
    truncated: bool  # no stop string before max_new_tokens


@dataclass(frozen=True)
class VectorExplanation:
    verbalized: VerbalizedText
    fidelity: Fidelity
    l2_norm: float  # of the vector as given

    @property
    def text(self) -> str:
        return self.verbalized.text

    @property
    def specificity(self) -> float | None:
        return self.fidelity.specificity


@dataclass(frozen=True)
class TokenExplanation:
    position: int
    token_id: int
    token_text: str
    text: str
    raw_text: str
    truncated: bool
    fidelity: Fidelity
    l2_norm: float
    warnings: list[str] = field(default_factory=list)

    @property
    def specificity(self) -> float | None:
        return self.fidelity.specificity


class ExplainProgress(Protocol):
    """Receives stage changes ("loading", "capturing", "verbalizing", "scoring") and text so far."""

    def stage(self, name: str, done: int, total: int) -> None: ...

    def text(self, index: int, text_so_far: str) -> None: ...


class NoProgress:
    """An ExplainProgress that ignores everything (benchmarks, scripts)."""

    def stage(self, name: str, done: int, total: int) -> None:
        return None

    def text(self, index: int, text_so_far: str) -> None:
        return None


class RefillProgress(ExplainProgress, Protocol):
    """An ExplainProgress that also hears of rows one at a time, as slot refill moves each on:
    a row that joined later ("capturing", "verbalizing"), a row's "scoring", its result, or the
    sentence its own request failed with (the other rows go on)."""

    def row_stage(self, index: int, name: str) -> None: ...

    def done(self, index: int, result: TokenExplanation) -> None: ...

    def failed(self, index: int, error: str) -> None: ...


#: The next waiting row to explain, as (token ids, position), or None when none waits now.
NextRow = Callable[[], tuple[Sequence[int], int] | None]


class Engine(Protocol):
    """What a worker's jobs call on the engine of a source (workers/nla/engine.py's NlaEngine; the
    tests' EchoEngine). Torch-free in its types: raw vectors go in as nested lists."""

    max_sequence_tokens: int

    def tokenize(
        self, turns: Sequence[ChatTurn], *, add_generation_prompt: bool = False
    ) -> TokenizedConversation: ...

    def tokenize_text(self, text: str) -> TokenizedConversation: ...

    def reply(
        self,
        turns: Sequence[ChatTurn],
        settings: GenerationSettings,
        on_text: Callable[[str], None],
        *,
        prefix: str = "",
    ) -> Reply: ...

    def explain_batch(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        settings: GenerationSettings,
        progress: ExplainProgress,
    ) -> list[list[TokenExplanation]]: ...

    def explain_vectors(
        self,
        vectors: Sequence[Sequence[float]],
        settings: GenerationSettings,
        progress: ExplainProgress,
    ) -> list[VectorExplanation]: ...

    def can_refill(self) -> bool: ...

    def explain_refill(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        settings: GenerationSettings,
        progress: RefillProgress,
        more: NextRow,
    ) -> None: ...
