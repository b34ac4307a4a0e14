"""Where weights come from and where they go: a hub id (optionally `@revision`) or a local directory,
loaded with the ordinary `from_pretrained` path onto the worker's device and dtype."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.nla.errors import ModelLoadError, is_time_limit

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


#: NLA_DEVICE value that shards each model over all visible devices (accelerate's device_map).
SHARDED = "auto"


@contextmanager
def load_errors(message: Callable[[Exception], str]) -> Iterator[None]:
    """Errors of a third-party loader as ModelLoadError(message(error)); a job's time limit passes
    through as itself, so it reads as a time limit and not as weights that could not be loaded."""
    try:
        yield
    except Exception as exc:
        if is_time_limit(exc):
            raise
        raise ModelLoadError(message(exc)) from exc


def resolve_device(device: str | None) -> torch.device | None:
    """`device` as given, else CUDA when available, else CPU; None for `auto` (sharded)."""
    if device == SHARDED:
        return None
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str | None, device: torch.device | None) -> torch.dtype:
    """`dtype` by name, else float32 on CPU and bfloat16 on CUDA (or sharded over GPUs)."""
    if dtype is None:
        cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
        return torch.bfloat16 if cuda else torch.float32
    if dtype not in _DTYPES:
        raise ModelLoadError(f"NLA_DTYPE must be one of {', '.join(_DTYPES)}, found {dtype!r}.")
    return _DTYPES[dtype]


def resolve_checkpoint(ref: str) -> Path:
    """A local directory as is; a hub id `org/name[@revision]` through the hub cache (offline-safe)."""
    local = Path(ref).expanduser()
    if local.is_dir():
        return local
    repo_id, _, revision = ref.partition("@")
    if local.is_absolute() or repo_id.count("/") != 1:
        raise ModelLoadError(f"The checkpoint '{ref}' is neither a local directory nor a hub id.")
    from huggingface_hub import snapshot_download

    with load_errors(
        lambda exc: (
            f"The checkpoint '{ref}' could not be fetched from the hub ({type(exc).__name__}); "
            "download it beforehand and point the source at the local directory."
        )
    ):
        return Path(snapshot_download(repo_id, revision=revision or None))


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    with load_errors(lambda exc: f"The tokenizer in {path} could not be loaded: {exc}."):
        return AutoTokenizer.from_pretrained(path)


#: How a causal LM is loaded: `load_causal_lm`, or a worker's shared copy (shared_models.py).
LoadModel = Callable[[Path, torch.device | None, torch.dtype], nn.Module]


def load_causal_lm(path: Path, device: torch.device | None, dtype: torch.dtype) -> nn.Module:
    """A causal LM in eval mode on `device` (None: sharded over the visible devices)."""
    from transformers import AutoModelForCausalLM

    return _load(AutoModelForCausalLM, path, device, dtype)


def load_base_model(path: Path, device: torch.device | None, dtype: torch.dtype) -> nn.Module:
    """The decoder without an LM head (the AR's trunk) in eval mode on `device` (None: sharded)."""
    from transformers import AutoModel

    return _load(AutoModel, path, device, dtype)


def _load(auto: Any, path: Path, device: torch.device | None, dtype: torch.dtype) -> nn.Module:
    from transformers.utils import logging as hf_logging

    # The AR trunk is loaded from a causal-LM directory: its unused lm_head is reported, not an error.
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    placement = {"device_map": SHARDED} if device is None else {}
    with load_errors(lambda exc: f"The weights in {path} could not be loaded: {exc}."):
        model, info = auto.from_pretrained(path, dtype=dtype, output_loading_info=True, **placement)
    # transformers fills tensors absent from the files with random values and only logs it; a
    # verbalizer or reconstructor with random blocks would explain nonsense with a straight face.
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("lm_head.weight")]
    if missing:
        raise ModelLoadError(
            f"The weights in {path} lack {len(missing)} tensor(s) its config.json needs "
            f"(first: {sorted(missing)[0]}); the files do not match the architecture."
        )
    loaded: nn.Module = (model if device is None else model.to(device)).eval()
    return loaded


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a causal LM or its base model (Llama, Qwen, Mistral, Gemma-3 text)."""
    for path in ("model.layers", "layers", "model.language_model.layers", "language_model.layers"):
        node: Any = model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList):
            return node
    raise ModelLoadError(f"Cannot find the decoder blocks of {type(model).__name__}.")


def text_config(config: Any) -> Any:
    """The text decoder's config (multimodal Gemma-3 nests it under `text_config`)."""
    return getattr(config, "text_config", None) or config
