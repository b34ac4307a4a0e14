"""Memory of a worker serving both demo sources (SmolLM2-135M-Instruct at blocks 8 and 5): every
source loading its own target and AV (as the registry did before shared_models.py) vs the registry
as the worker builds it now. Each side runs in a fresh process; both print the process's resident
memory after loading, the distinct model weights held, and a digest of their outputs (captures at
both blocks, greedy explanations, a reply), which must be equal.

Run: `.venv/bin/python benchmarks/shared_target.py` (builds the demo NLA first if it is missing).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIDES = ("per-source", "shared")
TURNS = [("user", "My cat loves to sleep on the warm windowsill in the afternoon.")]


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM, RssAnon, RssFile)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def pss_kib() -> int:
    """Proportional set size: a page mapped twice (two loads of one mmapped file) counts once."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise KeyError("Pss")


def memory() -> dict[str, float]:
    fields = {f: status_kib(f) for f in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}
    return {f: round(v / 1024, 1) for f, v in {**fields, "Pss": pss_kib()}.items()}


def weight_bytes(engines: list) -> tuple[int, int]:  # type: ignore[type-arg]
    """(distinct causal LMs and AR trunks held, bytes of their distinct parameter storage)."""
    modules = {
        id(m): m
        for e in engines
        for m in (e.target.model, e.verbalizer.model, e.reconstructor.model)
    }
    storages = {
        p.untyped_storage().data_ptr(): p.untyped_storage().nbytes()
        for m in modules.values()
        for p in m.parameters()
    }
    return len(modules), sum(storages.values())


def outputs_digest(engines: list) -> str:  # type: ignore[type-arg]
    from workers.nla.types import ChatTurn, GenerationSettings, NoProgress

    turns = [ChatTurn(role, text) for role, text in TURNS]
    greedy = GenerationSettings(temperature=0.0, max_new_tokens=12)
    digest = hashlib.sha256()
    for engine in engines:
        tokens = engine.tokenize(turns).token_ids
        positions = [len(tokens) - 4, len(tokens) - 2]
        digest.update(engine.capture(tokens, positions).numpy().tobytes())
        for result in engine.explain(tokens, positions, greedy, NoProgress()):
            digest.update(f"{result.text}|{result.fidelity}".encode())
        digest.update(engine.reply(turns, greedy, lambda _t: None).text.encode())
    return digest.hexdigest()[:16]


def run_side(side: str, data_dir: Path) -> dict[str, object]:
    """Load both demo sources as `side` says, in this process."""
    import torch

    from workers.nla import registry
    from workers.nla.engine import NlaEngine
    from workers.source_config import load_sources

    sources = load_sources(None, data_dir)
    device, dtype = os.environ.get("NLA_DEVICE") or None, os.environ.get("NLA_DTYPE") or None
    torch.zeros(1)
    before = memory()
    if side == "shared":  # as workers/tasks.py configures a worker
        registry.configure(sources, device=device, dtype=dtype)
        engines = [registry.get_engine(s.id) for s in sources]
    else:
        engines = [NlaEngine.load(s, device=device, dtype=dtype) for s in sources]
    loaded = memory()
    models, nbytes = weight_bytes(engines)
    digest = outputs_digest(engines)  # touches every weight page the outputs need
    return {
        "side": side,
        "sources": [s.id for s in sources],
        "before_load": before,
        "after_load": loaded,
        "after_outputs": memory(),
        "models": models,
        "weights_mib": round(nbytes / 2**20, 1),
        "target_shared": engines[0].target.model is engines[1].target.model,
        "av_is_target": all(e.verbalizer.model is e.target.model for e in engines),
        "digest": digest,
    }


def main() -> None:
    from benchmarks._common import REPO, machine
    from workers.nla.demo import build_demo

    data_dir = Path(os.environ.get("NLAWEB_DATA_DIR", REPO / "var"))
    build_demo(data_dir, progress=lambda line: print("  " + line))
    placement = (
        f"NLA_DEVICE={os.environ.get('NLA_DEVICE', '')} NLA_DTYPE={os.environ.get('NLA_DTYPE', '')}"
    )
    print(f"machine: {machine()}; demo under {data_dir}; {placement}")
    results = []
    for side in SIDES:
        out = subprocess.run(
            [sys.executable, __file__, side, str(data_dir)],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'':32}" + "".join(f"{r['side']:>14}" for r in results))
    rows = [
        ("VmRSS before loading (MiB)", lambda r: r["before_load"]["VmRSS"]),
        ("VmRSS after loading (MiB)", lambda r: r["after_load"]["VmRSS"]),
        ("  of which anonymous (MiB)", lambda r: r["after_load"]["RssAnon"]),
        ("  of which file-backed (MiB)", lambda r: r["after_load"]["RssFile"]),
        ("VmRSS after the outputs (MiB)", lambda r: r["after_outputs"]["VmRSS"]),
        ("  of which anonymous (MiB)", lambda r: r["after_outputs"]["RssAnon"]),
        ("  of which file-backed (MiB)", lambda r: r["after_outputs"]["RssFile"]),
        ("Pss after the outputs (MiB)", lambda r: r["after_outputs"]["Pss"]),
        ("peak VmHWM (MiB)", lambda r: r["after_outputs"]["VmHWM"]),
        ("models held (LMs + AR trunks)", lambda r: r["models"]),
        ("distinct weights (MiB)", lambda r: r["weights_mib"]),
        ("target shared by the sources", lambda r: r["target_shared"]),
        ("each AV is its target's model", lambda r: r["av_is_target"]),
        ("outputs digest", lambda r: r["digest"]),
    ]
    for name, value in rows:
        print(f"{name:32}" + "".join(f"{value(r)!s:>14}" for r in results))
    rss, pss = (
        results[0]["after_outputs"][f] - results[1]["after_outputs"][f]  # type: ignore[index]
        for f in ("VmRSS", "Pss")
    )
    same = results[0]["digest"] == results[1]["digest"]
    print(
        f"saved after the outputs: VmRSS {rss:.1f} MiB, Pss {pss:.1f} MiB; outputs identical: {same}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(json.dumps(run_side(sys.argv[1], Path(sys.argv[2]))))
    else:
        main()
