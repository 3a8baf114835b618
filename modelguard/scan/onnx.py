"""ONNX scanner: the graph without its external data, operator domains, the checker.

The protobuf is parsed with the ``onnx`` library (a well-kept parser with its
own nesting limit), from bytes we read under a size cap, and never with
``onnx.load`` on a path: that would follow external-data references. We then
walk every graph the model holds (main graph, training graphs, model-local
functions, and the subgraphs in If/Loop/Scan attributes) to judge

* external-data locations that are absolute or leave the model's folder (MG320),
* operators from domains outside the ONNX standard (MG321),

and run ``onnx.checker`` (MG322). Given a model with external data the checker
would stat the named files relative to the current folder, so it checks a copy
whose locations point at empty placeholders in a private temporary folder: it
judges the graph and never touches a file the model names. Unparsable protobuf
is MG323. The whole protobuf is held in memory, so ``max_member_bytes`` caps it.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from modelguard.files import leaves_folder
from modelguard.rules.scan import (
    ONNX_CHECKER_FAILED,
    ONNX_CUSTOM_DOMAIN,
    ONNX_EXTERNAL_DATA_ESCAPE,
    ONNX_MALFORMED,
)
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import claimed_suffix

if TYPE_CHECKING:
    from onnx import FunctionProto, GraphProto, ModelProto, NodeProto, TensorProto

STANDARD_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"}
)
_CHECKER_MESSAGE_CHARS = 400


def scan_onnx(inp: Input, ctx: ScanContext) -> bool | None:
    """Scan an ONNX model file (or archive member) without loading external data.

    False (not this reading) for bytes that parse as no ONNX model and are not
    named as one: the ONNX predicate is a two-byte prefix that other protobufs
    (a TensorFlow SavedModel starts with field 1 = 1) share. A file named .onnx
    that does not parse is reported (MG323).
    """
    named_onnx = claimed_suffix(inp.name) == ".onnx"
    if named_onnx:
        ctx.set_format("onnx")
    model = _parse(inp, ctx if named_onnx else ctx.speculative())
    if model is None:
        return None if named_onnx else False
    ctx.set_format("onnx")
    for where, tensor in _tensors(model):
        _check_external_location(inp, ctx, where, tensor)
    _check_domains(model, ctx)
    _run_checker(model, ctx)
    return None


def _parse(inp: Input, ctx: ScanContext) -> ModelProto | None:
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]

    # Protobuf must hold the whole message in memory; the member cap bounds it.
    cap = ctx.limits.max_member_bytes
    if inp.size > cap:
        ctx.limit_reached("ONNX model size", cap, offset=0)
        return None
    data = inp.read_at(0, inp.size)
    try:
        model: ModelProto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        ctx.report(
            ONNX_MALFORMED,
            f"ONNX protobuf cannot be parsed ({type(exc).__name__}: {exc})",
            evidence="protobuf",
        )
        return None
    if not model.HasField("graph"):
        ctx.report(ONNX_MALFORMED, "ONNX model has no graph", evidence="no-graph")
        return None
    return model


# -- walking -----------------------------------------------------------------------------
def _holders(model: ModelProto) -> Iterator[tuple[str, GraphProto | FunctionProto]]:
    """Every graph and function in the model, subgraphs in attributes included."""
    pending: list[tuple[str, GraphProto | FunctionProto]] = [("graph", model.graph)]
    for index, info in enumerate(model.training_info):
        pending.append((f"training_info[{index}].initialization", info.initialization))
        pending.append((f"training_info[{index}].algorithm", info.algorithm))
    for function in model.functions:
        pending.append((f"function {function.domain}:{function.name}", function))
    # Iterative: protobuf's own nesting limit bounds the depth, not our stack.
    while pending:
        where, holder = pending.pop()
        yield where, holder
        node: NodeProto
        for node in holder.node:
            for attribute in node.attribute:
                label = f"{where}/{node.name or node.op_type}.{attribute.name}"
                if attribute.HasField("g"):
                    pending.append((label, attribute.g))
                pending.extend((f"{label}[{i}]", g) for i, g in enumerate(attribute.graphs))


def _tensors(model: ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """Every TensorProto that may carry data: initializers and attribute tensors."""
    from onnx import GraphProto

    for where, holder in _holders(model):
        if isinstance(holder, GraphProto):
            yield from ((where, t) for t in holder.initializer)
            for sparse in holder.sparse_initializer:
                yield where, sparse.values
                yield where, sparse.indices
        node: NodeProto
        for node in holder.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield where, attribute.t
                yield from ((where, t) for t in attribute.tensors)
                sparse_tensors = list(attribute.sparse_tensors)
                if attribute.HasField("sparse_tensor"):
                    sparse_tensors.append(attribute.sparse_tensor)
                for sparse in sparse_tensors:
                    yield where, sparse.values
                    yield where, sparse.indices


# -- external data -----------------------------------------------------------------------
def _check_external_location(inp: Input, ctx: ScanContext, where: str, tensor: TensorProto) -> None:
    from onnx import TensorProto

    if tensor.data_location != TensorProto.EXTERNAL:
        return
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location")
    if location is None:
        return  # nothing to read; the checker reports the missing location
    if isinstance(location, bytes):  # protobuf hands back a string field that is not UTF-8
        location = location.decode("utf-8", "backslashreplace")
        problem: str | None = "is not valid UTF-8, so readers disagree on the file it names"
    else:
        problem = location_problem(location, inp.fs_path.parent if inp.fs_path else None)
    if problem is not None:
        ctx.report(
            ONNX_EXTERNAL_DATA_ESCAPE,
            f"tensor {tensor.name!r} in {where} keeps its data at {location!r}, which {problem}",
            evidence=location,
        )


def location_problem(location: str, model_dir: Path | None) -> str | None:
    """Why an external-data location is unsafe, or None when it stays beside the model.

    The path shape is judged for every input, after normalisation (a ``..`` that
    comes back down stays in the folder); when the model is a file on disk
    (``model_dir`` given), symbolic links are resolved too, so a link that
    points out of the folder is caught.
    """
    if not location or "\x00" in location:
        return "is empty or contains a NUL byte"
    # Judged where it leads, not how it is spelt: "subdir/../w.bin" is "w.bin".
    normal = location.replace("\\", "/")
    if not normal.startswith("/"):
        normal = posixpath.normpath(normal)
    leaves = leaves_folder(normal)
    if leaves is not None:
        return leaves
    if model_dir is not None:
        base = Path(os.path.realpath(model_dir))
        target = Path(os.path.realpath(base / location))
        if target != base and base not in target.parents:
            return f"resolves (through a symbolic link) to {target}, outside the model's folder"
    return None


# -- domains -----------------------------------------------------------------------------
def _check_domains(model: ModelProto, ctx: ScanContext) -> None:
    # A node naming a model-local function runs that function's body (checked
    # below as its own node list), not native code from a custom-op library.
    local = {(f.domain, f.name, f.overload) for f in model.functions}
    for where, holder in _holders(model):
        node: NodeProto
        for node in holder.node:
            if node.domain in STANDARD_DOMAINS:
                continue
            if (node.domain, node.op_type, node.overload) in local:
                continue
            label = node.name or "(unnamed)"
            ctx.report(
                ONNX_CUSTOM_DOMAIN,
                f"node {label!r} in {where} uses operator {node.op_type!r} from "
                f"non-standard domain {node.domain!r}",
                evidence=f"{node.domain}:{node.op_type}",
            )


# -- checker -----------------------------------------------------------------------------
def _run_checker(model: ModelProto, ctx: ScanContext) -> None:
    import onnx

    try:
        if _has_external_data(model):
            _check_detached(model)
        else:
            onnx.checker.check_model(model, full_check=False)
    except (onnx.checker.ValidationError, ValueError) as exc:
        message = " ".join(str(exc).split())
        if len(message) > _CHECKER_MESSAGE_CHARS:
            message = message[: _CHECKER_MESSAGE_CHARS - 3] + "..."
        ctx.report(
            ONNX_CHECKER_FAILED, f"onnx.checker rejects the model: {message}", evidence="checker"
        )


def _has_external_data(model: ModelProto) -> bool:
    from onnx import TensorProto

    return any(t.data_location == TensorProto.EXTERNAL for _, t in _tensors(model))


def _check_detached(model: ModelProto) -> None:
    """Check a copy whose external files are empty placeholders in a private folder.

    Given a ModelProto, the checker stats external locations relative to the
    current folder, and it insists on the bytes a tensor needs unless they are
    external. So the copy points every location at an empty file of ours: the
    checker judges the graph and sees no file of the user's (the locations
    themselves were judged by ``location_problem``).
    """
    import tempfile

    import onnx
    from onnx import TensorProto

    detached = onnx.ModelProto()
    detached.CopyFrom(model)
    placeholders: dict[str, str] = {}
    for _, tensor in _tensors(detached):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = placeholders.setdefault(entry.value, f"data{len(placeholders)}")
    with tempfile.TemporaryDirectory(prefix="modelguard-onnx-") as folder:
        for name in placeholders.values():
            Path(folder, name).touch()
        model_path = Path(folder, "model.onnx")
        model_path.write_bytes(detached.SerializeToString())
        onnx.checker.check_model(str(model_path), full_check=False)
