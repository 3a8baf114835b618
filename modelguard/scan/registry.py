"""Format name -> scanner. Archives recurse through ``dispatch``.

Scanners are imported lazily by dotted path so that ``modelguard scan`` starts
fast and a format's heavy library (onnx, h5py) loads only when such a file is met.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from modelguard.rules.scan import ARCHIVE_POLYGLOT, UNSUPPORTED_FORMAT
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.sniff import sniff


class Scanner(Protocol):
    """A format scanner: reads ``inp`` without executing it, reports into ``ctx``."""

    def __call__(self, inp: Input, ctx: ScanContext) -> None: ...


# format name -> "module:function"
SCANNERS: dict[str, str] = {
    "pickle": "modelguard.scan.pickle:scan_pickle_input",
    "torch-legacy": "modelguard.scan.torch:scan_torch_legacy",
    "zip": "modelguard.scan.zip:scan_zip",
    "tar": "modelguard.scan.tar:scan_tar",
    "gzip": "modelguard.scan.compressed:scan_gzip",
    "bzip2": "modelguard.scan.compressed:scan_bzip2",
    "xz": "modelguard.scan.compressed:scan_xz",
    "numpy": "modelguard.scan.numpy:scan_npy",
    "safetensors": "modelguard.scan.safetensors:scan_safetensors",
    "onnx": "modelguard.scan.onnx:scan_onnx",
    "hdf5": "modelguard.scan.keras:scan_hdf5",
}


def get_scanner(fmt: str) -> Scanner:
    module_name, _, func_name = SCANNERS[fmt].partition(":")
    module = importlib.import_module(module_name)
    scanner: Scanner = getattr(module, func_name)
    return scanner


def dispatch(inp: Input, ctx: ScanContext) -> str:
    """Sniff ``inp``, scan it with every matching scanner, return the primary format."""
    formats = sniff(inp)
    if not formats:
        ctx.report(
            UNSUPPORTED_FORMAT, f"{inp.name}: format not recognised; skipped", evidence="unknown"
        )
        return "unknown"
    if len(formats) > 1:
        ctx.report(
            ARCHIVE_POLYGLOT,
            f"{inp.name} reads as {' and as '.join(formats)}; loaders disagree, each was scanned",
            evidence="+".join(formats),
        )
    for fmt in formats:
        inp.stream.seek(0)
        get_scanner(fmt)(inp, ctx)
    return formats[0]
