"""Keras scanner: the model config of ``.h5`` files and ``.keras`` archives.

A Keras model config is JSON naming what to build. Two things in it make
loading run code the file chose:

* Lambda layers carry Python code: marshalled bytecode (tf.keras 2:
  ``function_type: "lambda"``; Keras 3: ``{"class_name": "__lambda__"}``) or a
  reference to a function in some module (``function_type: "function"``, or a
  serialized function object) that loading imports (MG330);
* objects whose ``module`` lies outside Keras, or whose ``registered_name`` or
  ``class_name`` carries a package prefix (``"Pkg>Name"``), are imported and
  instantiated from that package (MG331).

The config is walked iteratively through every dict and list, so nested
Functional/Sequential models, layers inside wrappers (TimeDistributed,
Bidirectional) and objects inside compile/training configs are all seen.

``.h5`` files are opened read-only with h5py from the input stream and only the
root attributes ``model_config`` / ``training_config`` are read, after their
stored size is checked against the header cap; h5py errors on damaged files
become MG332. ``.keras`` archives are zips: the zip scanner passes their
``config.json`` to :func:`scan_keras_config`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelguard.rules.base import Rule
from modelguard.rules.scan import (
    KERAS_CUSTOM_OBJECT,
    KERAS_LAMBDA_LAYER,
    KERAS_MALFORMED,
    KERAS_TORCH_MODULE,
)
from modelguard.scan.context import Input, ScanContext

if TYPE_CHECKING:
    import h5py

CONFIG_ATTRIBUTES = ("model_config", "training_config")
KERAS_MODULES = ("keras", "tensorflow.keras", "tf_keras")
LAMBDA_CLASS = "Lambda"
TORCH_WRAPPER_CLASS = "TorchModuleWrapper"
TF_OP_LAMBDA_CLASS = "TFOpLambda"
# TensorFlow functions a TFOpLambda (tf.keras / tf_keras) may name that touch
# files, run Python or load native code; plain math ops are what it is for.
_TF_UNSAFE_PREFIXES = (
    "io.", "raw_ops.", "compat.v1.io.", "compat.v1.py_func", "py_function",
    "numpy_function", "py_func", "load_library", "load_op_library", "saved_model.",
    "data.experimental.", "summary.", "debugging.", "print", "compat.v1.gfile", "gfile.",
)  # fmt: skip
SERIALIZED_LAMBDA = "__lambda__"
# What h5py raises for a damaged or unexpected file or attribute.
_H5_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, OverflowError)


def scan_hdf5(inp: Input, ctx: ScanContext) -> None:
    """Scan an HDF5 file: plain weights (no findings) or a Keras ``.h5`` model."""
    import h5py

    ctx.set_format("hdf5")
    configs: list[tuple[str, bytes]] = []
    inp.stream.seek(0)
    try:
        with h5py.File(inp.stream, "r") as handle:
            for name in CONFIG_ATTRIBUTES:
                if name in handle.attrs:
                    raw = _read_text_attribute(handle, name, ctx)
                    if raw is not None:
                        configs.append((name, raw))
    except _H5_ERRORS as exc:
        ctx.report(
            KERAS_MALFORMED,
            f"HDF5 file cannot be read ({type(exc).__name__}: {exc})",
            evidence="hdf5-unreadable",
        )
        return
    if any(name == "model_config" for name, _ in configs):
        ctx.set_format("keras-h5")
    for name, raw in configs:
        _scan_config_text(raw, ctx, source=f"attribute {name}", model=name == "model_config")


def scan_keras_config(
    config_bytes: bytes, ctx: ScanContext, *, source: str = "config.json"
) -> None:
    """Scan the JSON model config of a Keras 3 ``.keras`` archive.

    Called by the zip scanner with the bytes of the archive's ``config.json``
    and the context of that member (``ctx.child("config.json")``), so findings
    point at the member. Reports MG330 (Lambda code), MG331 (objects from
    modules outside Keras) and MG332 (malformed or missing config).
    """
    _scan_config_text(config_bytes, ctx, source=source, model=True)


def scan_keras_layer_config(raw: bytes, ctx: ScanContext, *, source: str) -> None:
    """Scan one JSON layer or model config found elsewhere (tf.keras SavedModel metadata)."""
    _scan_config_text(raw, ctx, source=source, model=False)


def scan_keras_archive_config(inp: Input, ctx: ScanContext) -> None:
    """The reading "keras-config": a ``.keras`` archive's ``config.json`` member."""
    source = ctx.location.members[-1] if ctx.location.members else inp.name
    scan_keras_config(inp.read_at(0, inp.size), ctx, source=source)


