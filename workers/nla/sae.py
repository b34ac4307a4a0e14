"""Sparse autoencoders in the SAELens layout, as data: `cfg.json` + `sae_weights.safetensors` (decoder
rows `W_dec` `[d_sae, d_in]`), attached to an NLA source and checked against its width and layer.

Read with safetensors and numpy, not with the SAELens library: `sae-lens` 6.x pulls in
transformer-lens, datasets, wandb, plotly, nltk and more (docs/latents.md), while the page needs
only the decoder rows. The layout is the same, so an SAE saved by SAELens loads here unchanged.
No torch and no Django: the web process reads decoder rows with this module.

Every refusal is one sentence (SaeRefused) naming the file, the numbers and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.nla.errors import CheckpointIncompatible

SAE_CONFIG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"
#: nlaweb's files beside an SAE (written by the demo build; optional for any other SAE).
SAE_FIGURES = "training_figures.json"
SAE_CONTEXTS = "top_contexts.json"

Matrix = npt.NDArray[np.float32]

# TransformerLens hook names SAELens uses, and the Hugging Face module name of a decoder block.
_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(post|pre)$")
_HF_BLOCK = re.compile(r"^model\.layers\.(\d+)$")


class SaeRefused(CheckpointIncompatible):
    """An SAE that cannot serve a source; the message says why in one sentence."""


@dataclass(frozen=True)
class SaeConfig:
    d_in: int
    d_sae: int
    layer: int  # the decoder block whose output the SAE reads (the NLA's layer K)
    hook_name: str
    architecture: str
    k: int | None  # TopK's k, when the SAE is one
    model_name: str


@dataclass(frozen=True)
class Sae:
    """A loaded SAE. `W_dec` is `[d_sae, d_in]` float32 with finite rows."""

    directory: Path
    config: SaeConfig
    W_dec: Matrix  # SAELens spells it so

    def direction(self, index: int) -> Matrix:
        """Decoder row `index` scaled to unit L2 norm (`[d_in]` float32); SaeRefused if out of range
        or zero."""
        if not 0 <= index < self.config.d_sae:
            raise SaeRefused(
                f"This SAE has latents 0 to {self.config.d_sae - 1}; there is no latent {index}."
            )
        row = self.W_dec[index].astype(np.float32)
        norm = float(np.linalg.norm(row.astype(np.float64)))
        if norm == 0.0:
            raise SaeRefused(f"Latent {index}'s decoder row is all zeros: it has no direction.")
        unit: Matrix = (row / norm).astype(np.float32)
        return unit

    def figures(self) -> dict[str, Any]:
        """The training figures stored beside the SAE (empty when there are none)."""
        return _json_beside(self.directory / SAE_FIGURES)

    def contexts(self) -> dict[str, Any]:
        """Top-activating contexts stored beside the SAE: latent index (str) → its density and
        contexts. Read once per loaded SAE."""
        return self._contexts

    @cached_property
    def _contexts(self) -> dict[str, Any]:
        latents = _json_beside(self.directory / SAE_CONTEXTS).get("latents")
        return latents if isinstance(latents, dict) else {}


def _json_beside(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc if isinstance(doc, dict) else {}


def sae_directory(ref: str) -> Path:
    """A local directory, or a hub id `org/name[@revision][#subfolder]` fetched through the Hugging
    Face cache (both files); SaeRefused when neither is found."""
    local = Path(ref).expanduser()
    if local.is_absolute() or local.exists() or ref.startswith("."):
        return local
    from huggingface_hub import hf_hub_download

    repo_rev, _, subfolder = ref.partition("#")
    repo, _, revision = repo_rev.partition("@")
    try:
        found = [
            hf_hub_download(repo, name, subfolder=subfolder or None, revision=revision or None)
            for name in (SAE_CONFIG, SAE_WEIGHTS)
        ]
    except Exception as exc:
        raise SaeRefused(
            f"The SAE '{ref}' is neither a local directory nor a Hugging Face repository this "
            f"machine can read ({type(exc).__name__}); check the path or download it first."
        ) from exc
    return Path(found[0]).parent


def parse_config(doc: Any, where: str) -> SaeConfig:
    """The fields of a SAELens `cfg.json` (v6 with `metadata`, or the flat older one)."""
    if not isinstance(doc, dict):
        raise SaeRefused(f"{where} is not a JSON object.")
    found = doc.get("metadata")
    meta: dict[str, Any] = found if isinstance(found, dict) else {}
    sizes = {}
    for key in ("d_in", "d_sae"):
        value = doc.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise SaeRefused(f"{where} needs a positive integer '{key}', found {value!r}.")
        sizes[key] = value
    hook = doc.get("hook_name", meta.get("hook_name"))
    hook_layer = doc.get("hook_layer", meta.get("hook_layer"))
    found = doc.get("activation_fn_kwargs")
    kwargs: dict[str, Any] = found if isinstance(found, dict) else {}
    k = doc.get("k", kwargs.get("k"))
    return SaeConfig(
        d_in=sizes["d_in"],
        d_sae=sizes["d_sae"],
        layer=_layer(hook, hook_layer, where),
        hook_name=str(hook or f"blocks.{hook_layer}.hook_resid_post"),
        architecture=str(doc.get("architecture", doc.get("activation_fn_str", "standard"))),
        k=k if isinstance(k, int) and not isinstance(k, bool) else None,
        model_name=str(doc.get("model_name", meta.get("model_name")) or ""),
    )


def _layer(hook: Any, hook_layer: Any, where: str) -> int:
    """The decoder block whose output the hook reads: `blocks.K.hook_resid_post` and
    `model.layers.K` read block K; `blocks.K.hook_resid_pre` reads block K-1's output."""
    if isinstance(hook, str):
        if match := _RESID.match(hook):
            block, kind = int(match[1]), match[2]
            if kind == "post":
                return block
            if block > 0:
                return block - 1
            raise SaeRefused(
                f"{where} reads 'blocks.0.hook_resid_pre', the token embeddings, which no NLA "
                "explains; attach an SAE of a decoder block's output."
            )
        if match := _HF_BLOCK.match(hook):
            return int(match[1])
        raise SaeRefused(
            f"{where} reads the hook '{hook}', which is not the residual stream after a decoder "
            "block (blocks.K.hook_resid_post) that an NLA explains."
        )
    if isinstance(hook_layer, int) and not isinstance(hook_layer, bool) and hook_layer >= 0:
        return hook_layer
    raise SaeRefused(
        f"{where} names no layer: it needs 'hook_name' (e.g. blocks.8.hook_resid_post) or "
        "'hook_layer'."
    )


