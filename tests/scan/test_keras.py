"""The Keras scanner: .h5 model configs and .keras config.json, benign and malicious.

Keras is not installed; configs are built the way Keras 3
(``keras.saving.serialize_keras_object``) and tf.keras 2 (``get_config`` in
H5 ``model_config``) write them, and files are written with h5py and zipfile.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import marshal
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modelguard
from modelguard.findings import Finding, Location, Severity
from modelguard.limits import Limits
from modelguard.policy import ScanSettings
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import dispatch
from modelguard.scan.keras import is_keras_module, scan_hdf5, scan_keras_config

# ---- Keras 3 style configs -------------------------------------------------------------
DTYPE_POLICY = {
    "module": "keras",
    "class_name": "DTypePolicy",
    "config": {"name": "float32"},
    "registered_name": None,
}


def k3(module: str, class_name: str, config: Any, registered: str | None = None) -> dict[str, Any]:
    return {
        "module": module,
        "class_name": class_name,
        "config": config,
        "registered_name": registered,
    }


def k3_dense(name: str, units: int, activation: str = "relu") -> dict[str, Any]:
    layer = k3(
        "keras.layers",
        "Dense",
        {
            "name": name,
            "trainable": True,
            "dtype": DTYPE_POLICY,
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": k3("keras.initializers", "GlorotUniform", {"seed": None}),
            "bias_initializer": k3("keras.initializers", "Zeros", {}),
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
        },
    )
    layer["build_config"] = {"input_shape": [None, 8]}
    return layer


def k3_sequential(layers: list[dict[str, Any]], name: str = "sequential") -> dict[str, Any]:
    model = k3(
        "keras",
        "Sequential",
        {
            "name": name,
            "trainable": True,
            "dtype": DTYPE_POLICY,
            "layers": [
                k3(
                    "keras.layers",
                    "InputLayer",
                    {"batch_shape": [None, 8], "dtype": "float32", "sparse": False, "name": "in"},
                ),
                *layers,
            ],
        },
    )
    model["build_config"] = {"input_shape": [None, 8]}
    return model


def k3_compiled(model: dict[str, Any]) -> dict[str, Any]:
    model = copy.deepcopy(model)
    model["compile_config"] = {
        "optimizer": k3(
            "keras.optimizers",
            "Adam",
            {"name": "adam", "learning_rate": 0.001, "beta_1": 0.9, "amsgrad": False},
        ),
        "loss": k3(
            "keras.losses",
            "function",
            "mean_squared_error",
            registered="mean_squared_error",
        ),
        "metrics": ["mae"],
        "loss_weights": None,
        "run_eagerly": False,
        "jit_compile": False,
    }
    return model


def k3_functional_nested() -> dict[str, Any]:
    """A Functional model holding a Sequential and a Bidirectional(LSTM) wrapper."""
    inner = k3_sequential([k3_dense("inner_dense", 8)], name="inner")
    lstm = k3("keras.layers", "LSTM", {"name": "lstm", "units": 4, "activation": "tanh"})
    return k3(
        "keras",
        "Functional",
        {
            "name": "functional",
            "trainable": True,
            "layers": [
                k3("keras.layers", "InputLayer", {"batch_shape": [None, 5, 8], "name": "x"}),
                {**inner, "name": "inner", "inbound_nodes": []},
                k3(
                    "keras.layers",
                    "TimeDistributed",
                    {"name": "td", "layer": k3_dense("td_dense", 8)},
                ),
                k3(
                    "keras.layers",
                    "Bidirectional",
                    {"name": "bidi", "layer": lstm, "merge_mode": "concat"},
                ),
            ],
            "input_layers": [["x", 0, 0]],
            "output_layers": [["bidi", 0, 0]],
        },
    )


def marshalled_lambda() -> str:
    """What Keras' func_dump stores: base64 of the marshalled code object."""
    code = compile("lambda x: __import__('os').system('id')", "<payload>", "eval")
    return base64.b64encode(marshal.dumps(code)).decode("ascii")


def k3_lambda_layer() -> dict[str, Any]:
    return k3(
        "keras.layers",
        "Lambda",
        {
            "name": "lambda",
            "trainable": True,
            "dtype": DTYPE_POLICY,
            "function": {
                "class_name": "__lambda__",
                "config": {"code": marshalled_lambda(), "defaults": None, "closure": None},
            },
            "arguments": {},
        },
    )


