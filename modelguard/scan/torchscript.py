"""TorchScript sources (``code/*.py`` in an archive) that touch files or pickles.

torch.jit.load compiles these sources and runs them: a class's ``__setstate__``
runs while the archive loads, its methods when the model is called. TorchScript
cannot import Python modules, but its builtins include operations on files:
``torch.save`` writes one, ``torch.load`` unpickles one (arbitrary code), and
``torch.from_file`` reads or, shared, creates one; loading an operator library
runs native code. The sources are text, so they are read (under the header
cap) and searched for calls of these names, as TorchScript serialises them:
fully qualified, with the opening parenthesis.
"""

from __future__ import annotations

import re

from modelguard.rules.scan import TORCHSCRIPT_UNSAFE_OPERATION
from modelguard.scan.context import Input, ScanContext

_UNSAFE_CALL = re.compile(
    rb"\b(torch\.(?:save|load|from_file)|(?:torch\.)?ops\.load_library|"
    rb"torch\.classes\.load_library)\s*\("
)
_DEF = re.compile(rb"^\s*def\s+(\w+)\s*\(", re.MULTILINE)
_WHAT = {
    b"torch.save": "writes a file (torch.save)",
    b"torch.load": "unpickles a file (torch.load)",
    b"torch.from_file": "reads or creates a file (torch.from_file)",
}


def scan_torchscript_code(inp: Input, ctx: ScanContext) -> None:
    """The reading "torchscript-code": report each file or pickle operation once."""
    text = inp.read_at(0, min(inp.size, ctx.limits.max_header_bytes))
    defs = [(m.start(), m.group(1).decode("ascii")) for m in _DEF.finditer(text)]
    for match in _UNSAFE_CALL.finditer(text):
        call = match.group(1)
        owner = next((name for at, name in reversed(defs) if at < match.start()), None)
        when = (
            "while the archive loads (__setstate__)"
            if owner == "__setstate__"
            else f"when {owner}() runs"
            if owner
            else "in module code"
        )
        what = _WHAT.get(call, f"loads native code ({call.decode('ascii')})")
        ctx.report(
            TORCHSCRIPT_UNSAFE_OPERATION,
            f"TorchScript source {what} {when}",
            offset=match.start(),
            evidence=f"{call.decode('ascii')}:{owner or '-'}",
        )
