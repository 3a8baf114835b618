"""The readings table: every way a loader could take the bytes, and the one way down.

A model file is dangerous if *any* loader a user might call would run code from
it, and loaders are lenient: ``pickle.load`` starts at byte 0 whatever follows,
``torch.load`` tries a zip (by its first bytes), then a tar, then pickles,
``zipfile`` (Keras, numpy's npz) finds an archive by its end record wherever it
is, HDF5 finds its superblock after a user block of any power-of-two size. So
``FORMATS`` is an ordered table of readings, each with a cheap predicate
modelled on its loader's own code and the scanner that reads it (a dotted
path, so that onnx and h5py load only when such a file is met). ``dispatch``
scans *every* reading whose predicate holds; a file is clean only when all
are, and one read more than one way is a polyglot (MG207). Format is never
chosen from the file name; a name (or a container) that claims a format the
bytes do not parse as is itself a finding (MG005). Readings without a
predicate are reached only when a container knows what its member is
(``descend(..., as_format=...)``).

A scanner may return ``False`` when the bytes turned out not to be its reading
after all (a pickle whose first opcode is valid but which goes nowhere), or a
string naming the reading more precisely (``"torch-legacy"``).

``descend`` is the one entrance to an inner file (archive member, embedded
pickle): it enforces the nesting cap, builds the child context from the
artifact's shared state and either dispatches the member or scans it as the
format its container's loader reads it as.
"""

from __future__ import annotations

import importlib
import re
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from modelguard.findings import Finding
from modelguard.rules.scan import ARCHIVE_POLYGLOT, FORMAT_CLAIM_UNMET, UNSUPPORTED_FORMAT
from modelguard.scan.context import Input, ScanContext

HEAD_BYTES = 4096
ZIP_LOCAL = b"PK\x03\x04"
ZIP_EMPTY = b"PK\x05\x06"
NPY_MAGIC = b"\x93NUMPY"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
# torch.save's legacy (non-zip) format starts with the pickled magic number
# 0x1950a86a20f9469cfc6c, which pickles as LONG1 with these 10 payload bytes
# (protocol 2 and up; protocols 0 and 1 write it as text).
TORCH_LEGACY_MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


class Scanner(Protocol):
    """A format scanner: reads ``inp`` without executing it, reports into ``ctx``.

    Returns ``False`` when the bytes turned out not to be this reading, a string
    to name the reading more precisely, anything else (None) when it holds.
    """

    def __call__(self, inp: Input, ctx: ScanContext) -> object: ...


Detector = Callable[[bytes, Input], bool]


@dataclass(frozen=True)
class Format:
    """One reading: its name, when it applies, and the scanner (``module:function``)."""

    name: str
    detect: Detector | None
    scanner: str

    def scan(self, inp: Input, ctx: ScanContext) -> str | None:
        """Scan ``inp`` as this reading; the name it held under, or None if it did not."""
        module_name, _, func_name = self.scanner.partition(":")
        function: Scanner = getattr(importlib.import_module(module_name), func_name)
        inp.stream.seek(0)
        outcome = function(inp, ctx)
        if outcome is False:
            return None
        return outcome if isinstance(outcome, str) else self.name


# -- predicates, each modelled on its loader --------------------------------------------
def _is_zip_start(head: bytes, inp: Input) -> bool:
    # torch.load and numpy.load take a zip only when it starts the file.
    return head.startswith((ZIP_LOCAL, ZIP_EMPTY))


def _is_zip_behind(head: bytes, inp: Input) -> bool:
    # zipfile (Keras, plain zip consumers) finds an archive by its end record,
    # whatever precedes it. A zip that is the last member of a tar is that
    # member (scanned as such), not a second reading of the tar.
    from modelguard.scan.zip_layout import archive_start

    if _is_zip_start(head, inp):
        return False
    start = archive_start(inp)
    return start is not None and not (_is_tar(head, inp) and _inside_tar_member(inp, start))


def _inside_tar_member(inp: Input, start: int) -> bool:
    inp.stream.seek(0)
    try:
        with tarfile.open(fileobj=inp.stream, mode="r:") as archive:
            for member in archive:
                if member.offset_data <= start < member.offset_data + member.size:
                    return True
    except (tarfile.TarError, EOFError):
        return False
    return False


def _is_7z(head: bytes, inp: Input) -> bool:
    return head.startswith(SEVEN_ZIP_MAGIC)


