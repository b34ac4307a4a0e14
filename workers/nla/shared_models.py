"""Causal LMs shared by the engines of one worker process: sources whose target (or AV) is the same
weights on the same device and dtype hold one loaded model, not one each (the demo's two blocks of
SmolLM2 hold one copy, not four).

The same weights means the same files, not equal names: a checkpoint's identity is the file system
identity (device, inode, size, mtime) of every file in its directory that `from_pretrained` may read
for the model, so a directory named twice, a hub snapshot resolved twice, and the demo AV's hard
links to the target's files all match, while a copy, a fine-tune or another revision does not.

Sharing is safe because no caller leaves state on the module: capture and injection hooks are
registered for one call and removed in `finally` (capture.py, inject.py), decoding runs the module's
forward with caches the caller owns (decode.py, refill.py), the AV's prefix cache and the vLLM
generators live on the per-source `Verbalizer` and `TargetModel`, and a worker runs one job at a
time (Celery `-c 1`, the embedded solo worker)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from workers.nla.loading import load_causal_lm
from workers.nla.sidecar import SIDECAR

#: Files of a checkpoint directory that do not make its model's weights: the tokenizer's, the NLA
#: sidecar, the hub's own. Every other file counts, so an unknown file only prevents sharing.
NOT_WEIGHTS = frozenset(
    {
        SIDECAR,
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
        "chat_template.json",
        "README.md",
        "LICENSE",
        ".gitattributes",
    }
)

FileIdentity = tuple[str, int, int, int, int]


@dataclass(frozen=True)
class WeightsKey:
    """What makes two loads the same model: the weight files, the device and the dtype."""

    files: tuple[FileIdentity, ...]
    device: str
    dtype: str


def weights_key(path: Path, device: torch.device | None, dtype: torch.dtype) -> WeightsKey:
    """The identity of the model in checkpoint directory `path` (symlinks followed, as the hub's
    snapshots are links into its blob store) on `device` (None: sharded) in `dtype`."""
    files = []
    for file in sorted(path.iterdir()):
        if file.name in NOT_WEIGHTS or not file.is_file():
            continue
        stat = os.stat(file)
        files.append((file.name, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return WeightsKey(tuple(files), str(device), str(dtype))


class SharedModels:
    """The causal LMs this process holds, one per `WeightsKey`, each with the names of the sources
    that use it; a model no source uses any more is dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[WeightsKey, nn.Module] = {}
        self._users: dict[WeightsKey, set[str]] = {}
        self._loading: dict[WeightsKey, threading.Lock] = {}

    def causal_lm(
        self, path: Path, device: torch.device | None, dtype: torch.dtype, *, user: str
    ) -> nn.Module:
        """The model in `path`, loaded on its first use (one load at a time per key), for `user`."""
        key = weights_key(path, device, dtype)
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                model = self._models.get(key)
            if model is None:
                model = load_causal_lm(path, device, dtype)
            with self._lock:
                self._models.setdefault(key, model)
                self._users.setdefault(key, set()).add(user)
                return self._models[key]

    def keep_only(self, users: Iterable[str]) -> None:
        """Forget every user not in `users`; models left without one are dropped (their memory goes
        when the last engine holding them goes)."""
        kept = set(users)
        with self._lock:
            for key in list(self._users):
                self._users[key] &= kept
                if not self._users[key]:
                    del self._users[key], self._models[key]

    def release(self, user: str) -> None:
        """Forget `user` (a source whose engine failed to load or was dropped)."""
        with self._lock:
            others = {u for users in self._users.values() for u in users} - {user}
        self.keep_only(others)

    def users(self) -> list[set[str]]:
        """The users of each model held, for tests and benchmarks."""
        with self._lock:
            return [set(users) for users in self._users.values()]
