"""Captured activations keyed by (source, token-prefix hash, position): causal attention makes the
activation at p a function of tokens[:p+1] alone, so an edit that appends reuses every earlier capture."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

Key = tuple[str, str, int]


def prefix_keys(source_id: str, token_ids: Sequence[int], positions: Sequence[int]) -> list[Key]:
    """The cache key of each position: a sha256 over tokens[:p+1], computed in one pass."""
    wanted = sorted(set(positions))
    digests: dict[int, str] = {}
    running = hashlib.sha256()
    cursor = 0
    for p in wanted:
        for token in token_ids[cursor : p + 1]:
            running.update(int(token).to_bytes(4, "little", signed=True))
        cursor = p + 1
        digests[p] = running.copy().hexdigest()
    return [(source_id, digests[p], p) for p in positions]


class ActivationCache:
    """A thread-safe LRU of `[d]` float32 vectors (kept on the CPU)."""

    def __init__(self, max_entries: int = 8192) -> None:
        self._data: OrderedDict[Key, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.hits = self.misses = 0

    def get(self, key: Key) -> torch.Tensor | None:
        with self._lock:
            vector = self._data.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: Key, vector: torch.Tensor) -> None:
        with self._lock:
            # A copy: a row of a whole capture would otherwise keep all of it alive.
            self._data[key] = vector.detach().float().cpu().clone()
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
