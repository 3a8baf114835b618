"""PyTorch-backed models: plain nn.Module (state_dict + factory), TorchScript and
torch.export programs, behind the :class:`AnalysedModel` protocol.

A layer is named by its weight parameter (``conv3`` owns ``conv3.weight``), which
is the same in a state_dict, a TorchScript archive, an exported program and an
ONNX file exported from them. Its output is captured with a forward hook
(nn.Module), by adding it as an extra graph output (TorchScript, whose modules
refuse hooks), or by inserting a recorder node (torch.export's fx graph).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from modelguard.backdoor.data import shiftable_images
from modelguard.backdoor.model import (
    BoolArray,
    FineTuneSettings,
    FloatArray,
    IntArray,
    LayerInfo,
)
from modelguard.errors import BackdoorAnalysisError

Runner = Callable[[Tensor], tuple[Tensor, Tensor]]

_CONV_OPS = {"aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::_convolution"}
_LINEAR_OPS = {"aten::linear"}


def pick_device(requested: str) -> str:
    """``auto`` means CUDA when torch sees a GPU, else CPU."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise BackdoorAnalysisError("--device cuda was asked for but torch sees no CUDA device")
    return requested


def _kind_of(weight: Tensor) -> str | None:
    if weight.dim() in (3, 4, 5):
        return "conv"
    if weight.dim() == 2:
        return "linear"
    return None


