"""Generation backends: what the engine needs from a text generator (`Generator`), the Hugging Face
one (the default, and the CPU path) and an optional vLLM one for GPUs.

The verbalizer hands a generator its prompts as embeddings `[T, d]` with the activation in the
marker's row (as Neuronpedia's NLA server does with vLLM's `prompt_embeds`); replies hand it token
ids. Capture and the reconstructor always stay on transformers: vLLM returns no hidden states of a
chosen layer. Which backend runs is `NLA_BACKEND` (worker) or a source's `backend` key
(docs/serving.md)."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from workers.nla.decode import Decoded, DecodeSpec, OnText, generate
from workers.nla.errors import CheckpointIncompatible
from workers.nla.loading import resolve_checkpoint
from workers.nla.refill import Prompt, generate_refill
from workers.source_config import BACKENDS

log = logging.getLogger(__name__)

#: Share of the GPU each vLLM engine may take: a worker runs two (AV, target for replies) beside
#: the transformers copies of the target (capture) and the AR, so not vLLM's 0.9 default.
VLLM_GPU_MEMORY_FRACTION = 0.3
VLLM_MAX_MODEL_LEN = 4096


class Generator(Protocol):
    """Continuations of prompts, each row stopped and streamed on its own (`on_text(row, text)`),
    greedy when `spec.temperature` is 0. Results come back in the prompts' order."""

    name: str

    def from_ids(
        self, prompts: Sequence[Sequence[int]], spec: DecodeSpec, on_text: OnText | None = None
    ) -> list[Decoded]: ...

    def from_embeds(
        self, prompts: Sequence[torch.Tensor], spec: DecodeSpec, on_text: OnText | None = None
    ) -> list[Decoded]: ...


