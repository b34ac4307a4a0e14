"""Shared set-up of the benchmarks: the demo engine and a timer that reports the best of n runs."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def machine() -> str:
    threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads"


def best_of(
    runs: int, fn: Callable[[], T], reset: Callable[[], None] | None = None
) -> tuple[float, T]:
    """The fastest wall time of `runs` calls (seconds) and the last result; `reset` runs untimed."""
    best, result = float("inf"), None
    for _ in range(runs):
        if reset:
            reset()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result  # type: ignore[return-value]


def demo_engine():  # type: ignore[no-untyped-def]
    from workers.nla.demo import build_demo
    from workers.nla.engine import NlaEngine
    from workers.source_config import demo_source

    data_dir = Path(os.environ.get("NLAWEB_DATA_DIR", REPO / "var"))
    build_demo(data_dir, progress=lambda line: print("  " + line))
    return NlaEngine.load(demo_source(data_dir), device=os.environ.get("NLA_DEVICE") or None)