# ---- tf.keras 2 style configs (H5 model_config) ----------------------------------------
def k2_sequential(layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "config": {
                        "batch_input_shape": [None, 8],
                        "dtype": "float32",
                        "sparse": False,
                        "ragged": False,
                        "name": "dense_input",
                    },
                },
                {
                    "class_name": "Dense",
                    "config": {
                        "name": "dense",
                        "trainable": True,
                        "dtype": "float32",
                        "units": 4,
                        "activation": "relu",
                        "kernel_initializer": {"class_name": "GlorotUniform", "config": {}},
                        "bias_initializer": {"class_name": "Zeros", "config": {}},
                    },
                },
                *layers,
            ],
        },
    }


def k2_lambda(function_type: str = "lambda", module: str = "__main__") -> dict[str, Any]:
    function: Any = [marshalled_lambda(), None, None] if function_type == "lambda" else "payload"
    return {
        "class_name": "Lambda",
        "config": {
            "name": "lambda",
            "trainable": True,
            "dtype": "float32",
            "function": function,
            "function_type": function_type,
            "module": module,
            "output_shape": None,
            "output_shape_type": "raw",
            "output_shape_module": None,
            "arguments": {},
        },
    }


K2_TRAINING_CONFIG = {
    "loss": "mse",
    "metrics": ["mae"],
    "weighted_metrics": None,
    "loss_weights": None,
    "optimizer_config": {
        "class_name": "Adam",
        "config": {"name": "Adam", "learning_rate": 0.001, "beta_1": 0.9},
    },
}


