"""The target model: chat templating with per-message spans, replies, and activation capture."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from workers.nla.capture import capture_block_output
from workers.nla.decode import DecodeSpec, generate
from workers.nla.loading import LoadModel, decoder_layers, load_causal_lm, load_tokenizer
from workers.nla.types import (
    ChatTurn,
    GenerationSettings,
    MessageSpan,
    Reply,
    TokenizedConversation,
)

if TYPE_CHECKING:
    from workers.nla.backends import Generator

#: Greedy replies of small chat models loop ("I'm not sure what to do with it." × 20); this keeps them
#: deterministic and readable. The AV's decoding is left exactly as the NLA was trained to be read.
REPLY_REPETITION_PENALTY = 1.2


def _template_ids(
    tokenizer: Any, turns: Sequence[ChatTurn], generation_prompt: bool, *, open_last: bool = False
) -> list[int]:
    """The chat template applied and tokenized in one step (no second BOS). `open_last` leaves the
    last (assistant) turn open, without its end-of-turn tokens, for the model to continue it."""
    if not turns:
        return []
    encoded = tokenizer.apply_chat_template(
        [{"role": t.role, "content": t.content} for t in turns],
        add_generation_prompt=generation_prompt and not open_last,
        continue_final_message=open_last,
        tokenize=True,
    )
    ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    return [int(i) for i in ids]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class TargetModel:
    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        #: Writes replies when set (workers/nla/backends.py); None: transformers, in this process.
        self.generator: Generator | None = None
        self.device = next(model.parameters()).device
        self.num_layers = len(decoder_layers(model))
        self._special = set(getattr(tokenizer, "all_special_ids", []) or [])

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        device: torch.device | None,
        dtype: torch.dtype,
        load: LoadModel = load_causal_lm,
    ) -> TargetModel:
        """The target in `path`; `load` may hand out a model other sources share."""
        return cls(load(path, device, dtype), load_tokenizer(path))

    def tokenize(
        self, turns: Sequence[ChatTurn], *, add_generation_prompt: bool = False
    ) -> TokenizedConversation:
        """Token ids of the templated conversation and the span of every turn in them."""
        ids = _template_ids(self.tokenizer, turns, add_generation_prompt)
        bounds = [0]
        for i in range(1, len(turns)):
            bounds.append(_common_prefix(_template_ids(self.tokenizer, turns[:i], False), ids))
        end = len(ids)
        if add_generation_prompt:
            end = _common_prefix(_template_ids(self.tokenizer, turns, False), ids)
        bounds.append(end)
        spans = [MessageSpan(i, t.role, bounds[i], bounds[i + 1]) for i, t in enumerate(turns)]
        if end < len(ids):
            spans.append(MessageSpan(len(turns), "assistant", end, len(ids)))
        spans = self._split_lead(spans, ids, self._opener(turns, spans, ids))
        texts = [self.tokenizer.decode([i]) for i in ids]
        return TokenizedConversation(ids, texts, spans)

    def _opener(
        self, turns: Sequence[ChatTurn], spans: list[MessageSpan], ids: list[int]
    ) -> int | None:
        """The token that opens a turn: where the second span starts or, for a lone turn, where a
        probe turn appended after it starts."""
        if not spans:
            return None
        if len(spans) >= 2:
            return ids[spans[1].start] if spans[1].start < len(ids) else None
        other = "assistant" if turns[0].role == "user" else "user"
        try:
            probe = _template_ids(self.tokenizer, [*turns, ChatTurn(other, "x")], False)
        except Exception:  # a template that refuses this role order: the lead stays in the turn
            return None
        at = _common_prefix(ids, probe)
        return probe[at] if at < len(probe) else None

    def _split_lead(
        self, spans: list[MessageSpan], ids: list[int], opener: int | None
    ) -> list[MessageSpan]:
        """Move template text before the first turn's header (BOS, a default system prompt) into a
        span of its own: the first turn starts at the last turn-start token before its content."""
        if not spans or spans[0].start != 0:
            return spans
        first = spans[0]
        starts = [p for p in range(first.start, first.end) if ids[p] == opener]
        if opener not in self._special or not starts or starts[-1] == 0:
            return spans
        cut = starts[-1]
        lead = MessageSpan(-1, "template", 0, cut)
        return [lead, MessageSpan(first.message_index, first.role, cut, first.end), *spans[1:]]

    def reply(
        self,
        turns: Sequence[ChatTurn],
        settings: GenerationSettings,
        max_new_tokens: int,
        on_text: Callable[[str], None],
        *,
        prefix: str = "",
    ) -> Reply:
        """The assistant's next message, generated with the chat template; `on_text` streams it.
        With a `prefix`, the message starts with that text and the model continues it."""
        if prefix:
            turns = [*turns, ChatTurn("assistant", prefix)]
        ids = _template_ids(self.tokenizer, turns, True, open_last=bool(prefix))
        end = getattr(self.tokenizer, "eos_token_id", None)
        spec = DecodeSpec(
            max_new_tokens=settings.max_new_tokens or max_new_tokens,
            temperature=settings.temperature,
            seed=settings.seed,
            end_ids=frozenset([end] if isinstance(end, int) else []),
            repetition_penalty=REPLY_REPETITION_PENALTY,
        )
        stream = lambda _r, t: on_text(prefix + t)  # noqa: E731
        if self.generator is not None:
            decoded = self.generator.from_ids([ids], spec, stream)
        else:
            prompt = torch.tensor([ids], device=self.device)
            decoded = generate(self.model, self.tokenizer, spec, input_ids=prompt, on_text=stream)
        text = (prefix + decoded[0].text).rstrip() if prefix else decoded[0].text.strip()
        return Reply(text, truncated=not decoded[0].stopped)

    def capture(self, token_ids: Sequence[int], layer: int) -> torch.Tensor:
        """`[T, d]` float32: the output of block `layer` at every position of `token_ids`."""
        ids = torch.tensor([list(token_ids)], device=self.device)
        return capture_block_output(self.model, ids, layer)[0]

    def tokenize_text(self, text: str) -> TokenizedConversation:
        """Token ids of `text` as it is, no chat template (the tokenizer's own special tokens, such as
        BOS, are added as for any prompt): the leading special tokens form a "template" span, the
        rest one span of turn 0."""
        ids = [int(i) for i in self.tokenizer(text, add_special_tokens=True)["input_ids"]]
        lead = 0
        while lead < len(ids) and ids[lead] in self._special:
            lead += 1
        spans = [MessageSpan(-1, "template", 0, lead)] if lead else []
        spans.append(MessageSpan(0, "user", lead, len(ids)))
        texts = [self.tokenizer.decode([i]) for i in ids]
        return TokenizedConversation(ids, texts, spans)