def read_config(directory: Path) -> SaeConfig:
    path = directory / SAE_CONFIG
    if not path.is_file():
        raise SaeRefused(f"The SAE directory {directory} has no {SAE_CONFIG}.")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SaeRefused(f"{path} is not valid JSON ({exc}).") from exc
    return parse_config(doc, str(path))


def check_fits(config: SaeConfig, where: str, source_id: str, d_model: int, layer: int) -> None:
    """SaeRefused unless the SAE reads vectors of the source's width at the source's layer."""
    if config.d_in != d_model:
        raise SaeRefused(
            f"{where} reads vectors of width d_in = {config.d_in}, but the NLA source "
            f"'{source_id}' explains width d_model = {d_model}; attach an SAE of this model."
        )
    if config.layer != layer:
        raise SaeRefused(
            f"{where} reads the output of block {config.layer} ({config.hook_name}), but the NLA "
            f"source '{source_id}' explains block {layer}; attach an SAE of layer {layer}."
        )


def read_decoder(directory: Path, config: SaeConfig) -> Matrix:
    """`W_dec` as `[d_sae, d_in]` float32; SaeRefused if absent, of another shape, or not finite."""
    path = directory / SAE_WEIGHTS
    if not path.is_file():
        raise SaeRefused(f"The SAE directory {directory} has no {SAE_WEIGHTS}.")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as weights:
            if "W_dec" not in weights.keys():  # noqa: SIM118 (safe_open has no __contains__)
                raise SaeRefused(f"{path} has no tensor 'W_dec' (the decoder rows).")
            decoder = np.asarray(weights.get_tensor("W_dec"), dtype=np.float32)
    except SafetensorError as exc:
        raise SaeRefused(f"{path} is not a readable safetensors file ({exc}).") from exc
    expected = (config.d_sae, config.d_in)
    if decoder.shape != expected:
        raise SaeRefused(
            f"{path}: W_dec has shape {list(decoder.shape)}, but cfg.json says "
            f"[d_sae, d_in] = {list(expected)}."
        )
    bad = np.flatnonzero(~np.isfinite(decoder).all(axis=1))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:5]) + (", …" if bad.size > 5 else "")
        raise SaeRefused(
            f"{path}: {bad.size} of {config.d_sae} decoder rows hold NaN or infinite values "
            f"(rows {shown}); the SAE's weights are damaged."
        )
    return decoder


def load_sae(ref: str, source_id: str, d_model: int, layer: int) -> Sae:
    """The SAE at `ref` (directory or hub id), checked to fit the source; SaeRefused otherwise."""
    directory = sae_directory(ref)
    if not directory.is_dir():
        raise SaeRefused(
            f"The SAE directory {directory} of the source '{source_id}' does not exist."
        )
    config = read_config(directory)
    check_fits(config, f"The SAE at {directory}", source_id, d_model, layer)
    return Sae(directory, config, read_decoder(directory, config))
