"""modelguard's record of the files fetch placed, so a later fetch knows what it may replace.

One small JSON file per placed path, named by the sha256 of the path, in
``<user cache>/placed/``: the path, size and sha256 of the bytes placed. fetch
replaces an existing file only when its current bytes are the ones recorded
here (or in the lock file): a file the user edited or put there is never
overwritten without being told to. A lost record only costs a ``force``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from modelguard.files import user_cache_dir, write_atomic


def _record_path(final: Path) -> Path:
    key = hashlib.sha256(os.fsencode(os.path.abspath(final))).hexdigest()
    return user_cache_dir() / "placed" / f"{key}.json"


def placed_sha256(final: Path) -> str | None:
    """The sha256 modelguard placed at ``final`` last, or None (no record, unreadable)."""
    try:
        data = json.loads(_record_path(final).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("path") != os.path.abspath(final):
        return None
    digest = data.get("sha256")
    return digest if isinstance(digest, str) else None


def record(final: Path, sha256: str, size: int) -> None:
    """Remember that ``final`` now holds these bytes; a failure only loses the record."""
    target = _record_path(final)
    body = json.dumps({"path": os.path.abspath(final), "sha256": sha256, "size": size})
    with contextlib.suppress(OSError):
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(target, body.encode("utf-8"))
