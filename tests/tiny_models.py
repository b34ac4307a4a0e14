"""Tiny NLA sources built on the fly: a byte-level BPE tokenizer trained on a few sentences, a random
target of the chosen family, an AV and an AR written in the published checkpoint format.

Everything goes through `save_pretrained` → `from_pretrained`, the loader real checkpoints use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from workers.source_config import SourceConfig

MARKER = "㈎"
LAYER = 2
N_LAYERS = 4
D_MODEL = 32
INJECTION_SCALE = 6.0
VAR_BASELINE = 1.5
AV_TEMPLATE = "Explain the thought {injection_char} in words."
AR_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "My cat loves to sleep on the warm windowsill in the afternoon.",
    "Summary of the following text: explain the thought in words.",
    "The dog runs in the park. A cat is a small animal. Explanation of a token.",
    "<explanation>The text is about animals.</explanation> Paris is the capital of France.",
]
SPECIALS = ["<bos>", "<eos>", "<pad>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS * 4, trainer)
    # Like Llama's and Gemma's tokenizers: BOS under add_special_tokens=True, so templating and then
    # tokenizing again would double it (the trap the engine must avoid).
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 0)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<eos>"],
    )
    tokenizer.add_tokens([MARKER])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _config(family: str, vocab: int, layers: int) -> Any:
    common: dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=D_MODEL,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=4,
        pad_token_id=2,
    )
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if family == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**common, head_dim=8, sliding_window=16)
    raise ValueError(family)


def build_model(family: str, vocab: int, layers: int = N_LAYERS, seed: int = 0) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(family, vocab, layers))
    return model.float().eval()


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / "nla_meta.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True), "utf-8")


def av_meta(tokenizer: Any, **changes: Any) -> dict[str, Any]:
    content = AV_TEMPLATE.replace("{injection_char}", MARKER)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True
    )["input_ids"]
    marker_id = tokenizer.convert_tokens_to_ids(MARKER)
    at = ids.index(marker_id)
    meta = {
        "kind": "nla_model",
        "schema_version": 2,
        "role": "av",
        "d_model": D_MODEL,
        "extraction": {"injection_scale": INJECTION_SCALE},
        "tokens": {
            "injection_char": MARKER,
            "injection_token_id": marker_id,
            "injection_left_neighbor_id": ids[at - 1],
            "injection_right_neighbor_id": ids[at + 1],
        },
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
        "nlaweb": {"max_new_tokens": 8},
        "trained_on": "nothing: random weights for tests",
    }
    return _merge(meta, changes)


def ar_meta(tokenizer: Any, **changes: Any) -> dict[str, Any]:
    suffix = tokenizer(AR_TEMPLATE.replace("{explanation}", "x"))["input_ids"][-3:]
    meta = {
        "kind": "nla_model",
        "schema_version": 2,
        "role": "ar",
        "d_model": D_MODEL,
        "extraction": {},
        "tokens": {"critic_suffix_ids": suffix},
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
        "critic": {"extraction_layer_index": LAYER},
        "nlaweb": {"var_baseline": VAR_BASELINE},
    }
    return _merge(meta, changes)


def _merge(meta: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply `changes` given as dotted keys (`tokens__injection_token_id` → tokens.injection_token_id);
    a value of None deletes the key."""
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = meta
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return meta


def build_tiny_source(
    root: Path,
    family: str = "llama",
    *,
    av_changes: dict[str, Any] | None = None,
    ar_changes: dict[str, Any] | None = None,
    ar_layers: int = LAYER + 1,
) -> SourceConfig:
    """Write target/, av/ and ar/ under `root`; returns the source that points at them."""
    tokenizer = build_tokenizer()
    vocab = len(tokenizer)
    target = build_model(family, vocab, seed=0)
    av = build_model(family, vocab, seed=1)
    for name, model in (("target", target), ("av", av)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    _write_meta(root / "av", av_meta(tokenizer, **(av_changes or {})))
    ar = build_model(family, vocab, layers=ar_layers, seed=2)
    ar.load_state_dict(target.state_dict(), strict=False)  # the first K+1 blocks of the target
    ar.save_pretrained(root / "ar")
    tokenizer.save_pretrained(root / "ar")
    torch.manual_seed(3)
    head = torch.randn(D_MODEL, D_MODEL) / D_MODEL**0.5
    save_file({"weight": head.contiguous()}, str(root / "ar" / "value_head.safetensors"))
    _write_meta(root / "ar", ar_meta(tokenizer, **(ar_changes or {})))
    return SourceConfig(
        id=f"tiny-{family}",
        label=f"tiny {family} · layer {LAYER} · test NLA",
        target=str(root / "target"),
        av=str(root / "av"),
        ar=str(root / "ar"),
    )
