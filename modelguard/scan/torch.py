"""PyTorch checkpoints: roles of members in zip checkpoints, and the legacy format.

``torch.save`` (zip, since 1.6) writes ``<prefix>/data.pkl`` plus one raw
storage per tensor under ``<prefix>/data/<key>``; TorchScript adds
``constants.pkl`` (storages under ``constants/``), ``code/*.py`` and debug
pickles. Storages are only ever read as raw bytes by torch, so they are never
read here either: that keeps a multi-GiB checkpoint scan to its directory and
pickles. The legacy format (``_use_new_zipfile_serialization=False``) is five
consecutive pickles followed by raw storage bytes.
"""

from __future__ import annotations

import enum
import posixpath
import re

from modelguard.scan.context import Input, ScanContext
from modelguard.scan.registry import get_scanner

# Bookkeeping members torch writes beside data.pkl; tiny text/number files.
_METADATA_NAMES = frozenset(
    {
        "version",
        "byteorder",
        ".format_version",
        ".storage_alignment",
        ".data/version",
        ".data/serialization_id",
    }
)
_STORAGE_KEY = re.compile(r"[0-9]+")
_PICKLE_SUFFIXES = (".pkl", ".debug_pkl")
# Legacy format: magic number, protocol version, sys_info, the object, storage keys.
LEGACY_PICKLES = 5


class MemberRole(enum.Enum):
    PICKLE = "pickle"  # unpickled by the loader: always scanned as a pickle
    STORAGE = "storage"  # raw tensor bytes: never read
    METADATA = "metadata"  # torch bookkeeping / TorchScript source: not sniffed
    OTHER = "other"  # unknown purpose: sniffed and scanned


def zip_flavour(names: list[str]) -> tuple[str, list[MemberRole]]:
    """Name the zip's flavour and the role of each member (by central directory order)."""
    present = set(names)
    roots = {
        posixpath.dirname(n)
        for n in names
        if posixpath.basename(n) in ("data.pkl", "constants.pkl") and "/" in n
    }
    roles = [_role(name, roots, present) for name in names]
    torchscript = any(
        f"{r}/constants.pkl" in present or any(n.startswith(f"{r}/code/") for n in names)
        for r in roots
    )
    if roots:
        flavour = "torchscript" if torchscript else "pytorch-zip"
    elif names and all(n.endswith(".npy") for n in names):
        flavour = "npz"
    elif "config.json" in present and ("model.weights.h5" in present or "metadata.json" in present):
        flavour = "keras"
    else:
        flavour = "zip"
    return flavour, roles


def _role(name: str, roots: set[str], present: set[str]) -> MemberRole:
    if name.endswith(_PICKLE_SUFFIXES):
        return MemberRole.PICKLE
    root = next((r for r in roots if name.startswith(r + "/")), None)
    if root is None:
        return MemberRole.OTHER
    rest = name[len(root) + 1 :]
    folder, _, key = rest.rpartition("/")
    if (
        folder
        and "/" not in folder
        and _STORAGE_KEY.fullmatch(key)
        and f"{root}/{folder}.pkl" in present
    ):
        return MemberRole.STORAGE
    if rest in _METADATA_NAMES or (rest.startswith("code/") and rest.endswith(".py")):
        return MemberRole.METADATA
    return MemberRole.OTHER


def scan_pickle_member(member: str, inp: Input, ctx: ScanContext) -> None:
    """Scan a member the loader unpickles as a pickle, whatever its first bytes say."""
    if ctx.depth + 1 > ctx.limits.max_archive_depth:
        ctx.limit_reached("archive nesting depth", ctx.limits.max_archive_depth)
        return
    get_scanner("pickle")(inp, ctx.child(member))


def scan_torch_legacy(inp: Input, ctx: ScanContext) -> None:
    """Scan the five pickles of a legacy torch.save file; the storage bytes after them
    are expected and not flagged."""
    from modelguard.scan.pickle import walk_pickle

    ctx.set_format("torch-legacy")
    offset = 0
    for index in range(LEGACY_PICKLES):
        if offset >= inp.size:
            ctx.report(
                "MG105",
                f"legacy torch file ends after {index} of its {LEGACY_PICKLES} pickles",
                offset=offset,
                evidence="legacy-truncated",
            )
            return
        end = walk_pickle(inp.stream, ctx, start=offset, limit=inp.size)
        if end is None or end <= offset:
            return  # the walker reported why it could not go on
        offset = end