def check_backend(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise CheckpointIncompatible(
            f"{where} names the generation backend '{name}'; use one of {', '.join(BACKENDS)}."
        )
    return name


@dataclass
class HfGenerator:
    """transformers: one batch when the prompts share a length, slot refill otherwise."""

    model: nn.Module
    tokenizer: Any
    name: str = "hf"

    def from_ids(
        self, prompts: Sequence[Sequence[int]], spec: DecodeSpec, on_text: OnText | None = None
    ) -> list[Decoded]:
        device = next(self.model.parameters()).device
        tensors = [torch.tensor([list(p)], device=device) for p in prompts]
        if len({t.shape[1] for t in tensors}) == 1:
            batch = torch.cat(tensors)
            return generate(self.model, self.tokenizer, spec, input_ids=batch, on_text=on_text)
        return self._refill([Prompt(input_ids=t) for t in tensors], spec, on_text)

    def from_embeds(
        self, prompts: Sequence[torch.Tensor], spec: DecodeSpec, on_text: OnText | None = None
    ) -> list[Decoded]:
        if len({p.shape[0] for p in prompts}) == 1:
            batch = torch.stack(list(prompts))
            return generate(self.model, self.tokenizer, spec, inputs_embeds=batch, on_text=on_text)
        return self._refill([Prompt(inputs_embeds=p[None]) for p in prompts], spec, on_text)

    def _refill(
        self, prompts: list[Prompt], spec: DecodeSpec, on_text: OnText | None
    ) -> list[Decoded]:
        waiting = iter(prompts)
        return generate_refill(
            self.model,
            self.tokenizer,
            spec,
            lambda: next(waiting, None),
            slots=len(prompts),
            on_text=on_text,
        )


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def sampling_kwargs(spec: DecodeSpec) -> dict[str, Any]:
    """vLLM `SamplingParams` for `spec`. The stop string stays in the text, as the transformers
    path keeps it. vLLM's repetition penalty also counts the prompt's tokens (ours counts the
    generated ones only), so replies with a penalty may differ between the backends."""
    return {
        "n": 1,
        "temperature": spec.temperature,
        "max_tokens": spec.max_new_tokens,
        "seed": spec.seed,
        "stop": list(spec.stop_strings),
        "stop_token_ids": sorted(spec.end_ids),
        "include_stop_str_in_output": True,
        "repetition_penalty": spec.repetition_penalty,
        "skip_special_tokens": True,
    }


def embeds_inputs(prompts: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """vLLM prompts for embeddings `[T, d]` (an LLM started with `enable_prompt_embeds=True`)."""
    for prompt in prompts:
        if prompt.dim() != 2:
            raise ValueError(f"prompt embeddings must be [T, d], got {tuple(prompt.shape)}")
    return [{"prompt_embeds": p.detach().cpu()} for p in prompts]


def ids_inputs(prompts: Sequence[Sequence[int]]) -> list[dict[str, list[int]]]:
    return [{"prompt_token_ids": [int(i) for i in p]} for p in prompts]


def decoded_from_vllm(output: Any, spec: DecodeSpec) -> Decoded:
    """One vLLM `RequestOutput` as the transformers path reports a row."""
    completion = output.outputs[0]
    ids = [int(i) for i in completion.token_ids if int(i) not in spec.end_ids]
    return Decoded(ids, completion.text, completion.finish_reason == "stop")


class VllmGenerator:
    """vLLM's offline `LLM` over a checkpoint directory. `LLM.generate` returns whole texts, so
    `on_text` hears each row once, at its end."""

    name = "vllm"

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    @classmethod
    def load(cls, path: Path, dtype: torch.dtype) -> VllmGenerator:
        if not vllm_available():
            raise CheckpointIncompatible(
                "NLA_BACKEND is vllm but vLLM is not installed in this worker; install `vllm` "
                "(GPU) or set NLA_BACKEND=hf."
            )
        from vllm import LLM

        llm = LLM(
            model=str(path),
            dtype=str(dtype).removeprefix("torch."),
            enable_prompt_embeds=True,
            gpu_memory_utilization=VLLM_GPU_MEMORY_FRACTION,
            max_model_len=VLLM_MAX_MODEL_LEN,
        )
        return cls(llm)

    def from_ids(
        self, prompts: Sequence[Sequence[int]], spec: DecodeSpec, on_text: OnText | None = None
    ) -> list[Decoded]:
        return self._run(ids_inputs(prompts), spec, on_text)

    def from_embeds(
        self, prompts: Sequence[torch.Tensor], spec: DecodeSpec, on_text: OnText | None = None
    ) -> list[Decoded]:
        return self._run(embeds_inputs(prompts), spec, on_text)

    def _run(self, inputs: list[Any], spec: DecodeSpec, on_text: OnText | None) -> list[Decoded]:
        from vllm import SamplingParams

        outputs = self.llm.generate(inputs, SamplingParams(**sampling_kwargs(spec)), use_tqdm=False)
        decoded = [decoded_from_vllm(o, spec) for o in outputs]
        if on_text is not None:
            for row, d in enumerate(decoded):
                on_text(row, d.text)
        return decoded


def use_backend(name: str, source: Any, target: Any, av: Any, dtype: torch.dtype) -> None:
    """Hand `source`'s replies (target) and explanations (AV) to backend `name`; "hf" keeps them on
    transformers. An AV that injects at a block's output (`injection_layer` > 0, the demo) cannot
    be fed through prompt embeddings and stays on transformers."""
    check_backend(name, f"The NLA source '{source.id}'")
    if name == "hf":
        return
    target.generator = VllmGenerator.load(resolve_checkpoint(source.target), dtype)
    if av.meta.injection_layer == 0:
        av.generator = VllmGenerator.load(resolve_checkpoint(source.av), dtype)
    else:
        log.warning(
            "source %s: its AV injects at block %d, which prompt embeddings cannot reach; "
            "explanations stay on transformers, replies go to vLLM",
            source.id,
            av.meta.injection_layer,
        )
