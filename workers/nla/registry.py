"""One engine per source per worker process, loaded lazily on first use (never at import or before a
fork), shared by threads; a load holds only its own source's lock. Engines of sources with the same
target (or AV) weights share one loaded model (shared_models.py), dropped with the last of them."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from workers.nla.engine import NlaEngine
from workers.nla.errors import SourceNotServed
from workers.nla.shared_models import SharedModels
from workers.source_config import SourceConfig

_lock = threading.Lock()
_served: dict[str, SourceConfig] = {}
_engines: dict[str, NlaEngine] = {}
_loading: dict[str, threading.Lock] = {}
_models = SharedModels()
_placement: dict[str, str | None] = {"device": None, "dtype": None, "backend": "hf"}


def configure(
    sources: Sequence[SourceConfig],
    *,
    device: str | None,
    dtype: str | None,
    backend: str = "hf",
) -> None:
    """Declare the sources this worker serves; engines already loaded for them are kept."""
    with _lock:
        _served.clear()
        _served.update({s.id: s for s in sources})
        for stale in set(_engines) - set(_served):
            del _engines[stale]
        _models.keep_only(_served)
        _placement.update(device=device, dtype=dtype, backend=backend)


def get_engine(source_id: str) -> NlaEngine:
    with _lock:
        source = _served.get(source_id)
        if source is None:
            names = ", ".join(sorted(_served)) or "none"
            raise SourceNotServed(
                f"No worker serves the NLA source '{source_id}' (this worker serves: {names}); "
                "ask an administrator to start a worker for it."
            )
        loading = _loading.setdefault(source_id, threading.Lock())
    with loading:
        engine = _engines.get(source_id)
        if engine is None:
            try:
                engine = NlaEngine.load(
                    source,
                    device=_placement["device"],
                    dtype=_placement["dtype"],
                    backend=_placement["backend"] or "hf",
                    models=_models,
                )
            except BaseException:
                _models.release(source_id)  # what it took is no engine's
                raise
            with _lock:
                _engines[source_id] = engine
        return engine
