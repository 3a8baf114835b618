"""Every model format sees the same network and gives the same detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelguard.backdoor.activations import collect_profile
from modelguard.backdoor.analysis import analyze_backdoor, default_layer
from modelguard.backdoor.data import load_data
from modelguard.backdoor.detection import DetectionSettings
from modelguard.backdoor.loaders import detect_format, load_model
from modelguard.backdoor.margins import MarginSettings
from modelguard.backdoor.model import FineTuneSettings
from modelguard.backdoor.reverse import ReverseSettings

from .conftest import FACTORY, FIXTURES

FORMATS = {
    "badnet_0.ts": "torchscript",
    "badnet_0.safetensors": "safetensors",
    "badnet_0.pt": "state_dict",
    "badnet_0.onnx": "onnx",
    "badnet_0.pt2": "torch.export",
}
# A short run: enough for the target's mask to collapse, cheap enough for five formats.
QUICK = DetectionSettings(
    reverse=ReverseSettings(max_steps=48), margins=MarginSettings(steps=40), untargeted=False
)


def _open(name: str):  # type: ignore[no-untyped-def]
    factory = FACTORY if name.endswith((".safetensors", ".pt")) else None
    return load_model(FIXTURES / name, device="cpu", factory=factory)


@pytest.fixture(scope="module")
def reference(digits: Path):  # type: ignore[no-untyped-def]
    val = load_data(digits / "val.npz")
    model = _open("badnet_0.ts")
    logits, act = model.run(val.x[:64], "conv3")
    return val, logits, act, collect_profile(model, "conv3", val, 128)


@pytest.fixture(scope="module")
def quick_detections(digits: Path):  # type: ignore[no-untyped-def]
    return {
        name: analyze_backdoor(
            FIXTURES / name,
            digits / "val.npz",
            factory=FACTORY if name.endswith((".safetensors", ".pt")) else None,
            device="cpu",
            detection=QUICK,
        )
        for name in FORMATS
    }


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_format_is_detected(name: str) -> None:
    expected = {"state_dict": "torch-pickle"}.get(FORMATS[name], FORMATS[name])
    assert detect_format(FIXTURES / name) == expected
    assert _open(name).format == FORMATS[name]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_same_layers_and_default_layer(name: str) -> None:
    layers = _open(name).layers()
    assert [(i.name, i.kind, i.channels) for i in layers] == [
        ("conv1", "conv", 8),
        ("conv2", "conv", 16),
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


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_same_gradients_for_reverse_engineering(name: str, reference) -> None:  # type: ignore[no-untyped-def]
    import torch

    val = reference[0]
    x = torch.from_numpy(val.x[:8]).requires_grad_(True)
    ref_model = _open("badnet_0.ts").differentiable()
    (ref_grad,) = torch.autograd.grad(ref_model(x).logsumexp(1).sum(), x)
    x2 = torch.from_numpy(val.x[:8]).requires_grad_(True)
    (grad,) = torch.autograd.grad(_open(name).differentiable()(x2).logsumexp(1).sum(), x2)
    np.testing.assert_allclose(grad.numpy(), ref_grad.numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_same_detection_in_every_format(name: str, quick_detections) -> None:  # type: ignore[no-untyped-def]
    reference = quick_detections["badnet_0.ts"].detection
    detection = quick_detections[name].detection
    assert detection.targets == reference.targets
    ref_norms = np.array([c.norm for c in reference.classes])
    norms = np.array([c.norm for c in detection.classes])
    np.testing.assert_allclose(norms, ref_norms, rtol=0.05, atol=1.0)
    assert detection.score == pytest.approx(reference.score, rel=0.1)


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


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_blending_moves_the_weights_part_of_the_way_back(name: str, reference) -> None:  # type: ignore[no-untyped-def]
    val = reference[0]
    model = _open(name)
    start = model.snapshot()
    model.fine_tune(val.x[:32], val.y[:32], None, None, FineTuneSettings(1, 0.05, 8, 0))
    end = model.snapshot()
    trained, _ = model.run(val.x[:16], None)
    model.blend(start, end, 0.25)
    assert isinstance(start, dict) and isinstance(end, dict)
    blended = model.snapshot()
    assert isinstance(blended, dict)
    moved = 0
    for key, value in blended.items():
        a, b, v = (np.asarray(t, dtype=np.float64) for t in (start[key], end[key], value))
        np.testing.assert_allclose(v, a + 0.25 * (b - a), rtol=1e-5, atol=1e-6)
        moved += int(np.any(a != b))
    assert moved  # the fine-tuning changed something to blend
    model.blend(start, end, 1.0)
    np.testing.assert_allclose(model.run(val.x[:16], None)[0], trained, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("suffix", [".ts", ".safetensors", ".onnx", ".pt2", ".pt"])
def test_repaired_model_keeps_its_format(suffix: str, tmp_path: Path, digits: Path) -> None:
    name = f"badnet_0{suffix}"
    factory = FACTORY if suffix in (".safetensors", ".pt") else None
    out = tmp_path / f"repaired{suffix}"
    analysis = analyze_backdoor(
        FIXTURES / name,
        digits / "val.npz",
        factory=factory,
        device="cpu",
        detect=False,
        epochs=1,
        repair=out,
        method="fine-prune",
        control=False,
    )
    pruned = analysis.pruning.mask()
    assert pruned.any()
    reopened = analyze_backdoor(
        out, digits / "val.npz", factory=factory, device="cpu", detect=False
    )
    assert reopened.format == analysis.format
    assert np.all(reopened.profile.mean[pruned] == 0)  # pruned channels held at zero
    assert reopened.row("none").accuracy == pytest.approx(
        analysis.row("fine-prune").accuracy, abs=1e-9
    )


@pytest.mark.parametrize("name", ["badnet_0.ts", "badnet_0.pt2", "badnet_0.safetensors"])
def test_cpu_runs_channels_last_and_writes_the_default_layout(name: str, tmp_path: Path) -> None:
    import torch

    model = _open(name)
    convs = [p for p in model.module.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    out = tmp_path / f"written{Path(name).suffix}"
    model.save(out)
    if name.endswith(".ts"):
        written = list(torch.jit.load(str(out)).parameters())
    elif name.endswith(".pt2"):
        written = list(torch.export.load(str(out)).module().parameters())
    else:
        from safetensors.torch import load_file

        written = list(load_file(str(out)).values())
    assert all(p.is_contiguous() for p in written)  # what a loader of the file expects
    # and the model kept analysing channels-last after writing
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def test_torchscript_layers_inside_control_flow_are_listed_and_refused_clearly(
    tmp_path: Path, digits: Path
) -> None:
    import torch
    from torch import nn

    from modelguard.errors import BackdoorAnalysisError

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wide = True
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc1 = nn.Linear(4 * 1024, 8)
            self.fc2 = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.conv(x)) if self.wide else x.repeat(1, 4, 1, 1)
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    path = tmp_path / "branchy.ts"
    torch.jit.save(torch.jit.script(Branchy()), str(path))
    model = load_model(path, device="cpu")
    assert [i.name for i in model.layers()] == ["conv", "fc1", "fc2"]
    val = load_data(digits / "val.npz")
    with pytest.raises(BackdoorAnalysisError, match="inside control flow"):
        model.run(val.x[:4], "conv")
    _, act = model.run(val.x[:4], "fc1")
    assert act is not None and act.shape == (4, 8)


def test_unsupported_onnx_op_is_refused_by_name(tmp_path: Path) -> None:
    import onnx

    from modelguard.backdoor.onnx_torch import OnnxTorch
    from modelguard.errors import BackdoorAnalysisError

    model = onnx.load(str(FIXTURES / "badnet_0.onnx"))
    model.graph.node[1].op_type = "Elu"
    with pytest.raises(BackdoorAnalysisError, match="Elu"):
        OnnxTorch(model)
