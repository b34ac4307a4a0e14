"""One engine per source per worker process, loaded lazily on first use (never at import or before a
fork), shared by threads."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from workers.nla.engine import NlaEngine
from workers.nla.errors import SourceNotServed
from workers.sources import SourceConfig

_lock = threading.Lock()
_served: dict[str, SourceConfig] = {}
_engines: dict[str, NlaEngine] = {}
_placement: dict[str, str | None] = {"device": None, "dtype": None}


def configure(sources: Sequence[SourceConfig], *, device: str | None, dtype: str | None) -> None:
    """Declare the sources this worker serves; engines already loaded for them are kept."""
    with _lock:
        _served.clear()
        _served.update({s.id: s for s in sources})
        for stale in set(_engines) - set(_served):
            del _engines[stale]
        _placement.update(device=device, dtype=dtype)


def get_engine(source_id: str) -> NlaEngine:
    with _lock:
        if source_id not in _served:
            served = ", ".join(sorted(_served)) or "none"
            raise SourceNotServed(
                f"No worker serves the NLA source '{source_id}' (this worker serves: {served}); "
                "ask an administrator to start a worker for it."
            )
        if source_id not in _engines:
            _engines[source_id] = NlaEngine.load(
                _served[source_id], device=_placement["device"], dtype=_placement["dtype"]
            )
        return _engines[source_id]