def _is_npy(head: bytes, inp: Input) -> bool:
    return head.startswith(NPY_MAGIC)


def hdf5_superblock_offsets(size: int) -> list[int]:
    """Where the HDF5 library looks for its signature: 0, then 512, 1024, 2048 ...
    (every power of two from 512) below the end of the file (H5FD_locate_signature)."""
    return [0, *(1 << n for n in range(9, max(9, size.bit_length())))]


def _is_hdf5(head: bytes, inp: Input) -> bool:
    if head.startswith(HDF5_MAGIC):
        return True
    if head.startswith(ZIP_LOCAL) and claimed_suffix(inp.name) not in (".h5", ".hdf5"):
        # A zip that starts the file is opened as HDF5 only by a loader told so by
        # name (Keras's .h5/.hdf5); sparing it log2(size) scattered reads keeps a
        # checkpoint scanned by HTTP ranges to its directory and pickles.
        return False
    return any(inp.read_at(at, 8) == HDF5_MAGIC for at in hdf5_superblock_offsets(inp.size)[1:])


def _is_tar(head: bytes, inp: Input) -> bool:
    # tarfile.open (torch.load's first try for a non-zip) accepts any first header
    # block it can parse with a valid checksum: V7, ustar, GNU and pax alike.
    # TarInfo.frombuf is that parse, on 512 bytes already read.
    if len(head) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(head[: tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _is_gzip(head: bytes, inp: Input) -> bool:
    return head.startswith(GZIP_MAGIC)


def _is_bzip2(head: bytes, inp: Input) -> bool:
    return head.startswith(BZIP2_MAGIC) and len(head) > 3 and head[3:4] in b"123456789"


def _is_xz(head: bytes, inp: Input) -> bool:
    return head.startswith(XZ_MAGIC)


# What joblib.load alone decompresses, by joblib's own magic numbers.
def _is_zlib(head: bytes, inp: Input) -> bool:
    from modelguard.scan.compressed import starts_zlib

    return starts_zlib(head)


def _is_lzma_alone(head: bytes, inp: Input) -> bool:
    return head.startswith(b"\x5d\x00")


def _is_lz4(head: bytes, inp: Input) -> bool:
    return head.startswith(b"\x04\x22\x4d\x18")


def _is_joblib_zfile(head: bytes, inp: Input) -> bool:
    from modelguard.scan.compressed import zfile_data_offset

    return zfile_data_offset(head) is not None


def _is_safetensors(head: bytes, inp: Input) -> bool:
    if len(head) < 10:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= inp.size - 8 and head[8:9] == b"{"


# ModelProto fields are serialised in field order by every exporter, so a model
# starts with ir_version (field 1, varint: tag 0x08) holding a small version.
_ONNX_SECOND_FIELD_TAGS = frozenset(
    {
        0x12,  # producer_name
        0x1A,  # producer_version
        0x22,  # domain
        0x28,  # model_version
        0x32,  # doc_string
        0x3A,  # graph
        0x42,  # opset_import
        0x72,  # metadata_props
        0x7A,  # training_info
        0x82,  # functions (field 25: two-byte tag)
    }
)


def _is_onnx(head: bytes, inp: Input) -> bool:
    return (
        len(head) >= 4
        and head[0] == 0x08
        and 1 <= head[1] <= 30
        and (head[2] in _ONNX_SECOND_FIELD_TAGS)
    )


def _is_tensorflow(head: bytes, inp: Input) -> bool:
    # TensorFlow finds saved_model.pb (and a frozen graph's .pb) by name: a
    # protobuf has no magic number.
    from modelguard.scan.tensorflow import is_tensorflow_pb

    return is_tensorflow_pb(head, inp.name)


def _is_pickle(head: bytes, inp: Input) -> bool:
    # pickle.load (and joblib.load, and torch.load for anything not a zip or a tar)
    # starts unpickling at byte 0 whatever follows, so one valid first opcode is
    # enough; the scanner decides from the whole walk whether it went anywhere.
    from modelguard.scan.pickle_file import starts_pickle

    return starts_pickle(head)


# -- the table -------------------------------------------------------------------------
_SCAN = "modelguard.scan"
FORMATS: tuple[Format, ...] = (
    Format("zip", _is_zip_start, f"{_SCAN}.zip:scan_zip"),
    Format("7z", _is_7z, f"{_SCAN}.sevenzip:scan_7z"),
    Format("numpy", _is_npy, f"{_SCAN}.numpy:scan_npy"),
    Format("hdf5", _is_hdf5, f"{_SCAN}.keras:scan_hdf5"),
    Format("tar", _is_tar, f"{_SCAN}.tar:scan_tar"),
    Format("gzip", _is_gzip, f"{_SCAN}.compressed:scan_gzip"),
    Format("bzip2", _is_bzip2, f"{_SCAN}.compressed:scan_bzip2"),
    Format("xz", _is_xz, f"{_SCAN}.compressed:scan_xz"),
    Format("zlib", _is_zlib, f"{_SCAN}.compressed:scan_zlib"),
    Format("lzma", _is_lzma_alone, f"{_SCAN}.compressed:scan_lzma"),
    Format("lz4", _is_lz4, f"{_SCAN}.compressed:scan_lz4"),
    Format("joblib-zfile", _is_joblib_zfile, f"{_SCAN}.compressed:scan_zfile"),
    Format("safetensors", _is_safetensors, f"{_SCAN}.safetensors:scan_safetensors"),
    Format("tensorflow", _is_tensorflow, f"{_SCAN}.tensorflow:scan_tensorflow"),
    Format("onnx", _is_onnx, f"{_SCAN}.onnx:scan_onnx"),
    Format("pickle", _is_pickle, f"{_SCAN}.pickle_file:scan_pickle_file"),
    Format("zip", _is_zip_behind, f"{_SCAN}.zip:scan_zip"),
    # Members whose container's loader says what they are.
    Format("pickle", None, f"{_SCAN}.pickle:scan_pickle_input"),  # unpickled whatever it is
    Format("keras-config", None, f"{_SCAN}.keras:scan_keras_archive_config"),
    Format("torch-storages", None, f"{_SCAN}.torch_tar:scan_storages_member"),
    Format("torch-tensors", None, f"{_SCAN}.torch_tar:scan_tensors_member"),
    Format("torch-module", None, f"{_SCAN}.pickle_file:scan_torch_load_input"),
    Format("storage-blob", None, f"{_SCAN}.pickle_file:scan_unread_pickle"),
    Format("torchscript-code", None, f"{_SCAN}.torchscript:scan_torchscript_code"),
)
# By name, a container's forced reading first, else the first row of that name.
_BY_NAME = {
    **{f.name: f for f in reversed(FORMATS) if f.detect is not None},
    **{f.name: f for f in FORMATS if f.detect is None},
}


def get(name: str) -> Format:
    """The reading called ``name`` (a KeyError names an unknown one)."""
    return _BY_NAME[name]


def sniff(inp: Input) -> list[str]:
    """Every reading whose predicate holds, in table order (names not repeated)."""
    head = inp.read_at(0, HEAD_BYTES)
    names: list[str] = []
    for fmt in FORMATS:
        if fmt.detect is not None and fmt.name not in names and fmt.detect(head, inp):
            names.append(fmt.name)
    return names


def dispatch(inp: Input, ctx: ScanContext) -> str:
    """Scan ``inp`` with every reading that holds; return the first one's name."""
    held = scan_readings(inp, ctx)
    if not held:
        ctx.report(
            UNSUPPORTED_FORMAT, f"{inp.name}: format not recognised; skipped", evidence="unknown"
        )
        return "unknown"
    if len(held) > 1:
        ctx.report(
            ARCHIVE_POLYGLOT,
            f"{inp.name} reads as {' and as '.join(held)}: loaders disagree on what it is; "
            "each reading was scanned",
            evidence="+".join(held),
        )
    return held[0]


def scan_readings(inp: Input, ctx: ScanContext) -> list[str]:
    """Scan every reading whose predicate holds; the names of those that held, in order.

    Also reports a name that claims a format none of them is (MG005).
    """
    head = inp.read_at(0, HEAD_BYTES)
    held: list[str] = []
    for fmt in FORMATS:
        if fmt.detect is None or not fmt.detect(head, inp):
            continue
        name = fmt.scan(inp, ctx)
        if name is not None and name not in held:
            held.append(name)
    _check_claim(inp, ctx, head, held)
    return held


def descend(
    ctx: ScanContext,
    member: str,
    inp: Input,
    *,
    as_format: str | None = None,
    keep: Callable[[Finding], bool] | None = None,
) -> str:
    """Scan the inner file ``member`` one level below ``ctx``; returns its format name.

    ``as_format`` forces the reading its container's loader takes (a torch
    checkpoint's pickles are unpickled whatever their first bytes say); without
    it the member is dispatched like a file. ``keep`` filters the findings made
    below (TorchScript archives resolve some globals themselves). The nesting
    cap (MG002) ends archive-in-archive chains.
    """
    if ctx.depth + 1 > ctx.limits.max_archive_depth:
        ctx.limit_reached("archive nesting depth", ctx.limits.max_archive_depth)
        return "unknown"
    child = ctx.child(member, keep=keep)
    if as_format is None:
        return dispatch(inp, child)
    return get(as_format).scan(inp, child) or as_format


# -- formats claimed by a name -------------------------------------------------------------
@dataclass(frozen=True)
class _Claim:
    label: str  # what the name says the file is
    readings: frozenset[str]  # any of these satisfies it
    why_not: Callable[[bytes, Input], str]


def _no_safetensors(head: bytes, inp: Input) -> str:
    if len(head) < 8:
        return f"it is {inp.size} bytes, shorter than the 8-byte header length"
    (length,) = struct.unpack("<Q", head[:8])
    if length > inp.size - 8:
        return f"its header length {length:,} runs past the end of the file"
    return "its header does not start with a JSON object"


def _no_hdf5(head: bytes, inp: Input) -> str:
    return "no HDF5 signature at offset 0 or at any user-block offset (512, 1024, ...)"


def _no_torch(head: bytes, inp: Input) -> str:
    return (
        "torch.load reads a zip, a tar or pickles starting with its magic number, "
        "and the bytes are none of these"
    )


def _missing(what: str) -> Callable[[bytes, Input], str]:
    return lambda head, inp: what


# What joblib.load reads: a pickle, plain or in one of its compressors.
_JOBLIB_READINGS = frozenset(
    {"pickle", "zlib", "gzip", "bzip2", "xz", "lzma", "lz4", "joblib-zfile"}
)
_PICKLE_NAMED_READINGS = _JOBLIB_READINGS | {"zip", "tar", "torch-legacy"}
_NOT_PICKLED = "no unpickler gets past its first byte and no compressor it could be in starts it"
_CLAIMS: dict[str, _Claim] = {
    ".safetensors": _Claim("safetensors", frozenset({"safetensors"}), _no_safetensors),
    ".npy": _Claim(
        "a .npy array", frozenset({"numpy"}), _missing("the \\x93NUMPY magic is missing")
    ),
    ".npz": _Claim("an .npz archive", frozenset({"zip"}), _missing("no zip archive is found")),
    ".onnx": _Claim(
        "ONNX", frozenset({"onnx"}), _missing("it does not start with an ONNX ModelProto")
    ),
    ".keras": _Claim(
        "a Keras archive", frozenset({"zip"}), _missing("no zip archive is found (Keras reads one)")
    ),
    ".h5": _Claim("HDF5", frozenset({"hdf5"}), _no_hdf5),
    ".hdf5": _Claim("HDF5", frozenset({"hdf5"}), _no_hdf5),
    ".pt": _Claim("a PyTorch checkpoint", frozenset({"zip", "tar", "torch-legacy"}), _no_torch),
    ".pth": _Claim("a PyTorch checkpoint", frozenset({"zip", "tar", "torch-legacy"}), _no_torch),
    ".joblib": _Claim("a joblib file", _JOBLIB_READINGS, _missing(_NOT_PICKLED)),
    # torch.save and joblib.dump write .pkl files too: their readings meet the claim.
    ".pkl": _Claim("a pickle", _PICKLE_NAMED_READINGS, _missing(_NOT_PICKLED)),
    ".pickle": _Claim("a pickle", _PICKLE_NAMED_READINGS, _missing(_NOT_PICKLED)),
}
# Containers label duplicate and alternative members "name (copy 1 of 2)".
_LABEL_NOTE = re.compile(r" \([^()]*\)$")


def claimed_suffix(name: str) -> str:
    """The lower-case suffix of the last component of a display name ("" if none)."""
    base = _LABEL_NOTE.sub("", name.rsplit("!/", 1)[-1]).rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def _check_claim(inp: Input, ctx: ScanContext, head: bytes, held: list[str]) -> None:
    claim = _CLAIMS.get(claimed_suffix(inp.name))
    if claim is None or claim.readings.intersection(held):
        return
    ctx.report(
        FORMAT_CLAIM_UNMET,
        f"{inp.name} is named as {claim.label} but its bytes do not parse as one: "
        f"{claim.why_not(head, inp)}",
        evidence=f"claim:{claim.label}",
    )
