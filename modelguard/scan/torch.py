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
import itertools
import posixpath
import re

from modelguard.findings import Finding
from modelguard.rules.scan import (
    ARCHIVE_MALFORMED,
    PICKLE_DANGEROUS_IMPORT,
    PICKLE_MALFORMED,
    PICKLE_UNKNOWN_CALL,
    PICKLE_UNKNOWN_IMPORT,
)
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.pickle.walker import GlobalName, PickledValue, PickleStream

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
_IMPORT_RULES = frozenset(
    r.id for r in (PICKLE_DANGEROUS_IMPORT, PICKLE_UNKNOWN_IMPORT, PICKLE_UNKNOWN_CALL)
)
# Legacy format: magic number, protocol version, sys_info, the object, storage keys.
LEGACY_PICKLES = 5


class MemberRole(enum.Enum):
    PICKLE = "pickle"  # unpickled by the loader: always scanned as a pickle
    TORCHSCRIPT_PICKLE = "torchscript-pickle"  # unpickled by torch.jit.load's unpickler
    TORCHSCRIPT_CODE = "torchscript-code"  # code/*.py compiled and run by torch.jit.load
    STORAGE = "storage"  # raw tensor bytes: read by torch as bytes, never unpickled
    METADATA = "metadata"  # torch bookkeeping: not sniffed
    KERAS_CONFIG = "keras-config"  # a .keras archive's config.json: scanned as a model config
    OTHER = "other"  # unknown purpose: sniffed and scanned


def torch_root(names: list[str]) -> str | None:
    """The folder PyTorch's reader looks in: the first member's, up to its first '/'."""
    if not names or "/" not in names[0]:
        return None
    return names[0].split("/", 1)[0]


def zip_flavour(names: list[str], *, keras_name: bool = False) -> tuple[str, list[MemberRole]]:
    """Name the zip's flavour and the role of each member (by central directory order).

    Names are matched as each loader matches them: PyTorch's reader (miniz,
    flags 0) case-insensitively under the first member's folder; TorchScript is
    told by an exact ``constants.pkl`` there (``_is_torchscript_zip``); Keras
    reads ``config.json`` from any zip it is handed as ``.keras`` (``keras_name``).
    """
    present = {n.lower() for n in names}
    roots = {
        posixpath.dirname(n).lower()
        for n in names
        if posixpath.basename(n).lower() in ("data.pkl", "constants.pkl") and "/" in n
    }
    first = torch_root(names)
    torchscript = first is not None and f"{first}/constants.pkl" in names
    roles = [_role(name, roots, present, torchscript) for name in names]
    keras = "config.json" in present and (
        keras_name or "model.weights.h5" in present or "metadata.json" in present
    )
    if roots and first is not None and first.lower() in roots:
        flavour = "torchscript" if torchscript else "pytorch-zip"
    elif keras:
        flavour = "keras"
    elif names and all(n.lower().endswith(".npy") for n in names):
        flavour = "npz"
    elif roots:
        flavour = "pytorch-zip"
    else:
        flavour = "zip"
    if keras:
        special = {"config.json": MemberRole.KERAS_CONFIG, "metadata.json": MemberRole.METADATA}
        roles = [special.get(name, role) for name, role in zip(names, roles, strict=True)]
    return flavour, roles


def _role(name: str, roots: set[str], present: set[str], torchscript: bool) -> MemberRole:
    lower = name.lower()
    root = next((r for r in roots if lower.startswith(r + "/")), None)
    if lower.endswith(_PICKLE_SUFFIXES):
        if torchscript and root is not None:
            return MemberRole.TORCHSCRIPT_PICKLE
        return MemberRole.PICKLE
    if root is None:
        return MemberRole.OTHER
    rest = lower[len(root) + 1 :]
    folder, _, key = rest.rpartition("/")
    if (
        folder
        and "/" not in folder
        and _STORAGE_KEY.fullmatch(key)
        and f"{root}/{folder}.pkl" in present
    ):
        return MemberRole.STORAGE
    if rest.startswith("code/") and rest.endswith(".py"):
        return MemberRole.TORCHSCRIPT_CODE
    if rest in _METADATA_NAMES:
        return MemberRole.METADATA
    return MemberRole.OTHER


