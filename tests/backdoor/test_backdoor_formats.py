"""The four input formats (and .pt / torch.export) see the same network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelguard.backdoor.activations import collect_profile
from modelguard.backdoor.api import default_layer
from modelguard.backdoor.data import load_data
from modelguard.backdoor.loaders import detect_format, load_model

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "backdoor"
FACTORY = f"{FIXTURES / 'digits_net.py'}:make_model"
FORMATS = {
    "badnet.ts": "torchscript",
    "badnet.safetensors": "safetensors",
    "badnet.pt": "state_dict",
    "badnet.onnx": "onnx",
    "badnet.pt2": "torch.export",
}


def _open(name: str):  # type: ignore[no-untyped-def]
    factory = FACTORY if name.endswith((".safetensors", ".pt")) else None
    return load_model(FIXTURES / name, device="cpu", factory=factory)


@pytest.fixture(scope="module")
def reference():  # type: ignore[no-untyped-def]
    val = load_data(FIXTURES / "val.npz")
    model = _open("badnet.ts")
    logits, act = model.run(val.x[:64], "conv3")
    return val, logits, act, collect_profile(model, "conv3", val, 128)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_format_is_detected(name: str) -> None:
    expected = {"state_dict": "torch-pickle"}.get(FORMATS[name], FORMATS[name])
    assert detect_format(FIXTURES / name) == expected
    assert _open(name).format == FORMATS[name]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_same_layers_and_default_layer(name: str) -> None:
    layers = _open(name).layers()
    assert [(i.name, i.kind, i.channels) for i in layers] == [
        ("conv1", "conv", 16),
        ("conv2", "conv", 32),
        ("conv3", "conv", 64),
        ("fc1", "linear", 32),
        ("fc2", "linear", 10),
    ]
    assert default_layer(layers).name == "conv3"


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_same_logits_and_activations(name: str, reference) -> None:  # type: ignore[no-untyped-def]
    val, ref_logits, ref_act, ref_profile = reference
    model = _open(name)
    logits, act = model.run(val.x[:64], "conv3")
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(act, ref_act, rtol=1e-4, atol=1e-4)
    profile = collect_profile(model, "conv3", val, 128)
    np.testing.assert_allclose(profile.mean, ref_profile.mean, rtol=1e-4, atol=1e-5)
    assert profile.accuracy == ref_profile.accuracy


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_pruning_zeroes_the_same_channels(name: str, reference) -> None:  # type: ignore[no-untyped-def]
    val = reference[0]
    model = _open(name)
    pruned = np.zeros(64, dtype=bool)
    pruned[[3, 17, 40]] = True
    before = model.snapshot()
    model.prune("conv3", pruned)
    _, act = model.run(val.x[:32], "conv3")
    assert np.all(act[:, pruned] == 0)
    assert np.any(act[:, ~pruned] != 0)
    model.restore(before)
    _, restored = model.run(val.x[:32], "conv3")
    np.testing.assert_allclose(restored, reference[2][:32], rtol=1e-4, atol=1e-4)