def _read_text_attribute(handle: h5py.File, name: str, ctx: ScanContext) -> bytes | None:
    """The attribute's bytes if it is one string within the size cap; else report."""
    import h5py

    attr = handle.attrs.get_id(name)
    if attr.get_space().get_simple_extent_npoints() != 1:
        ctx.report(KERAS_MALFORMED, f"attribute {name} is not a single string", evidence=name)
        return None
    # Fixed-size data is sized before reading it. A variable-length string's bytes
    # live in the file's heap, so the file itself bounds them.
    stored = attr.get_storage_size()
    if stored > ctx.limits.max_header_bytes:
        ctx.limit_reached(f"HDF5 attribute {name}", ctx.limits.max_header_bytes)
        return None
    if not isinstance(attr.get_type(), h5py.h5t.TypeStringID):
        ctx.report(KERAS_MALFORMED, f"attribute {name} is not a string", evidence=name)
        return None
    value: Any = handle.attrs[name]
    if hasattr(value, "shape") and value.shape != ():
        value = value.reshape(-1)[0]
    if isinstance(value, str):
        data = value.encode("utf-8", errors="surrogatepass")
    elif isinstance(value, bytes):
        data = value
    else:
        ctx.report(KERAS_MALFORMED, f"attribute {name} is not a string", evidence=name)
        return None
    if len(data) > ctx.limits.max_header_bytes:
        ctx.limit_reached(f"HDF5 attribute {name}", ctx.limits.max_header_bytes)
        return None
    return data


def _scan_config_text(raw: bytes, ctx: ScanContext, *, source: str, model: bool) -> None:
    if len(raw) > ctx.limits.max_header_bytes:
        ctx.limit_reached(f"Keras {source}", ctx.limits.max_header_bytes)
        return
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 (UnicodeDecodeError) and JSON syntax alike.
        ctx.report(
            KERAS_MALFORMED, f"{source} is not valid JSON ({exc})", evidence=f"{source}: json"
        )
        return
    if not isinstance(config, dict):
        ctx.report(
            KERAS_MALFORMED, f"{source} is not a JSON object", evidence=f"{source}: not-object"
        )
        return
    if model and not (isinstance(config.get("class_name"), str) and "config" in config):
        ctx.report(
            KERAS_MALFORMED,
            f"{source} lacks the model's class_name and config",
            evidence=f"{source}: no-model",
        )
    for finding in find_code_references(config):
        ctx.report(finding.rule, f"{source}: {finding.message}", evidence=finding.evidence)
    for path, encoded in torch_modules(config):
        _scan_torch_module(ctx, source, path, encoded)


def torch_modules(config: object) -> Iterator[tuple[str, str]]:
    """(JSON path, base64 text) of every TorchModuleWrapper's pickled module."""
    pending: list[tuple[object, str]] = [(config, "$")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, list):
            pending.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, dict):
            inner = value.get("config")
            if value.get("class_name") == TORCH_WRAPPER_CLASS and isinstance(inner, dict):
                module = inner.get("module")
                if isinstance(module, str):
                    yield f"{path}.config.module", module
            pending.extend((item, f"{path}.{key}") for key, item in value.items())


def _scan_torch_module(ctx: ScanContext, source: str, path: str, encoded: str) -> None:
    """Keras rebuilds the wrapper with torch.load(base64-decoded bytes, weights_only=False)."""
    import base64
    import binascii
    import io

    from modelguard.scan.formats import descend

    try:
        # As Keras decodes it: ASCII, characters outside the alphabet dropped.
        raw = base64.b64decode(encoded.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error) as exc:
        ctx.report(
            KERAS_MALFORMED,
            f"{source}: TorchModuleWrapper at {path} holds no valid base64 ({exc})",
            evidence=f"{path}: base64",
        )
        return
    ctx.report(
        KERAS_TORCH_MODULE,
        f"{source}: TorchModuleWrapper at {path} holds a {len(raw):,}-byte pickled PyTorch "
        "module that loading with safe_mode=False passes to torch.load (scanned below)",
        evidence=path,
    )
    member = Input(stream=io.BytesIO(raw), size=len(raw), name=f"{source}!/{path}")
    descend(ctx, path, member, as_format="torch-module")


