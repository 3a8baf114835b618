"""``modelguard backdoor`` end to end: reports, repaired models in each format, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from modelguard.backdoor.api import analyze_backdoor
from modelguard.cli.main import cli

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "backdoor"
FACTORY = f"{FIXTURES / 'digits_net.py'}:make_model"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["backdoor", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout, result.stderr


def test_cli_reports_trigger_and_writes_repair_plot_and_json(tmp_path: Path) -> None:
    out = tmp_path / "repaired.ts"
    report = tmp_path / "report.json"
    plot = tmp_path / "curve.png"
    code, stdout, _ = run(
        str(FIXTURES / "pruneaware.ts"),
        "--data", str(FIXTURES / "val.npz"),
        "--trigger-data", str(FIXTURES / "test_trigger.npz"),
        "--target", "0",
        "--test-data", str(FIXTURES / "test.npz"),
        "--device", "cpu",
        "--fine-prune", str(out),
        "--plot", str(plot),
        "--format", "json",
        "--output", str(report),
    )  # fmt: skip
    assert code == 1  # MG502 (trigger works on the unrepaired model) is high
    assert "fine-pruning" in stdout  # the table; the report went to its file
    artifacts = json.loads(report.read_text())["artifacts"]
    rules = {f["rule_id"] for a in artifacts for f in a["findings"]}
    assert {"MG502", "MG504", "MG505"} <= rules
    assert "MG503" not in rules
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # the repaired model loads and its trigger no longer works
    repaired = analyze_backdoor(
        out,
        FIXTURES / "val.npz",
        trigger_data=FIXTURES / "test_trigger.npz",
        target=0,
        device="cpu",
        defences=False,
    )
    assert repaired.row("none").attack_success < 0.2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("badnet.ts", ".ts"), ("badnet.safetensors", ".safetensors"), ("badnet.onnx", ".onnx"),
     ("badnet.pt2", ".pt2"), ("badnet.pt", ".pt")],
)  # fmt: skip
def test_repaired_model_keeps_format_and_pruned_channels_stay_zero(
    name: str, suffix: str, tmp_path: Path
) -> None:
    out = tmp_path / f"repaired{suffix}"
    factory = FACTORY if suffix in (".safetensors", ".pt") else None
    analysis = analyze_backdoor(
        FIXTURES / name,
        FIXTURES / "val.npz",
        factory=factory,
        device="cpu",
        epochs=1,
        fine_prune=out,
    )
    assert analysis.pruning is not None
    pruned = analysis.pruning.mask()
    assert pruned.any()
    reopened = analyze_backdoor(
        out, FIXTURES / "val.npz", factory=factory, device="cpu", defences=False
    )
    assert reopened.format == analysis.format
    # pruned channels are silent on every clean input: zeroed and kept zero
    assert np.all(reopened.profile.mean[pruned] == 0)
    assert np.all(reopened.profile.active_share[pruned] == 0)
    expected = "fine-pruning" if suffix != ".onnx" else "pruning"  # onnxruntime cannot train
    assert reopened.row("none").accuracy == pytest.approx(analysis.row(expected).accuracy, abs=0.03)


def test_list_layers_names_the_default(tmp_path: Path) -> None:
    code, stdout, _ = run(str(FIXTURES / "badnet.onnx"), "--list-layers")
    assert code == 0
    assert "conv3" in stdout and "default" in stdout
    assert "fc2" in stdout


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    val = np.load(FIXTURES / "val.npz")
    x, y = val["x"], val["y"]
    return [
        ([str(_npz(tmp / "labels.npz", x=x, y=y + 20))], "only 10 classes"),
        ([str(_npz(tmp / "shape.npz", x=x[:, :, :5, :5], y=y))], "do not fit the model"),
        ([str(_npz(tmp / "noy.npz", x=x))], "missing array(s) y"),
        ([str(_npz(tmp / "ints.npz", x=(x * 16).astype(np.int64), y=y))], "expected floating"),
        ([str(_npz(tmp / "count.npz", x=x, y=y[:10]))], "but 10 labels"),
        ([str(tmp / "absent.npz")], "no such data file"),
    ]


def test_bad_data_is_an_exit_2_error_naming_the_file(tmp_path: Path) -> None:
    for args, expected in bad_inputs(tmp_path):
        code, _, stderr = run(str(FIXTURES / "badnet.ts"), "--data", *args, "--device", "cpu")
        assert code == 2, (args, stderr)
        assert expected in stderr, stderr
        assert Path(args[0]).name in stderr
        assert "Traceback" not in stderr


def test_state_dict_without_factory_and_damaged_model_are_clear_errors(tmp_path: Path) -> None:
    code, _, stderr = run(str(FIXTURES / "badnet.safetensors"), "--data", str(FIXTURES / "val.npz"))
    assert code == 2 and "--factory" in stderr
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes((FIXTURES / "badnet.onnx").read_bytes()[:5000])
    code, _, stderr = run(str(damaged), "--data", str(FIXTURES / "val.npz"))
    assert code == 2 and "damaged.onnx" in stderr and "Traceback" not in stderr
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes((FIXTURES / "badnet.safetensors").read_bytes())
    code, _, stderr = run(
        str(wrong), "--data", str(FIXTURES / "val.npz"), "--factory", "collections:OrderedDict"
    )
    assert code == 2 and "not nn.Module" in stderr


def test_pickled_full_module_is_refused_without_running_it(tmp_path: Path) -> None:
    import torch

    # A whole nn.Module pickled (classes torch.load(weights_only=True) will not build).
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    path = tmp_path / "full_module.pt"
    torch.save(model, path)
    code, _, stderr = run(str(path), "--data", str(FIXTURES / "val.npz"))
    assert code == 2
    assert "refused" in stderr and "--trust-pickle" in stderr and "--factory" in stderr


def test_fine_prune_into_a_missing_folder_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "repaired.ts"
    code, _, stderr = run(
        str(FIXTURES / "badnet.ts"), "--data", str(FIXTURES / "val.npz"), "--epochs", "0",
        "--fine-prune", str(out),
    )  # fmt: skip
    assert code == 2 and "does not exist" in stderr
    assert not out.parent.exists()


def test_trust_pickle_loads_a_clean_pickle_and_refuses_a_malicious_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    trusted = tmp_path / "trusted.pt"
    torch.save(model, trusted)
    code, stdout, stderr = run(
        str(trusted), "--data", str(FIXTURES / "val.npz"), "--trust-pickle", "--profile-only"
    )
    assert code == 0, stderr
    assert "torch-pickle" in stdout and "layer 1" in stdout  # the hidden linear layer

    marker = tmp_path / "canary"
    monkeypatch.setenv("MODELGUARD_CANARY", str(marker))
    evil = Path(__file__).resolve().parents[2] / "fixtures" / "malicious"
    code, _, stderr = run(
        str(evil / "torch_zip_exec_in_data_pkl.pt"),
        "--data", str(FIXTURES / "val.npz"),
        "--trust-pickle",
    )  # fmt: skip
    assert code == 2
    assert "--trust-pickle refused" in stderr and "MG101" in stderr
    assert not marker.exists()
