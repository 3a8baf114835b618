"""Open a model for analysis without running untrusted pickles.

- TorchScript archives (``torch.jit.load``: TorchScript's own restricted
  unpickler and interpreter; no Python code from the file runs).
- ``torch.export`` programs (.pt2, ``torch.export.load``: JSON + tensors).
- state_dicts: ``.safetensors``, or ``.pt``/``.pth``/``.bin`` through
  ``torch.load(weights_only=True)``; the architecture comes from the user's own
  code as ``module:factory`` (or ``path/to/file.py:factory``).
- ONNX through onnxruntime.
- A pickled full module is refused, unless the caller trusts it explicitly AND
  the static scan of the file is clean.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelguard.backdoor.model import AnalysedModel
from modelguard.errors import BackdoorAnalysisError, MissingExtra, UsageError
from modelguard.findings import Severity

STATE_DICT_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingExtra("backdoor analysis", "backdoor", module)


def detect_format(path: Path) -> str:
    """``onnx``, ``safetensors``, ``torchscript``, ``torch.export`` or ``torch-pickle``."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".safetensors":
        return "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("serialized_exported_program.json") for n in names) or any(
            "/models/" in n and n.endswith(".json") for n in names
        ):
            return "torch.export"
        if suffix == ".pt2":
            return "torch.export"
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        return "torch-pickle"
    if suffix == ".pt2":
        return "torch.export"
    return "torch-pickle"


def load_factory(spec: str) -> Callable[[], Any]:
    """Resolve ``module:function`` or ``file.py:function`` from the user's own code."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--factory {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise UsageError(f"--factory {spec!r}: no file {file}")
            loader_spec = importlib.util.spec_from_file_location(file.stem, file)
            if loader_spec is None or loader_spec.loader is None:
                raise UsageError(f"--factory {spec!r}: cannot import {file}")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            # Like ``python -m``: the user's own modules in the working folder import.
            cwd = str(Path.cwd())
            if cwd not in sys.path:
                sys.path.insert(0, cwd)
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--factory {spec!r}: cannot import {module_name}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"--factory {spec!r}: {module_name} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]


def load_model(
    path: Path,
    *,
    device: str,
    factory: str | None = None,
    trust_pickle: bool = False,
    fail_on: Severity | None = Severity.HIGH,
) -> AnalysedModel:
    """Open ``path`` as an :class:`AnalysedModel` on ``device`` (``auto``/``cpu``/``cuda``)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such model file")
    fmt = detect_format(path)
    if fmt == "onnx":
        _require("onnxruntime")
        from modelguard.backdoor.onnx_model import OnnxModel

        return OnnxModel.load(path, device)
    _require("torch")
    from modelguard.backdoor import torch_model as tm

    dev = tm.pick_device(device)
    if fmt == "torchscript":
        return _load_torchscript(path, dev)
    if fmt == "torch.export":
        return _load_exported(path, dev)
    if fmt == "safetensors":
        _require("safetensors")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise BackdoorAnalysisError(f"{path}: not a readable safetensors file: {exc}") from exc
        return _from_state_dict(path, state, factory, dev)
    return _load_torch_pickle(path, dev, factory, trust_pickle, fail_on)


def _load_torchscript(path: Path, device: str) -> AnalysedModel:
    import torch

    from modelguard.backdoor import torch_model as tm

    try:
        module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    except RuntimeError as exc:
        raise BackdoorAnalysisError(f"{path}: not a loadable TorchScript archive: {exc}") from exc
    return tm.TorchModel(module, "torchscript", device, tm.script_layer_order(module))


