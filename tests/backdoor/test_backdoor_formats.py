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


def test_torchscript_layers_inside_control_flow_are_listed_and_refused_clearly(
    tmp_path: Path,
) -> None:
    import torch
    from torch import nn

    from modelguard.errors import BackdoorAnalysisError

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wide = True
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc1 = nn.Linear(4 * 64, 8)
            self.fc2 = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.conv(x)) if self.wide else x.repeat(1, 4, 1, 1)
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    path = tmp_path / "branchy.ts"
    torch.jit.save(torch.jit.script(Branchy()), str(path))
    model = load_model(path, device="cpu")
    assert [i.name for i in model.layers()] == ["conv", "fc1", "fc2"]
    val = load_data(FIXTURES / "val.npz")
    with pytest.raises(BackdoorAnalysisError, match="inside control flow"):
        model.run(val.x[:4], "conv")
    _, act = model.run(val.x[:4], "fc1")  # a top-level layer still works
    assert act is not None and act.shape == (4, 8)