class TorchModel:
    """An nn.Module-like object (nn.Module, RecursiveScriptModule, fx GraphModule)."""

    def __init__(
        self,
        module: nn.Module,
        fmt: str,
        device: str,
        layer_order: list[str] | None = None,
        example_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.format = fmt
        self.device = device
        self.module = _placed(module, device)
        _set_mode(self.module, training=False)
        self._layer_order = layer_order
        self._runners: dict[str, Runner] = {}
        self.example_shape = example_shape

    # -- structure -------------------------------------------------------------------
    def _params(self) -> dict[str, Tensor]:
        return dict(self.module.named_parameters())

    def layers(self) -> list[LayerInfo]:
        params = self._params()
        names = self._layer_order or [
            n.removesuffix(".weight") for n in params if n.endswith(".weight")
        ]
        found: list[LayerInfo] = []
        for name in names:
            weight = params.get(f"{name}.weight")
            if weight is None:
                continue
            kind = _kind_of(weight)
            if kind is not None:
                found.append(LayerInfo(name, kind, int(weight.shape[0])))
        return found

    def _weight_and_bias(self, layer: str) -> tuple[Tensor, Tensor | None]:
        params = self._params()
        weight = params.get(f"{layer}.weight")
        if weight is None:
            choices = ", ".join(info.name for info in self.layers())
            raise BackdoorAnalysisError(f"no layer named {layer!r} (layers: {choices})")
        return weight, params.get(f"{layer}.bias")

    # -- running ---------------------------------------------------------------------
    def _runner(self, layer: str) -> Runner:
        if layer not in self._runners:
            self._weight_and_bias(layer)  # validates the name
            self._runners[layer] = self._make_runner(layer)
        return self._runners[layer]

    def _make_runner(self, layer: str) -> Runner:
        module = self.module
        if isinstance(module, torch.jit.ScriptModule):
            return _script_runner(module, layer)
        if isinstance(module, torch.fx.GraphModule):
            return _fx_runner(module, layer)
        return _hook_runner(module, layer)

    def forward(self, x: Tensor, layer: str | None) -> tuple[Tensor, Tensor | None]:
        if layer is None:
            return self.module(x), None
        return self._runner(layer)(x)

    def run(self, x: FloatArray, layer: str | None) -> tuple[FloatArray, FloatArray | None]:
        with torch.inference_mode():
            logits, act = self.forward(torch.from_numpy(x).to(self.device), layer)
            return (
                logits.float().cpu().numpy(),
                None if act is None else act.float().cpu().numpy(),
            )

    # -- pruning and training ---------------------------------------------------------
    def filter_norms(self, layer: str) -> FloatArray:
        weight, _ = self._weight_and_bias(layer)
        with torch.no_grad():
            norms = weight.detach().flatten(1).float().norm(dim=1)
        return np.asarray(norms.cpu().numpy(), dtype=np.float32)

    def prune(self, layer: str, pruned: BoolArray) -> None:
        weight, bias = self._weight_and_bias(layer)
        mask = torch.from_numpy(np.asarray(pruned, dtype=bool)).to(weight.device)
        with torch.no_grad():
            weight[mask] = 0.0
            if bias is not None:
                bias[mask] = 0.0

    def snapshot(self) -> object:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def restore(self, state: object) -> None:
        assert isinstance(state, dict)
        with torch.no_grad():
            current = self.module.state_dict()
            for key, value in state.items():
                current[key].copy_(value)

    def blend(self, start: object, end: object, share: float) -> None:
        assert isinstance(start, dict) and isinstance(end, dict)
        with torch.no_grad():
            for key, value in self.module.state_dict().items():
                a, b = start[key], end[key]
                value.copy_(torch.lerp(a, b, share) if a.is_floating_point() else b)

    @property
    def can_fine_tune(self) -> bool:
        return True

    def differentiable(self) -> nn.Module:
        for p in self.module.parameters():
            p.requires_grad_(False)
        _set_mode(self.module, training=False)
        return self.module

    def fine_tune(
        self,
        x: FloatArray,
        y: IntArray,
        layer: str | None,
        pruned: BoolArray | None,
        settings: FineTuneSettings,
        teacher: FloatArray | None = None,
    ) -> None:
        """Plain SGD with momentum; pruned channels re-zeroed every step; with
        ``settings.shift_augment``, image batches moved by :func:`shifted`.

        ``teacher`` (logits per row; NaN rows have none) adds a distillation term,
        KL(teacher || model), that anchors those rows' predictions to the teacher's.
        """
        params = [p for p in self.module.parameters() if p.requires_grad or p.is_leaf]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.SGD(params, lr=settings.learning_rate, momentum=0.9)
        generator = torch.Generator().manual_seed(settings.seed)
        xt = torch.from_numpy(x)
        yt = torch.from_numpy(y)
        tt = None if teacher is None else torch.from_numpy(np.asarray(teacher, np.float32))
        keep_zero = layer is not None and pruned is not None and bool(np.any(pruned))
        steps_per_epoch = -(-len(yt) // settings.batch_size)
        total_steps = max(1, settings.epochs * steps_per_epoch)
        step = 0
        _set_mode(self.module, training=True)
        try:
            for _ in range(settings.epochs):
                order = torch.randperm(len(yt), generator=generator)
                for start in range(0, len(yt), settings.batch_size):
                    idx = order[start : start + settings.batch_size]
                    for group in optimizer.param_groups:
                        group["lr"] = _learning_rate(settings, step, total_steps)
                    step += 1
                    optimizer.zero_grad()
                    batch = xt[idx]
                    if settings.shift_augment:
                        batch = shifted(batch, generator)
                    logits = self.module(batch.to(self.device))
                    loss = nn.functional.cross_entropy(logits, yt[idx].to(self.device))
                    if tt is not None:
                        loss = loss + _distillation(logits, tt[idx].to(self.device))
                    loss.backward()  # type: ignore[no-untyped-call]
                    optimizer.step()
                    if keep_zero:
                        assert layer is not None and pruned is not None
                        self.prune(layer, pruned)
        finally:
            _set_mode(self.module, training=False)
            for p in params:
                p.requires_grad_(False)

    # -- writing ---------------------------------------------------------------------
    def save(self, path: Path) -> str:
        # the default layout: what a loader of the written file expects
        module = _laid_out(self.module, "cpu", torch.contiguous_format)
        try:
            if self.format == "torchscript":
                torch.jit.save(module, str(path))
                return "torchscript"
            if self.format == "torch.export":
                return _save_exported(module, path, self.example_shape)
            state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
            if path.suffix == ".safetensors":
                from safetensors.torch import save_file

                save_file(state, str(path))
                return "safetensors"
            torch.save(state, path)
            return "state_dict"
        finally:
            _placed(self.module, self.device)


def _placed(module: nn.Module, device: str) -> nn.Module:
    """``module`` on ``device``; on CPU, with 4-d (convolution) weights channels-last.

    oneDNN runs convolutions and pooling about twice as fast on channels-last
    tensors (the fixture CNN, forward and backward over 336 images on one thread:
    0.12 s -> 0.06 s), and reverse engineering is almost all such passes. Values
    agree to float round-off (1e-8 on the logits), though a repair decision that
    sits on its threshold can flip (README, Speed). CUDA is left as it is.
    """
    if device == "cpu" and any(p.dim() == 4 for p in module.parameters()):
        return _laid_out(module, device, torch.channels_last)
    return module.to(device)


def _laid_out(module: nn.Module, device: str, layout: torch.memory_format) -> nn.Module:
    # nn.Module.to takes memory_format at run time; torch's type stubs omit it
    moved: nn.Module = cast(Any, module).to(device, memory_format=layout)
    return moved


def shifted(batch: Tensor, generator: torch.Generator) -> Tensor:
    """Each image of an NCHW batch moved by -1, 0 or +1 pixel on each axis (edges
    repeated, as in the guard's shifts); anything that is not such an image batch
    is returned as it is."""
    if not shiftable_images(tuple(batch.shape)):
        return batch
    padded = nn.functional.pad(batch, (1, 1, 1, 1), mode="replicate")
    height, width = batch.shape[-2:]
    moves = torch.randint(0, 3, (len(batch), 2), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(moves)]
    )


def _distillation(logits: Tensor, teacher: Tensor) -> Tensor:
    """Mean KL(softmax(teacher) || softmax(logits)) over the rows that have a teacher."""
    rows = ~torch.isnan(teacher).any(dim=1)
    if not bool(rows.any()):
        return logits.sum() * 0.0
    target = torch.log_softmax(teacher[rows], dim=1)
    return nn.functional.kl_div(
        torch.log_softmax(logits[rows], dim=1), target, log_target=True, reduction="batchmean"
    ) * (rows.float().mean())


def _learning_rate(settings: FineTuneSettings, step: int, total_steps: int) -> float:
    if settings.schedule == "constant":
        return settings.learning_rate
    return settings.learning_rate * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def _set_mode(module: nn.Module, training: bool) -> None:
    # An exported program's module has its mode baked in (train()/eval() raise);
    # its graph already computes what the program was exported for.
    if isinstance(module, torch.fx.GraphModule) and not isinstance(module, nn.Sequential):
        if type(module).__name__ != "GraphModule" or hasattr(module, "_exported"):
            return
        try:
            module.train(training)
        except NotImplementedError:
            return
        return
    module.train(training)


def _hook_runner(module: nn.Module, layer: str) -> Runner:
    named = dict(module.named_modules())
    target = named.get(layer)
    if target is None:
        raise BackdoorAnalysisError(f"layer {layer!r} is not a submodule of the model")

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        seen: list[Tensor] = []
        handle = target.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            logits = module(x)
        finally:
            handle.remove()
        if not seen:
            raise BackdoorAnalysisError(f"layer {layer!r} was not called by forward()")
        return logits, seen[-1]

    return run


def _attr_path(value: Any) -> str:
    """The dotted attribute path a TorchScript value was read from (``conv3.weight``)."""
    parts: list[str] = []
    node = value.node()
    while node.kind() == "prim::GetAttr":
        parts.append(node.s("name"))
        value = node.input()
        node = value.node()
    return ".".join(reversed(parts))


def _all_nodes(block: Any) -> Iterator[tuple[Any, bool]]:
    """Every node of a TorchScript graph or block, with whether it is top-level
    (not inside an if or a loop), depth first in program order."""
    for node in block.nodes():
        yield node, True
        for inner in node.blocks():
            for nested, _ in _all_nodes(inner):
                yield nested, False


def _inlined_forward(module: torch.jit.ScriptModule) -> Any:
    """A copy of forward()'s graph with submodule calls inlined (the original stays)."""
    graph = module.forward.graph.copy()  # type: ignore[attr-defined]
    torch._C._jit_pass_inline(graph)
    return graph


def _weight_ops(graph: Any) -> Iterator[tuple[str, Any, bool]]:
    """(weight attribute path, node, top-level?) of every convolution and linear op."""
    for node, top_level in _all_nodes(graph):
        if node.kind() in _CONV_OPS | _LINEAR_OPS:
            yield _attr_path(list(node.inputs())[1]), node, top_level


def script_layer_order(module: torch.jit.ScriptModule) -> list[str]:
    """Layers in the order the inlined forward graph calls them (control flow included)."""
    order: list[str] = []
    for path, _, _ in _weight_ops(_inlined_forward(module)):
        if path.endswith(".weight") and path.removesuffix(".weight") not in order:
            order.append(path.removesuffix(".weight"))
    return order


def _script_runner(module: torch.jit.ScriptModule, layer: str) -> Runner:
    # ScriptModules refuse forward hooks, so build a sibling of forward() whose
    # graph also returns the layer's output: same weights, same ops.
    graph = _inlined_forward(module)
    target = None
    nested = False
    for path, node, top_level in _weight_ops(graph):
        if path == f"{layer}.weight":
            target, nested = node.output(), not top_level
    if target is None:
        raise BackdoorAnalysisError(
            f"layer {layer!r}: no convolution or linear op of the TorchScript graph uses it"
        )
    if nested:
        # A value computed inside an if or a loop cannot be returned from the graph.
        raise BackdoorAnalysisError(
            f"layer {layer!r} runs inside control flow (an if or a loop) of the TorchScript "
            "forward(), so its output cannot be captured; analyse the model's torch.export "
            "or ONNX form, or its state_dict with --factory"
        )
    ret = graph.return_node()
    old = ret.input()
    pair = graph.create("prim::TupleConstruct", [old, target])
    pair.insertBefore(ret)
    pair.output().setType(torch._C.TupleType([old.type(), target.type()]))
    ret.replaceInput(0, pair.output())
    function = torch._C._create_function_from_graph(f"forward_with_{layer}", graph)

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        logits, act = function(module._c, x)
        return logits, act

    return run


def fx_layer_order(module: torch.fx.GraphModule) -> list[str]:
    order: list[str] = []
    for node in module.graph.nodes:
        if node.op == "call_function" and len(node.args) > 1:
            weight = node.args[1]
            if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
                name = str(weight.target)
                if name.endswith(".weight") and name.removesuffix(".weight") not in order:
                    order.append(name.removesuffix(".weight"))
    return order


def _fx_runner(module: torch.fx.GraphModule, layer: str) -> Runner:
    # Copy the program's graph and insert a node after the layer's op that
    # records its output; the copy shares the original's weights.
    graph = copy.deepcopy(module.graph)
    target = None
    for node in graph.nodes:
        if node.op == "call_function" and len(node.args) > 1:
            weight = node.args[1]
            if (
                isinstance(weight, torch.fx.Node)
                and weight.op == "get_attr"
                and weight.target == f"{layer}.weight"
            ):
                target = node
    if target is None:
        raise BackdoorAnalysisError(f"layer {layer!r}: no op of the exported program uses it")
    seen: list[Tensor] = []

    def modelguard_record(value: Tensor) -> Tensor:
        seen.append(value)
        return value

    with graph.inserting_after(target):
        graph.call_function(modelguard_record, (target,))
    recording = torch.fx.GraphModule(module, graph)

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        seen.clear()
        logits = recording(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if not seen:
            raise BackdoorAnalysisError(f"layer {layer!r} was not reached by the program")
        return logits, seen[-1]

    return run


def _save_exported(module: nn.Module, path: Path, example_shape: tuple[int, ...] | None) -> str:
    if example_shape is None:
        raise BackdoorAnalysisError("cannot re-export the program: no example input shape")
    example = torch.zeros((2, *example_shape[1:]))
    # The batch dimension stays dynamic, within whatever range the program allows.
    program = torch.export.export(
        module, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    )
    torch.export.save(program, str(path))
    return "torch.export"