@dataclass(frozen=True)
class ConfigFinding:
    """A finding in a config tree before it is tied to a location."""

    rule: Rule
    message: str
    evidence: str


def find_code_references(config: object) -> Iterator[ConfigFinding]:
    """Lambda code (MG330) and objects from outside Keras (MG331) anywhere in ``config``."""
    # (value, JSON path, inside a Lambda layer already reported)
    pending: list[tuple[object, str, bool]] = [(config, "$", False)]
    while pending:
        value, path, in_lambda = pending.pop()
        if isinstance(value, list):
            pending.extend((item, f"{path}[{i}]", in_lambda) for i, item in enumerate(value))
            continue
        if not isinstance(value, dict):
            continue
        class_name = value.get("class_name")
        if class_name == LAMBDA_CLASS and isinstance(value.get("config"), dict):
            yield _lambda_layer(value, path)
            in_lambda = True
        elif class_name == TF_OP_LAMBDA_CLASS and isinstance(value.get("config"), dict):
            yield from _tf_op_lambda(value["config"], path)
        elif class_name == SERIALIZED_LAMBDA and not in_lambda:
            yield ConfigFinding(
                KERAS_LAMBDA_LAYER,
                f"serialized Python lambda (marshalled bytecode) at {path}",
                f"{path}: __lambda__",
            )
        elif isinstance(class_name, str):
            yield from _foreign_object(value, class_name, path)
        pending.extend((item, f"{path}.{key}", in_lambda) for key, item in value.items())


def _tf_op_lambda(config: dict[str, Any], path: str) -> Iterator[ConfigFinding]:
    function = config.get("function")
    if not isinstance(function, str):
        yield ConfigFinding(
            KERAS_LAMBDA_LAYER, f"TFOpLambda at {path} names no function", f"{path}: TFOpLambda"
        )
    elif function.startswith(_TF_UNSAFE_PREFIXES):
        yield ConfigFinding(
            KERAS_LAMBDA_LAYER,
            f"TFOpLambda at {path} calls tf.{function}, which touches files, runs Python "
            "or loads native code",
            f"{path}: TFOpLambda {function}",
        )


def _lambda_layer(layer: dict[str, Any], path: str) -> ConfigFinding:
    config: dict[str, Any] = layer["config"]
    name = config.get("name")
    label = f"Lambda layer {name!r} at {path}" if isinstance(name, str) else f"Lambda at {path}"
    function = config.get("function")
    function_type = config.get("function_type")
    if isinstance(function, dict) and function.get("class_name") == SERIALIZED_LAMBDA:
        style = "holds marshalled Python bytecode (Keras 3 __lambda__)"
    elif function_type == "lambda":
        style = "holds marshalled Python bytecode (tf.keras function_type 'lambda')"
    elif function_type == "function" and isinstance(function, str):
        module = config.get("module")
        style = f"calls {module}.{function} (imported by name on load)"
    elif isinstance(function, dict):
        module, fn = function.get("module"), function.get("config")
        style = f"calls the serialized function {module}.{fn} (imported on load)"
    else:
        style = "wraps Python code"
    return ConfigFinding(KERAS_LAMBDA_LAYER, f"{label} {style}", f"{path}: Lambda")


def _foreign_object(value: dict[str, Any], class_name: str, path: str) -> Iterator[ConfigFinding]:
    module = value.get("module")
    registered = value.get("registered_name")
    if isinstance(module, str) and not is_keras_module(module):
        yield ConfigFinding(
            KERAS_CUSTOM_OBJECT,
            f"{class_name!r} at {path} comes from module {module!r}, outside Keras",
            f"{module}.{class_name}",
        )
        return
    for label, name in (("registered_name", registered), ("class_name", class_name)):
        if isinstance(name, str) and ">" in name:
            package = name.split(">", 1)[0]
            if not is_keras_module(package):
                yield ConfigFinding(
                    KERAS_CUSTOM_OBJECT,
                    f"{label} {name!r} at {path} names a custom object of package {package!r}",
                    name,
                )
                return


def is_keras_module(module: str) -> bool:
    """True for modules of Keras itself (keras, keras.*, tensorflow.keras.*, tf_keras.*)."""
    return any(module == root or module.startswith(root + ".") for root in KERAS_MODULES)
