"""Request and response bodies of /api/v1, in the shape of Neuronpedia's NLA API (camelCase ids,
snake_case settings). Limits are named constants inside the types; floats must be finite."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.nla.types import MAX_POSITIONS_PER_REQUEST

#: Positions one request may list (stored ones included); at most 16 of them may be new.
MAX_POSITIONS_LISTED = 2048
MAX_MESSAGES = 64
MAX_TEXT_CHARS = 20_000
MAX_AV_TOKENS = 1024
MAX_TEMPERATURE = 2.0
MAX_D_MODEL = 65_536
MAX_LABEL_CHARS = 2_000
MAX_VECTORS = MAX_POSITIONS_PER_REQUEST

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Temperature = Annotated[
    float,
    Field(
        ge=0.0,
        le=MAX_TEMPERATURE,
        allow_inf_nan=False,
        description="AV sampling temperature; 0 is greedy (the page's setting, so rows are shared "
        "with clicks). Neuronpedia's default is 0.7.",
    ),
]
MaxNewTokens = Annotated[
    int | None,
    Field(ge=1, le=MAX_AV_TOKENS, description="AV tokens at most; null: the source's default."),
]
SourceId = Annotated[
    str | None,
    Field(max_length=100, description="An id of GET /api/v1/sources; null: the default source."),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ChatMessage(_In):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=settings.MAX_MESSAGE_CHARS)


class ExplainRequest(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "messages": [{"role": "user", "content": "My cat loves to sleep"}],
                    "positions": [-1, -2],
                },
                {"text": "The capital of France is Paris", "positions": [3, -1], "stream": True},
            ]
        }
    )

    modelId: str | None = Field(None, max_length=200, description="The target model (optional).")
    nlaSourceId: SourceId = None
    text: str | None = Field(
        None, min_length=1, max_length=MAX_TEXT_CHARS, description="Tokenized as it is."
    )
    messages: list[ChatMessage] | None = Field(
        None,
        min_length=1,
        max_length=MAX_MESSAGES,
        description="Chat-templated with the target's template.",
    )
    cacheId: UUID | None = Field(
        None, description="A conversation of yours (a previous answer's cacheId): its tokens."
    )
    positions: list[int] = Field(
        min_length=1,
        max_length=MAX_POSITIONS_LISTED,
        description=f"Token positions; negative ones count from the end. At most "
        f"{MAX_POSITIONS_PER_REQUEST} may be new (not stored yet).",
    )
    temperature: Temperature = 0.0
    max_new_tokens: MaxNewTokens = None
    stream: bool = Field(False, description="Answer as server-sent events.")

    @model_validator(mode="after")
    def _one_input(self) -> ExplainRequest:
        given = [n for n in ("text", "messages", "cacheId") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "Give exactly one of text, messages or cacheId"
                + (f"; this request gives {' and '.join(given)}." if given else ".")
            )
        return self


class ExplainResult(BaseModel):
    position: int
    token: str
    token_id: int | None
    description: str | None
    paragraphs: list[str]
    mse: float | None
    cosine_similarity: float | None
    fve: float | None
    relative_mse: float | None
    confidence: str | None = Field(
        description="high | medium | low on the source's own scale (docs/confidence.md), capped "
        "by specificity."
    )
    specificity: float | None = Field(
        None,
        description="Fraction of the source's reference explanations whose rebuild of this "
        "activation is worse (ties half); null while the pool is too small.",
    )
    calibration: Literal["matched", "between", "shuffled"] | None = Field(
        None,
        description="Where relative_mse falls between the source's median matched and shuffled "
        "relative MSE; null when the source carries no calibration.",
    )
    confidence_note: str | None = Field(
        None, description="Why the confidence and the specificity point different ways."
    )
    l2_norm: float | None
    cached: bool = Field(description="Stored before this request asked for it.")
    status: Literal["queued", "running", "done", "failed"]
    error: str | None = None
    warnings: list[str] = []
    explanationId: UUID


class ExplainResponse(BaseModel):
    results: list[ExplainResult]
    layer_index: int | None
    prompt_length: int
    cacheId: UUID
    nlaSourceId: str


class CompletionRequest(_In):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"messages": [{"role": "user", "content": "Hello!"}]}]}
    )

    modelId: str | None = Field(None, max_length=200)
    nlaSourceId: SourceId = None
    messages: list[ChatMessage] = Field(
        min_length=1, max_length=MAX_MESSAGES, description="The last one is the user's."
    )

    @model_validator(mode="after")
    def _ends_with_user(self) -> CompletionRequest:
        if self.messages[-1].role != "user":
            raise ValueError(
                f"The last message must be the user's (the model replies to it); it is the "
                f"{self.messages[-1].role}'s."
            )
        return self


class Token(BaseModel):
    position: int
    token: str
    token_id: int
    role: str


class CompletionResponse(BaseModel):
    completion: str
    text: str = Field(description="The whole chat-templated conversation, reply included.")
    tokens: list[Token]
    prompt_length: int
    cacheId: UUID
    nlaSourceId: str


class ExplainVectorRequest(_In):
    nlaSourceId: SourceId = None
    vectors: list[Annotated[list[FiniteFloat], Field(min_length=1, max_length=MAX_D_MODEL)]] = (
        Field(min_length=1, max_length=MAX_VECTORS, description="Each of d_model floats.")
    )
    temperature: Temperature = 0.0
    max_new_tokens: MaxNewTokens = None


class VectorResult(BaseModel):
    index: int
    description: str
    paragraphs: list[str]
    truncated: bool
    mse: float
    cosine_similarity: float
    fve: float | None
    relative_mse: float | None
    confidence: str | None
    specificity: float | None = None
    calibration: Literal["matched", "between", "shuffled"] | None = None
    confidence_note: str | None = None
    l2_norm: float


class ExplainVectorResponse(BaseModel):
    results: list[VectorResult]
    layer_index: int | None
    d_model: int
    nlaSourceId: str


class ScoreRequest(_In):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"vector": [0.5, -0.25], "label": "cats and sleep"}]}
    )

    nlaSourceId: SourceId = None
    vector: list[FiniteFloat] = Field(min_length=1, max_length=MAX_D_MODEL)
    label: str = Field(min_length=1, max_length=MAX_LABEL_CHARS)
    temperature: Temperature = 0.0
    max_new_tokens: MaxNewTokens = None


class Scores(BaseModel):
    nla_reconstructor: float = Field(description="cos(AR(label), vector)")
    nla_verbalizer: float = Field(
        description="cosine of sentence embeddings of the AV's text for the vector and the label"
    )
    nla_verbalizer_last: float = Field(description="the same with the AV text's last paragraph")


class ScoreResponse(BaseModel):
    scores: Scores
    explanation: str
    last_paragraph: str
    label: str
    nlaSourceId: str


class CheckpointOut(BaseModel):
    ref: str = Field(description="A hub id, or a local checkpoint directory's name (never a path)")
    revision: str = Field(
        description="The hub revision (`main` when unpinned), `sha256:<16 hex>` of a local "
        "directory's files, or `missing`"
    )


class SourceOut(BaseModel):
    id: str
    label: str
    modelId: str
    layer: int | None
    d_model: int | None
    var_baseline: float | None
    checkpoints: dict[str, CheckpointOut]
    demo: bool
    uncalibrated: bool
    notes: str
    default: bool


class SourcesResponse(BaseModel):
    sources: list[SourceOut]


class ErrorOut(BaseModel):
    error: str = Field(description="A short code: bad_request, unauthorized, rate_limited, …")
    detail: str = Field(description="One sentence for a person.")
