"""ONNX models through onnxruntime, behind the :class:`AnalysedModel` protocol.

The chosen layer's output is exposed by adding it to the graph outputs of an
in-memory copy; pruning zeroes the layer's weight (and bias) initializers and
rebuilds the session. onnxruntime gives no gradients, so reverse engineering and
training evaluate the same graph with torch ops (:mod:`onnx_torch`) and write
the trained weights back into the initializers: the repaired file is the input
graph with new weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from modelguard.backdoor.model import (
    BoolArray,
    FineTuneSettings,
    FloatArray,
    IntArray,
    LayerInfo,
)
from modelguard.errors import BackdoorAnalysisError

_LAYER_OPS = {"Conv": "conv", "Gemm": "linear", "MatMul": "linear"}


class OnnxModel:
    format = "onnx"

    def __init__(self, model: onnx.ModelProto, device: str) -> None:
        self.model = model
        self._providers = _providers(device)
        self.device = "cuda" if self._providers[0] == "CUDAExecutionProvider" else "cpu"
        self._sessions: dict[str | None, Any] = {}
        self._torch: Any = None  # the graph as a torch module, built on first use
        self._inits = {init.name: init for init in model.graph.initializer}
        self._layers = self._find_layers()

    @classmethod
    def load(cls, path: Path, device: str) -> OnnxModel:
        try:
            model = onnx.load(str(path))
        except (DecodeError, OSError, ValueError, RuntimeError) as exc:
            raise BackdoorAnalysisError(f"{path}: not a readable ONNX model: {exc}") from exc
        return cls(model, device)

    # -- structure ---------------------------------------------------------------------
    def _find_layers(self) -> dict[str, tuple[LayerInfo, onnx.NodeProto]]:
        found: dict[str, tuple[LayerInfo, onnx.NodeProto]] = {}
        for node in self.model.graph.node:
            kind = _LAYER_OPS.get(node.op_type)
            if kind is None or len(node.input) < 2 or node.input[1] not in self._inits:
                continue
            weight = numpy_helper.to_array(self._inits[node.input[1]])
            # Gemm/MatMul keep weights as (in, out) unless transB; Conv as (out, in, ...)
            transposed = node.op_type == "MatMul" or (
                node.op_type == "Gemm"
                and not any(a.name == "transB" and a.i == 1 for a in node.attribute)
            )
            channels = int(weight.shape[-1] if transposed else weight.shape[0])
            weight_name = node.input[1]
            name = (
                weight_name.removesuffix(".weight")
                if weight_name.endswith(".weight")
                else (node.name or node.output[0])
            )
            found[name] = (LayerInfo(name, kind, channels), node)
        return found

    def layers(self) -> list[LayerInfo]:
        return [info for info, _ in self._layers.values()]

    def _layer(self, layer: str) -> tuple[LayerInfo, onnx.NodeProto]:
        try:
            return self._layers[layer]
        except KeyError:
            choices = ", ".join(self._layers)
            raise BackdoorAnalysisError(f"no layer named {layer!r} (layers: {choices})") from None

    # -- running -----------------------------------------------------------------------
    def _session(self, layer: str | None) -> Any:
        if layer not in self._sessions:
            model = onnx.ModelProto()
            model.CopyFrom(self.model)
            if layer is not None:
                _, node = self._layer(layer)
                extra = onnx.helper.make_tensor_value_info(
                    node.output[0], onnx.TensorProto.FLOAT, None
                )
                model.graph.output.append(extra)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self._sessions[layer] = ort.InferenceSession(
                model.SerializeToString(), options, providers=self._providers
            )
        return self._sessions[layer]

    def run(self, x: FloatArray, layer: str | None) -> tuple[FloatArray, FloatArray | None]:
        session = self._session(layer)
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
        try:
            outputs = session.run(None, feed)
        except (ort.capi.onnxruntime_pybind11_state.Fail, ValueError) as exc:
            raise BackdoorAnalysisError(f"onnxruntime rejected the input: {exc}") from exc
        logits = np.asarray(outputs[0], dtype=np.float32)
        act = None if layer is None else np.asarray(outputs[-1], dtype=np.float32)
        return logits, act

    # -- weights and pruning -------------------------------------------------------------
    @staticmethod
    def _channel_axis(info: LayerInfo, node: onnx.NodeProto, position: int, array: Any) -> int:
        """Where the output channels are: axis 0, except for (in, out) matmul weights."""
        if (
            position == 0
            and array.ndim == 2
            and array.shape[-1] == info.channels
            and (node.op_type == "MatMul" or array.shape[0] != info.channels)
        ):
            return 1
        return 0

    def filter_norms(self, layer: str) -> FloatArray:
        info, node = self._layer(layer)
        weight = numpy_helper.to_array(self._inits[node.input[1]]).astype(np.float32)
        by_channel = np.moveaxis(weight, self._channel_axis(info, node, 0, weight), 0)
        norms = np.linalg.norm(by_channel.reshape(info.channels, -1), axis=1)
        return np.asarray(norms, dtype=np.float32)

    def prune(self, layer: str, pruned: BoolArray) -> None:
        info, node = self._layer(layer)
        names = [node.input[1]] + ([node.input[2]] if len(node.input) > 2 else [])
        for position, name in enumerate(names):
            if name not in self._inits:
                continue
            array = numpy_helper.to_array(self._inits[name]).copy()
            channel_axis = self._channel_axis(info, node, position, array)
            index: list[slice | BoolArray] = [slice(None)] * array.ndim
            index[channel_axis] = np.asarray(pruned, dtype=bool)
            array[tuple(index)] = 0
            self._inits[name].CopyFrom(numpy_helper.from_array(array, name))
        self._changed()

    def _changed(self) -> None:
        self._sessions.clear()
        self._torch = None

    def snapshot(self) -> object:
        return {name: numpy_helper.to_array(init).copy() for name, init in self._inits.items()}

    def restore(self, state: object) -> None:
        assert isinstance(state, dict)
        for name, array in state.items():
            self._inits[name].CopyFrom(numpy_helper.from_array(array, name))
        self._changed()

    def blend(self, start: object, end: object, share: float) -> None:
        assert isinstance(start, dict) and isinstance(end, dict)
        for name, a in start.items():
            b = end[name]
            floating = np.issubdtype(a.dtype, np.floating)
            array = (a + share * (b - a)).astype(a.dtype) if floating else b
            self._inits[name].CopyFrom(numpy_helper.from_array(array, name))
        self._changed()

    def _trainable(self) -> Any:
        """The graph as a TorchModel whose parameters are named like the initializers."""
        if self._torch is None:
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                raise BackdoorAnalysisError(
                    "gradient-based analysis of an ONNX model needs torch: "
                    "pip install 'modelguard[backdoor]'"
                )
            from modelguard.backdoor.onnx_torch import OnnxTorch
            from modelguard.backdoor.torch_model import TorchModel, pick_device

            module = OnnxTorch(self.model)
            device = pick_device(self.device)

            class Trainable(TorchModel):
                def _params(self) -> dict[str, Any]:
                    return dict(zip(module.names, module.weights, strict=True))

            self._torch = Trainable(module, "onnx", device)
        return self._torch

    @property
    def can_fine_tune(self) -> bool:
        try:
            self._trainable()
        except BackdoorAnalysisError:
            return False
        return True

    def differentiable(self) -> Any:
        return self._trainable().differentiable()

    def fine_tune(
        self,
        x: FloatArray,
        y: IntArray,
        layer: str | None,
        pruned: BoolArray | None,
        settings: FineTuneSettings,
        teacher: FloatArray | None = None,
    ) -> None:
        trainable = self._trainable()
        trainable.fine_tune(x, y, layer, pruned, settings, teacher)
        trainable.module.write_back(self.model)
        self._inits = {init.name: init for init in self.model.graph.initializer}
        self._changed()

    def save(self, path: Path) -> str:
        onnx.save(self.model, str(path))
        return "onnx"


def _providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise BackdoorAnalysisError(
            "--device cuda was asked for but onnxruntime has no CUDAExecutionProvider"
        )
    return ["CPUExecutionProvider"]
