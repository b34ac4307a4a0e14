"""Which checkpoint revision a source's target, AV and AR are: the `@revision` of a hub id, or a
fingerprint of a local directory (file names and sizes, and the bytes of its small config files), so
an export or a share records what produced its explanations and an import can refuse a mismatch."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from workers.source_config import SourceConfig

#: Files up to this size are hashed whole (configs, sidecars, tokenizers); larger ones (weights) by
#: name and size only, so the web process never reads gigabytes.
_HASHED_WHOLE_BYTES = 4 * 1024 * 1024
_DEFAULT_HUB_REVISION = "main"
MISSING = "missing"


def checkpoint_revision(ref: str) -> str:
    """`sha256:<16 hex>` for a local directory, the revision of a hub id (`main` when unpinned), or
    `missing` for a local path that is not there (the rules of workers.nla.loading)."""
    local = Path(ref).expanduser()
    if local.is_dir():
        return f"sha256:{_fingerprint(local.resolve())[:16]}"
    repo_id, _, revision = ref.partition("@")
    if local.is_absolute() or repo_id.count("/") != 1:
        return MISSING
    return revision or _DEFAULT_HUB_REVISION


def source_revisions(source: SourceConfig) -> dict[str, str]:
    return {role: checkpoint_revision(getattr(source, role)) for role in ("target", "av", "ar")}


@cache
def _fingerprint(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(directory).as_posix()}\0{size}\0".encode())
        if size <= _HASHED_WHOLE_BYTES:
            digest.update(path.read_bytes())
    return digest.hexdigest()