def kept_by_torchscript(finding: Finding) -> bool:
    """False for the imports torch.jit.load's unpickler resolves itself (list
    builders, the archive's own ``__torch__`` classes): in a TorchScript pickle
    they are not reported; everything else the walker finds is."""
    evidence = finding.evidence or ""
    return not (
        finding.rule_id in _IMPORT_RULES
        and (evidence in _TORCHSCRIPT_BUILDERS or evidence.startswith("__torch__."))
    )


def scan_torch_legacy(inp: Input, ctx: ScanContext) -> None:
    """Scan the five pickles of a legacy torch.save file; the storage bytes after them
    are expected and not flagged."""
    from modelguard.scan.pickle import walk_pickle

    ctx.set_format("torch-legacy")
    offset = 0
    walks: list[PickleStream] = []
    for index in range(LEGACY_PICKLES):
        if offset >= inp.size:
            ctx.report(
                PICKLE_MALFORMED,
                f"legacy torch file ends after {index} of its {LEGACY_PICKLES} pickles",
                offset=offset,
                evidence="legacy-truncated",
            )
            return
        # The object and key pickles say how the storage bytes after them are framed.
        framing = index >= LEGACY_PICKLES - 2
        walked = walk_pickle(inp.stream, ctx, start=offset, limit=inp.size, values=framing)
        if walked.end is None:
            return  # the walker reported why it could not go on
        walks.append(walked)
        offset = walked.end
    _check_storage_framing(
        inp, ctx, objects=walks[3].values, keys=walks[4].values, data_start=offset
    )


# Bytes per element of the storage classes torch.save names in persistent ids.
STORAGE_ELEMENT_SIZES = {
    **dict.fromkeys(
        ("ByteStorage", "CharStorage", "BoolStorage", "QInt8Storage", "QUInt8Storage",
         "QUInt4x2Storage", "QUInt2x4Storage", "Float8_e4m3fnStorage", "Float8_e5m2Storage"),
        1,
    ),
    **dict.fromkeys(("HalfStorage", "BFloat16Storage", "ShortStorage"), 2),
    **dict.fromkeys(("FloatStorage", "IntStorage", "QInt32Storage"), 4),
    **dict.fromkeys(("DoubleStorage", "LongStorage", "ComplexFloatStorage"), 8),
    "ComplexDoubleStorage": 16,
}  # fmt: skip
_ANY_SIZE = (1, 2, 4, 8, 16)  # when a key's storage class is not known
_MAX_FRAMINGS = 256  # distinct candidate offsets followed at once


def _check_storage_framing(
    inp: Input,
    ctx: ScanContext,
    *,
    objects: list[PickledValue] | None,
    keys: list[PickledValue] | None,
    data_start: int,
) -> None:
    """After the keys pickle come, per key, an 8-byte element count and the elements.

    The element size of each key comes from the object pickle's persistent ids
    (``('storage', torch.FloatStorage, key, location, numel)``); where it cannot
    be known every dtype size is tried. The file must end exactly where the
    storages end, else it was truncated or has bytes torch.load never reads.
    """
    names = [v for v in keys or () if type(v) is str]
    if not names or objects is None:
        return  # not enough known to follow the framing
    sizes = storage_sizes(objects)
    ends = {data_start}
    for key in names:
        choices = (sizes[key],) if key in sizes else _ANY_SIZE
        following: set[int] = set()
        for at in ends:
            head = inp.read_at(at, 8)
            if len(head) < 8:
                continue
            count = int.from_bytes(head, "little")
            following.update(
                at + 8 + count * size for size in choices if at + 8 + count * size <= inp.size
            )
        ends = set(sorted(following)[:_MAX_FRAMINGS])
        if not ends:
            break
    if inp.size not in ends:
        ctx.report(
            ARCHIVE_MALFORMED,
            f"legacy torch storage data after offset {data_start:,} does not match its "
            f"{len(names)} storage keys: the file is truncated or has bytes torch.load ignores",
            offset=data_start,
            evidence="legacy-storage-framing",
        )


def storage_sizes(values: list[PickledValue]) -> dict[str, int]:
    """Key -> element size, from each storage class global followed by its key."""
    sizes: dict[str, int] = {}
    for value, following in itertools.pairwise(values):
        if (
            isinstance(value, GlobalName)
            and isinstance(following, str)
            and not isinstance(following, GlobalName)
        ):
            module, _, cls = value.rpartition(".")
            if module == "torch" and cls in STORAGE_ELEMENT_SIZES:
                sizes.setdefault(following, STORAGE_ELEMENT_SIZES[cls])
    return sizes
