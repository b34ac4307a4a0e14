"""The reference pool that specificity ranks against: AR predictions of other explanations of one
source. It starts from the checkpoint's `reference_pool.safetensors` when there is one (the demo
writes the held-out predictions of its build) and is refreshed, per worker process, by a ring of the
last `POOL_SIZE` explanations the worker scored; the build-time entries roll out as new ones come.

Each scored entry carries the token prefix of the token it explained. An entry is left out of a
query whose snapshot agrees with that prefix on their common length: the entry explained a token of
this snapshot (or of its earlier turns, or of an identical template preamble, whose activation is
the same), or the snapshot lies in the entry's own history."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from workers.nla.errors import CheckpointIncompatible, mismatch

POOL_FILE = "reference_pool.safetensors"
POOL_KEY = "predictions"
#: Entries kept per source and worker (and the most a pool file may hold).
POOL_SIZE = 256
#: Fewer eligible entries than this give no specificity (None): a rank among a handful of
#: explanations moves by more than 3 percentage points per entry.
MIN_POOL = 32


def token_prefix(token_ids: Sequence[int]) -> bytes:
    """The identity of a token sequence: its ids as little-endian int32 bytes, so that the bytes of
    `tokens[:n]` are the first 4n bytes of the bytes of `tokens`."""
    return np.asarray(token_ids, dtype="<i4").tobytes()


def same_snapshot(entry: bytes | None, snapshot: bytes | None) -> bool:
    """Whether an entry's token prefix and a snapshot's tokens agree on their common length."""
    if entry is None or snapshot is None:
        return False
    common = min(len(entry), len(snapshot))
    return entry[:common] == snapshot[:common]


@dataclass(frozen=True)
class PoolEntry:
    prediction: torch.Tensor  # [d] float32 on the CPU, raw (as the AR predicted it)
    prefix: bytes | None  # token_prefix(tokens[:p+1]) of the explained token; None: build-time


def load_pool_file(path: Path, d_model: int) -> torch.Tensor | None:
    """`[N, d]` float32 from `path`/reference_pool.safetensors (key `predictions`), None if absent."""
    file = path / POOL_FILE
    if not file.is_file():
        return None
    tensors = load_file(str(file))
    if POOL_KEY not in tensors:
        raise mismatch(str(file), POOL_KEY, f"a tensor named '{POOL_KEY}'", sorted(tensors))
    predictions = tensors[POOL_KEY]
    if predictions.ndim != 2 or predictions.shape[1] != d_model:
        raise mismatch(str(file), "predictions.shape", f"[N, {d_model}]", list(predictions.shape))
    if predictions.shape[0] > POOL_SIZE:
        raise CheckpointIncompatible(
            f"{file} holds {predictions.shape[0]} predictions; a reference pool holds at most "
            f"{POOL_SIZE}: keep the last {POOL_SIZE}."
        )
    return predictions.float()


class ReferencePool:
    """A thread-safe ring of the last `size` AR predictions of one source."""

    def __init__(self, d_model: int, size: int = POOL_SIZE, minimum: int = MIN_POOL) -> None:
        self.d_model, self.minimum = d_model, minimum
        self._ring: deque[PoolEntry] = deque(maxlen=size)
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path: Path, d_model: int) -> ReferencePool:
        """A pool seeded with the AR checkpoint's pool file, or empty when it has none."""
        pool = cls(d_model)
        seed = load_pool_file(path, d_model)
        if seed is not None:
            pool.add(seed, [None] * seed.shape[0])
        return pool

    def add(self, predictions: torch.Tensor, prefixes: Sequence[bytes | None]) -> None:
        """Append `[B, d]` predictions, each with the token prefix of the token it explained."""
        rows = predictions.detach().float().cpu()
        with self._lock:
            for row, prefix in zip(rows, prefixes, strict=True):
                self._ring.append(PoolEntry(row.clone(), prefix))

    def against(self, snapshot: bytes | None) -> torch.Tensor:
        """`[N, d]` predictions of the entries not of `snapshot` (None: all); `[0, d]` when fewer
        than `minimum` remain, so that specificity is None rather than a rank among a handful."""
        with self._lock:
            rows = [e.prediction for e in self._ring if not same_snapshot(e.prefix, snapshot)]
        if len(rows) < self.minimum:
            return torch.empty(0, self.d_model)
        return torch.stack(rows)

    def __len__(self) -> int:
        return len(self._ring)
