"""An ONNX graph evaluated with torch ops, so gradients flow through it.

Trigger reverse engineering, the margin search and every repair need gradients,
which onnxruntime does not give. The maintained converter, onnx2torch, requires
torchvision (for two detection ops), which would pull a torch build other than
the pinned one; so this module evaluates the graph itself, for the small op set
image classifiers exported from PyTorch use. Any other op is refused with its
name: never guessed. The initializers become the module's parameters, named as
in the file, so a repaired model is written back by replacing them in the same
graph (nothing is re-exported). Nothing in the file is executed: the graph is
data, mapped onto a fixed table of torch functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, nn

from modelguard.errors import BackdoorAnalysisError


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads(attrs: dict[str, Any], dims: int) -> tuple[list[int], bool]:
    """ONNX pads (begin..., end...) as torch's symmetric padding, or asymmetric."""
    pads = list(attrs.get("pads", [0] * 2 * dims))
    begin, end = pads[:dims], pads[dims:]
    return begin, begin != end


def _conv(x: Tensor, w: Tensor, b: Tensor | None, attrs: dict[str, Any]) -> Tensor:
    dims = w.dim() - 2
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise BackdoorAnalysisError("ONNX Conv with auto_pad is not supported")
    begin, asymmetric = _pads(attrs, dims)
    if asymmetric:
        raise BackdoorAnalysisError("ONNX Conv with asymmetric pads is not supported")
    conv = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}[dims]
    return conv(
        x,
        w,
        b,
        stride=list(attrs.get("strides", [1] * dims)),
        padding=begin,
        dilation=list(attrs.get("dilations", [1] * dims)),
        groups=int(attrs.get("group", 1)),
    )


def _max_pool(x: Tensor, attrs: dict[str, Any]) -> Tensor:
    kernel = list(attrs["kernel_shape"])
    begin, asymmetric = _pads(attrs, len(kernel))
    if asymmetric:
        raise BackdoorAnalysisError("ONNX MaxPool with asymmetric pads is not supported")
    pool = {1: nn.functional.max_pool1d, 2: nn.functional.max_pool2d}[len(kernel)]
    out: Tensor = pool(
        x,
        kernel,
        stride=list(attrs.get("strides", kernel)),
        padding=begin,
        dilation=list(attrs.get("dilations", [1] * len(kernel))),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
    )
    return out


def _gemm(a: Tensor, b: Tensor, c: Tensor | None, attrs: dict[str, Any]) -> Tensor:
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    out = float(attrs.get("alpha", 1.0)) * (a @ b)
    if c is not None:
        out = out + float(attrs.get("beta", 1.0)) * c
    return out


def _flatten(x: Tensor, attrs: dict[str, Any]) -> Tensor:
    axis = int(attrs.get("axis", 1))
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _reshape(x: Tensor, shape: Tensor) -> Tensor:
    dims = [int(d) for d in shape.tolist()]
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


Op = Callable[[list[Tensor], dict[str, Any]], Tensor]
OPS: dict[str, Op] = {
    "Conv": lambda i, a: _conv(i[0], i[1], i[2] if len(i) > 2 else None, a),
    "Relu": lambda i, a: torch.relu(i[0]),
    "MaxPool": lambda i, a: _max_pool(i[0], a),
    "Gemm": lambda i, a: _gemm(i[0], i[1], i[2] if len(i) > 2 else None, a),
    "MatMul": lambda i, a: i[0] @ i[1],
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
    "Flatten": lambda i, a: _flatten(i[0], a),
    "Reshape": lambda i, a: _reshape(i[0], i[1]),
    "Identity": lambda i, a: i[0],
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=tuple(range(2, i[0].dim())), keepdim=True),
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "Tanh": lambda i, a: torch.tanh(i[0]),
}


class OnnxTorch(nn.Module):
    """Evaluates ``model.graph`` node by node; initializers are parameters."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        known = {*OPS, "Constant"}
        unsupported = sorted({n.op_type for n in graph.node if n.op_type not in known})
        if unsupported:
            raise BackdoorAnalysisError(
                "gradient-based analysis of this ONNX model needs ops it does not support: "
                f"{', '.join(unsupported)}; analyse its TorchScript, torch.export or "
                "state_dict form instead"
            )
        self.names = [init.name for init in graph.initializer]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.from_numpy(numpy_helper.to_array(init).copy()), requires_grad=False)
            for init in graph.initializer
        )
        constants = {}
        for node in graph.node:
            if node.op_type == "Constant":
                constants[node.output[0]] = torch.from_numpy(
                    numpy_helper.to_array(_attrs(node)["value"]).copy()
                )
        self.constants = constants
        self.nodes = [
            (n.op_type, list(n.input), list(n.output), _attrs(n))
            for n in graph.node
            if n.op_type != "Constant"
        ]
        inits = set(self.names)
        self.input_name = next(i.name for i in graph.input if i.name not in inits)
        self.output_name = graph.output[0].name

    def forward(self, x: Tensor) -> Tensor:
        values: dict[str, Tensor] = {self.input_name: x}
        values.update({k: v.to(x.device) for k, v in self.constants.items()})
        values.update(dict(zip(self.names, self.weights, strict=True)))
        for op, inputs, outputs, attrs in self.nodes:
            # an empty name is an omitted optional input (a Conv's bias): trailing only
            args = [values[name] for name in inputs if name]
            values[outputs[0]] = OPS[op](args, attrs)
        return values[self.output_name]

    def write_back(self, model: onnx.ModelProto) -> None:
        """Copy the (trained) parameters into ``model``'s initializers."""
        by_name = {init.name: init for init in model.graph.initializer}
        for name, weight in zip(self.names, self.weights, strict=True):
            array = weight.detach().cpu().numpy()
            by_name[name].CopyFrom(numpy_helper.from_array(array.astype(array.dtype), name))
