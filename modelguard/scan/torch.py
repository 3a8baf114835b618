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
import io
import pickletools
import posixpath
import re

from modelguard.findings import Finding
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
# What torch.jit.load's own (C++) unpickler resolves in a TorchScript archive: list
# builders from torch.jit._pickle and TorchScript classes compiled from the
# archive's code/ folder (qualified names under __torch__). It resolves no other
# Python global, so these are not reported as imports there.
_TORCHSCRIPT_BUILDERS = frozenset(
    f"torch.jit._pickle.{name}"
    for name in (
        "build_intlist",
        "build_tensorlist",
        "build_doublelist",
        "build_boollist",
        "build_tensor_from_id",
        "restore_type_tag",
    )
)
_IMPORT_RULES = frozenset({"MG101", "MG102", "MG103"})
# Legacy format: magic number, protocol version, sys_info, the object, storage keys.
LEGACY_PICKLES = 5


class MemberRole(enum.Enum):
    PICKLE = "pickle"  # unpickled by the loader: always scanned as a pickle
    TORCHSCRIPT_PICKLE = "torchscript-pickle"  # unpickled by torch.jit.load's unpickler
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
    # torch.load hands any checkpoint with a constants.pkl to torch.jit.load.
    torchscript = any(f"{r}/constants.pkl" in present for r in roots)
    roles = [_role(name, roots, present, torchscript) for name in names]
    if roots:
        flavour = "torchscript" if torchscript else "pytorch-zip"
    elif names and all(n.endswith(".npy") for n in names):
        flavour = "npz"
    elif "config.json" in present and ("model.weights.h5" in present or "metadata.json" in present):
        flavour = "keras"
    else:
        flavour = "zip"
    return flavour, roles


def _role(name: str, roots: set[str], present: set[str], torchscript: bool) -> MemberRole:
    root = next((r for r in roots if name.startswith(r + "/")), None)
    if name.endswith(_PICKLE_SUFFIXES):
        if torchscript and root is not None:
            return MemberRole.TORCHSCRIPT_PICKLE
        return MemberRole.PICKLE
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


def scan_pickle_member(
    member: str, inp: Input, ctx: ScanContext, *, torchscript: bool = False
) -> None:
    """Scan a member the loader unpickles as a pickle, whatever its first bytes say.

    With ``torchscript`` the imports that torch.jit.load's unpickler resolves
    itself (list builders, the archive's own ``__torch__`` classes) are not
    reported; everything else the walker finds is.
    """
    if ctx.depth + 1 > ctx.limits.max_archive_depth:
        ctx.limit_reached("archive nesting depth", ctx.limits.max_archive_depth)
        return
    if not torchscript:
        get_scanner("pickle")(inp, ctx.child(member))
        return
    isolated = ScanContext(
        location=ctx.location.inside(member),
        limits=ctx.limits,
        allow_globals=ctx.allow_globals,
        depth=ctx.depth + 1,
    )
    get_scanner("pickle")(inp, isolated)
    ctx.findings.extend(f for f in isolated.findings if not _resolved_by_torchscript(f))


def _resolved_by_torchscript(finding: Finding) -> bool:
    evidence = finding.evidence or ""
    return finding.rule_id in _IMPORT_RULES and (
        evidence in _TORCHSCRIPT_BUILDERS or evidence.startswith("__torch__.")
    )


def scan_torch_legacy(inp: Input, ctx: ScanContext) -> None:
    """Scan the five pickles of a legacy torch.save file; the storage bytes after them
    are expected and not flagged."""
    from modelguard.scan.pickle import walk_pickle

    ctx.set_format("torch-legacy")
    offset = 0
    keys_start = 0
    for index in range(LEGACY_PICKLES):
        if offset >= inp.size:
            ctx.report(
                "MG105",
                f"legacy torch file ends after {index} of its {LEGACY_PICKLES} pickles",
                offset=offset,
                evidence="legacy-truncated",
            )
            return
        walked = walk_pickle(inp.stream, ctx, start=offset, limit=inp.size)
        if walked.end is None:
            return  # the walker reported why it could not go on
        keys_start, offset = offset, walked.end
    _check_storage_framing(inp, ctx, keys_start, offset)


# Element sizes of torch dtypes: bool/uint8 .. complex128.
_ELEMENT_SIZES = (1, 2, 4, 8, 16)
_MAX_FRAMINGS = 256  # distinct candidate offsets followed at once
_MAX_KEYS_PICKLE = 64 * 1024 * 1024
_STRING_OPS = frozenset(
    {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BINSTRING",
     "SHORT_BINSTRING", "STRING", "BINGET", "LONG_BINGET", "GET"}
)  # fmt: skip


def _check_storage_framing(inp: Input, ctx: ScanContext, keys_start: int, data_start: int) -> None:
    """After the keys pickle come, per key, an 8-byte element count and the elements.

    Element sizes are not recorded there, so every dtype size is tried; the file
    must end exactly where some choice of sizes ends, else it was truncated or
    has bytes appended that torch.load never reads.
    """
    keys = _count_storage_keys(inp, keys_start, data_start)
    if keys is None:
        return
    ends = {data_start}
    for _ in range(keys):
        following: set[int] = set()
        for at in ends:
            head = inp.read_at(at, 8)
            if len(head) < 8:
                continue
            count = int.from_bytes(head, "little")
            following.update(
                at + 8 + count * size
                for size in _ELEMENT_SIZES
                if at + 8 + count * size <= inp.size
            )
        ends = set(sorted(following)[:_MAX_FRAMINGS])
        if not ends:
            break
    if inp.size not in ends:
        ctx.report(
            "MG205",
            f"legacy torch storage data after offset {data_start:,} does not match its "
            f"{keys} storage keys: the file is truncated or has bytes torch.load ignores",
            offset=data_start,
            evidence="legacy-storage-framing",
        )


def _count_storage_keys(inp: Input, start: int, end: int) -> int | None:
    """Number of strings in the (already scanned) storage keys list, if it is one."""
    if end - start > _MAX_KEYS_PICKLE:
        return None
    # pickletools only parses opcodes; nothing is imported or called.
    ops = pickletools.genops(io.BytesIO(inp.read_at(start, end - start)))
    try:
        return sum(1 for op, _, _ in ops if op.name in _STRING_OPS)
    except (ValueError, EOFError, UnicodeDecodeError):
        return None