def _load_exported(path: Path, device: str) -> AnalysedModel:
    import torch

    from modelguard.backdoor import torch_model as tm

    try:
        program = torch.export.load(str(path))
    except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise BackdoorAnalysisError(f"{path}: not a loadable torch.export program: {exc}") from exc
    module = program.module()
    assert isinstance(module, torch.fx.GraphModule)
    shape = None
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user_inputs = program.graph_signature.user_inputs
    for node in placeholders:
        if node.name in user_inputs and "val" in node.meta:
            shape = tuple(int(d) if isinstance(d, int) else 2 for d in node.meta["val"].shape)
    return tm.TorchModel(module, "torch.export", device, tm.fx_layer_order(module), shape)


def _from_state_dict(
    path: Path, state: dict[str, Any], factory: str | None, device: str
) -> AnalysedModel:
    import torch

    from modelguard.backdoor import torch_model as tm

    if factory is None:
        raise UsageError(
            f"{path} holds only weights (a state_dict); give the architecture from your "
            "own code with --factory MODULE:FUNCTION (a function returning the nn.Module)"
        )
    module = load_factory(factory)()
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"--factory {factory!r} returned {type(module).__name__}, not nn.Module")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise BackdoorAnalysisError(
            f"{path}: weights do not fit the architecture from {factory}: {exc}"
        ) from exc
    fmt = "safetensors" if path.suffix.lower() == ".safetensors" else "state_dict"
    return tm.TorchModel(module, fmt, device)


def _load_torch_pickle(
    path: Path,
    device: str,
    factory: str | None,
    trust_pickle: bool,
    fail_on: Severity | None,
) -> AnalysedModel:
    import pickle

    import torch

    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise BackdoorAnalysisError(
                f"{path} is a pickled Python object (likely a full nn.Module), not plain "
                "weights; loading it would run code the file names, so it is refused. "
                "Provide a state_dict (.safetensors, or torch.save(model.state_dict())) "
                "with --factory MODULE:FUNCTION, a TorchScript archive, a torch.export "
                "program (.pt2) or ONNX instead; or, if you trust the file, pass "
                "--trust-pickle (only honoured when the static scan finds nothing)."
            ) from exc
        loaded = None  # a full pickle the user trusts: loaded below, outside this handler
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise BackdoorAnalysisError(f"{path}: not a loadable PyTorch file: {exc}") from exc
    if loaded is None:
        return _load_trusted_module(path, device, fail_on)
    if (
        isinstance(loaded, dict)
        and "state_dict" in loaded
        and isinstance(loaded["state_dict"], dict)
    ):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise BackdoorAnalysisError(
            f"{path}: expected a state_dict (names to tensors), found {type(loaded).__name__}"
        )
    return _from_state_dict(path, loaded, factory, device)


def _load_trusted_module(path: Path, device: str, fail_on: Severity | None) -> AnalysedModel:
    import pickle

    import torch

    from modelguard.backdoor import torch_model as tm

    _require_clean_scan(path, fail_on)
    try:
        loaded = torch.load(path, map_location=device, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, ImportError, EOFError) as err:
        raise BackdoorAnalysisError(f"{path}: cannot load the pickled module: {err}") from err
    if not isinstance(loaded, torch.nn.Module):
        raise BackdoorAnalysisError(
            f"{path}: the pickle holds a {type(loaded).__name__}, not an nn.Module"
        )
    return tm.TorchModel(loaded, "torch-pickle", device)


def _require_clean_scan(path: Path, fail_on: Severity | None) -> None:
    """--trust-pickle is honoured only when the static scanner recognised the file
    and found nothing at or above the fail-on threshold."""
    from modelguard.api import scan

    report = scan([str(path)])
    threshold = fail_on if fail_on is not None else Severity.HIGH
    worst = [f for f in report.findings if f.severity >= threshold]
    recognised = any(a.format not in ("unknown", "") for a in report.artifacts)
    if report.errors or worst or not recognised:
        details = "; ".join(f"{f.rule_id} {f.message}" for f in worst[:3]) or (
            "the static scanner could not inspect it"
        )
        raise BackdoorAnalysisError(
            f"{path}: --trust-pickle refused: the static scan is not clean ({details})"
        )