def h5_bytes(
    model_config: object | None = None,
    training_config: object | None = None,
    *,
    as_bytes: bool = True,
) -> bytes:
    """An HDF5 file laid out like tf.keras' save_model_to_hdf5."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        for name, value in (("model_config", model_config), ("training_config", training_config)):
            if value is not None:
                text = json.dumps(value)
                handle.attrs[name] = text.encode("utf-8") if as_bytes else text
        if model_config is not None:
            handle.attrs["keras_version"] = "2.15.0"
            handle.attrs["backend"] = "tensorflow"
        group = handle.create_group("model_weights/dense/dense")
        group.create_dataset("kernel:0", data=np.ones((8, 4), np.float32))
        group.create_dataset("bias:0", data=np.zeros(4, np.float32))
    return buffer.getvalue()


# ---- helpers ---------------------------------------------------------------------------
def scan_h5(data: bytes, *, limits: Limits | None = None) -> tuple[list[Finding], str | None]:
    ctx = ScanContext(location=Location("model.h5"), settings=ScanSettings(limits or Limits()))
    fmt = dispatch(Input(io.BytesIO(data), len(data), "model.h5"), ctx)
    assert fmt == "hdf5"
    return ctx.findings, ctx.format_label


def scan_config(config: object, *, limits: Limits | None = None) -> list[Finding]:
    ctx = ScanContext(
        location=Location("model.keras"), settings=ScanSettings(limits or Limits())
    ).child("config.json")
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    scan_keras_config(raw, ctx)
    return ctx.findings


def pairs(findings: list[Finding]) -> list[tuple[str, str | None]]:
    return sorted((f.rule_id, f.evidence) for f in findings)


def keras_zip(config: object, tmp_path: Path) -> Path:
    weights = io.BytesIO()
    with h5py.File(weights, "w") as handle:
        handle.create_dataset("layers/dense/vars/0", data=np.ones((8, 4), np.float32))
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "metadata.json", json.dumps({"keras_version": "3.6.0", "date_saved": "2024-01-01"})
        )
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", weights.getvalue())
    return path


# ---- benign ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        k3_sequential([k3_dense("d1", 16), k3_dense("d2", 2, "softmax")]),
        k3_compiled(k3_sequential([k3_dense("d1", 16)])),
        k3_functional_nested(),
    ],
    ids=["sequential", "compiled", "functional-nested"],
)
def test_keras3_configs_are_clean(config: dict[str, Any]) -> None:
    assert scan_config(config) == []


def test_keras2_h5_model_is_clean() -> None:
    findings, fmt = scan_h5(h5_bytes(k2_sequential([]), K2_TRAINING_CONFIG))
    assert findings == []
    assert fmt == "keras-h5"


def test_variable_length_string_attribute_is_read() -> None:
    data = h5_bytes(k2_sequential([k2_lambda()]), as_bytes=False)
    findings, _ = scan_h5(data)
    assert [f.rule_id for f in findings] == ["MG330"]


def test_weights_only_hdf5_is_plain_hdf5() -> None:
    findings, fmt = scan_h5(h5_bytes())
    assert findings == []
    assert fmt == "hdf5"


def test_keras_modules() -> None:
    for module in ("keras", "keras.layers", "keras.src.ops", "tensorflow.keras.layers", "tf_keras"):
        assert is_keras_module(module), module
    for module in ("kerasevil", "evil.keras", "__main__", "builtins", "tensorflow", ""):
        assert not is_keras_module(module), module


# ---- Lambda layers ---------------------------------------------------------------------
def test_keras3_lambda_layer() -> None:
    findings = scan_config(k3_sequential([k3_lambda_layer()]))
    assert pairs(findings) == [("MG330", "$.config.layers[1]: Lambda")]
    assert findings[0].severity is Severity.HIGH
    assert "__lambda__" in findings[0].message
    assert findings[0].location.members == ("config.json",)


def test_keras3_lambda_named_function_reference() -> None:
    layer = k3_lambda_layer()
    layer["config"]["function"] = k3("__main__", "function", "payload", registered="payload")
    findings = scan_config(k3_sequential([layer]))
    assert pairs(findings) == [
        ("MG330", "$.config.layers[1]: Lambda"),
        ("MG331", "__main__.function"),
    ]
    assert "__main__.payload" in findings[0].message or "__main__.payload" in findings[1].message


def test_serialized_lambda_outside_a_lambda_layer() -> None:
    dense = k3_dense("d", 4)
    dense["config"]["activation"] = {
        "class_name": "__lambda__",
        "config": {"value": [marshalled_lambda(), None, None]},
    }
    findings = scan_config(k3_sequential([dense]))
    assert [f.rule_id for f in findings] == ["MG330"]
    assert "activation" in (findings[0].evidence or "")


def test_lambda_inside_wrappers_and_nested_models() -> None:
    wrapped = k3("keras.layers", "TimeDistributed", {"name": "td", "layer": k3_lambda_layer()})
    inner = k3_sequential([wrapped], name="inner")
    outer = k3_functional_nested()
    outer["config"]["layers"].append(inner)
    findings = scan_config(outer)
    assert pairs(findings) == [
        ("MG330", "$.config.layers[4].config.layers[1].config.layer: Lambda")
    ]


def test_keras2_marshal_lambda_in_h5() -> None:
    findings, fmt = scan_h5(h5_bytes(k2_sequential([k2_lambda()]), K2_TRAINING_CONFIG))
    assert fmt == "keras-h5"
    assert pairs(findings) == [("MG330", "$.config.layers[2]: Lambda")]
    assert "bytecode" in findings[0].message
    assert findings[0].location.members == ()


def test_keras2_lambda_function_reference_in_h5() -> None:
    findings, _ = scan_h5(h5_bytes(k2_sequential([k2_lambda("function", "evil.payload")])))
    assert [f.rule_id for f in findings] == ["MG330"]
    assert "evil.payload.payload" in findings[0].message


# ---- custom objects --------------------------------------------------------------------
def test_custom_object_from_foreign_module() -> None:
    layer = k3("evil.payload", "Backdoor", {"name": "b"}, registered="Custom>Backdoor")
    findings = scan_config(k3_sequential([layer]))
    assert pairs(findings) == [("MG331", "evil.payload.Backdoor")]
    assert findings[0].severity is Severity.MEDIUM


def test_registered_name_with_package_prefix() -> None:
    layer = k3("keras.layers", "Dense", {"name": "d"}, registered="my_package>Dense")
    assert pairs(scan_config(k3_sequential([layer]))) == [("MG331", "my_package>Dense")]


def test_keras2_custom_class_name_and_training_config() -> None:
    custom = {"class_name": "Addons>WeightNorm", "config": {"name": "wn"}}
    training = {**K2_TRAINING_CONFIG, "loss": k3("evil.payload", "Loss", {})}
    findings, _ = scan_h5(h5_bytes(k2_sequential([custom]), training))
    assert pairs(findings) == [("MG331", "Addons>WeightNorm"), ("MG331", "evil.payload.Loss")]
    assert any("training_config" in f.message for f in findings)


def test_custom_function_in_compile_config() -> None:
    model = k3_compiled(k3_sequential([k3_dense("d", 4)]))
    model["compile_config"]["loss"] = k3("builtins", "function", "my_loss")
    assert pairs(scan_config(model)) == [("MG331", "builtins.function")]


# ---- malformed -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "evidence"),
    [
        (b"{not json", "config.json: json"),
        (b"\xff\xfe", "config.json: json"),
        (b"[1, 2]", "config.json: not-object"),
        (b'{"class_name": "Sequential"}', "config.json: no-model"),
        (b'{"config": {}}', "config.json: no-model"),
        (b"[" * 50_000 + b"]" * 50_000, "config.json: json"),
    ],
)
def test_malformed_config_json(raw: bytes, evidence: str) -> None:
    assert pairs(scan_config(raw)) == [("MG332", evidence)]


def test_config_over_cap_is_a_limit() -> None:
    findings = scan_config(k3_sequential([]), limits=Limits(max_header_bytes=50))
    assert [f.rule_id for f in findings] == ["MG002"]


def test_h5_attribute_over_cap_is_a_limit() -> None:
    findings, _ = scan_h5(h5_bytes(k2_sequential([])), limits=Limits(max_header_bytes=50))
    assert [f.rule_id for f in findings] == ["MG002"]


def test_h5_model_config_not_json() -> None:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.attrs["model_config"] = b"{broken"
    findings, _ = scan_h5(buffer.getvalue())
    assert pairs(findings) == [("MG332", "attribute model_config: json")]


@pytest.mark.parametrize(
    "value", [np.arange(3), np.array([b"a", b"b"]), np.float64(1.5)], ids=["ints", "strs", "float"]
)
def test_h5_model_config_of_wrong_type(value: object) -> None:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.attrs["model_config"] = value
    findings, _ = scan_h5(buffer.getvalue())
    assert [(f.rule_id, f.evidence) for f in findings] == [("MG332", "model_config")]


def test_garbage_after_hdf5_magic() -> None:
    data = b"\x89HDF\r\n\x1a\n" + b"\x00\xff" * 200
    findings, _ = scan_h5(data)
    assert pairs(findings) == [("MG332", "hdf5-unreadable")]


def test_every_truncation_is_a_finding() -> None:
    data = h5_bytes(k2_sequential([]), K2_TRAINING_CONFIG)
    cuts = sorted({*range(0, len(data), 61), *range(len(data) - 64, len(data))})
    for cut in cuts:
        ctx = ScanContext(location=Location("model.h5"))
        scan_hdf5(Input(io.BytesIO(data[:cut]), cut, "model.h5"), ctx)
        assert [f.rule_id for f in ctx.findings] == ["MG332"], cut


def test_every_truncation_of_config_json_is_a_finding() -> None:
    raw = json.dumps(k3_functional_nested()).encode()
    for cut in range(0, len(raw), 7):
        findings = scan_config(raw[:cut])
        assert [f.rule_id for f in findings] == ["MG332"], cut


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(["Lambda", "__lambda__", "keras.layers", "evil", "a>b", "function"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["class_name", "config", "module", "registered_name", "function", "x"]),
            inner,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_arbitrary_configs_never_raise(config: object) -> None:
    findings = scan_config(config)
    assert all(f.rule_id in {"MG330", "MG331", "MG332"} for f in findings)


# ---- .keras archives through the public API --------------------------------------------
def test_keras_archive_benign(tmp_path: Path) -> None:
    report = modelguard.scan(keras_zip(k3_compiled(k3_sequential([])), tmp_path), workers=1)
    (artifact,) = report.artifacts
    assert artifact.format == "keras"
    assert [f for f in artifact.findings if f.severity >= Severity.MEDIUM] == []


def test_keras_archive_with_lambda(tmp_path: Path) -> None:
    report = modelguard.scan(keras_zip(k3_sequential([k3_lambda_layer()]), tmp_path), workers=1)
    findings = [f for f in report.findings if f.rule_id == "MG330"]
    assert len(findings) == 1
    assert findings[0].location.members == ("config.json",)
