"""``modelguard backdoor`` end to end: detection, repair, held-out numbers, JSON,
plot, and bad input as one-line exit-2 errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from modelguard.cli.main import cli
from modelguard.report.json import load_schema

from .conftest import FACTORY, FIXTURES


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["backdoor", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def repaired_run(tmp_path_factory, digits: Path, trigger_data):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("repair")
    trig, target = trigger_data("badnet_0")
    code, stdout, stderr = run(
        str(FIXTURES / "badnet_0.ts"),
        "--data", str(digits / "val.npz"),
        # held out: the judge's 447 test images (all of --data tunes and guards)
        "--test-data", str(digits / "test.npz"),
        "--trigger-data", str(trig), "--target", str(target),
        "--device", "cpu",
        "--repair", str(out / "repaired.ts"),
        "--plot", str(out / "analysis.png"),
        "--format", "json", "--output", str(out / "report.json"),
    )  # fmt: skip
    return out, code, stdout, stderr, target


def test_repair_removes_the_backdoor_on_held_out_data_at_small_cost(repaired_run) -> None:
    out, code, stdout, _, target = repaired_run
    assert code == 1  # MG506 backdoor detected (and MG502: the given trigger works)
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, load_schema())
    block = report["artifacts"][0]["backdoor"]
    assert block["detected"] and block["target"] == target
    rows = {r["method"]: r for r in block["defences"]}
    assert set(rows) == {"none", "unlearn", "fine-tune"}  # the control is always beside it
    assert rows["none"]["asr"] > 0.9
    repair = block["repair"]
    assert repair["method"] == "unlearn" and repair["output"] == str(out / "repaired.ts")
    assert repair["held_out"]["asr"] < 0.05
    # the per-model bound (4 points worst; 2.5 is the family's mean target):
    # two rounds cost this model 2.7 points, one test image over 2.5
    assert rows["none"]["clean_acc"] - repair["held_out"]["clean_acc"] <= 0.04
    assert repair["held_out"]["count"] == block["held_out"]["count"] == 447
    rules = {f["rule_id"] for f in report["artifacts"][0]["findings"]}
    assert {"MG502", "MG504", "MG505", "MG506"} <= rules and "MG503" not in rules
    assert "auto: unlearning" in stdout or "unlearn" in stdout  # the table went to stdout
    assert (out / "analysis.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_repaired_model_reloads_in_its_format_without_the_backdoor(
    repaired_run, digits: Path
) -> None:
    from modelguard.backdoor.analysis import analyze_backdoor

    out, _, _, _, target = repaired_run
    trig = next(digits.glob("badnet_0.trigger_test.npz"))
    again = analyze_backdoor(
        out / "repaired.ts",
        digits / "val.npz",
        trigger_data=trig,
        target=target,
        device="cpu",
        detect=False,
    )
    assert again.format == "torchscript"
    assert again.row("none").attack_success < 0.05


def test_fine_prune_flag_still_works_as_a_method(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "pruned.safetensors"
    code, stdout, stderr = run(
        str(FIXTURES / "pruneaware_0.safetensors"), "--factory", FACTORY,
        "--data", str(digits / "val.npz"), "--device", "cpu", "--profile-only",
        "--epochs", "2", "--fine-prune", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert out.is_file() and "fine-prune" in stdout and "fine-tune" in stdout


def test_a_repair_the_accuracy_guard_refuses_writes_nothing_and_says_why(
    tmp_path: Path, digits: Path
) -> None:
    # a learning rate that wrecks the net: no rate of the ladder, nor any blend back
    # towards the start, keeps the guard within a zero budget
    out = tmp_path / "repaired.ts"
    code, stdout, stderr = run(
        str(FIXTURES / "badnet_0.ts"), "--data", str(digits / "val.npz"), "--device", "cpu",
        "--profile-only", "--epochs", "1", "--lr", "100", "--max-acc-drop", "0",
        "--fine-prune", str(out), "--format", "json", "--output", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert code == 1, stderr  # the HIGH finding fails the run (--fail-on high)
    assert not out.exists() and not list(tmp_path.glob("repaired*"))
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, load_schema())
    artifact = report["artifacts"][0]
    repair = artifact["backdoor"]["repair"]
    assert repair["method"] == "fine-prune" and repair["refused"] and repair["output"] is None
    (refusal,) = [f for f in artifact["findings"] if f["rule_id"] == "MG503"]
    assert "the accuracy guard refused fine-prune" in refusal["message"]
    assert "no repaired model written" in refusal["message"]
    assert "MG505" not in {f["rule_id"] for f in artifact["findings"]}  # nothing written
    assert "refused after" in stdout  # the table's note


def test_list_layers_names_the_default() -> None:
    code, stdout, _ = run(str(FIXTURES / "badnet_0.onnx"), "--list-layers")
    assert code == 0
    assert "conv3" in stdout and "default" in stdout and "fc2" in stdout


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_bad_data_is_an_exit_2_error_naming_the_file(tmp_path: Path, digits: Path) -> None:
    with np.load(digits / "val.npz") as val:
        x, y = val["x"], val["y"]
    cases = [
        (_npz(tmp_path / "labels.npz", x=x, y=y + 20), "only 10 classes"),
        (_npz(tmp_path / "shape.npz", x=x[:, :, :5, :5], y=y), "do not fit the model"),
        (_npz(tmp_path / "noy.npz", x=x), "missing array(s) y"),
        (_npz(tmp_path / "ints.npz", x=(x * 16).astype(np.int64), y=y), "expected floating"),
        (_npz(tmp_path / "count.npz", x=x, y=y[:10]), "but 10 labels"),
        (_npz(tmp_path / "tiny.npz", x=x[:3], y=y[:3]), "too few to split"),
        (tmp_path / "absent.npz", "no such data file"),
    ]
    for path, expected in cases:
        code, _, stderr = run(str(FIXTURES / "badnet_0.ts"), "--data", str(path), "--device", "cpu")
        assert code == 2, (path, stderr)
        assert expected in stderr, stderr
        assert path.name in stderr
        assert "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1, stderr


def test_bad_models_are_exit_2_errors_naming_the_file(tmp_path: Path, digits: Path) -> None:
    val = str(digits / "val.npz")
    code, _, stderr = run(str(FIXTURES / "badnet_0.safetensors"), "--data", val)
    assert code == 2 and "--factory" in stderr
    for name in ("badnet_0.onnx", "badnet_0.ts", "badnet_0.pt2", "badnet_0.safetensors"):
        damaged = tmp_path / f"damaged_{name}"
        damaged.write_bytes((FIXTURES / name).read_bytes()[:5000])
        args = ["--factory", FACTORY] if name.endswith(".safetensors") else []
        code, _, stderr = run(str(damaged), "--data", val, *args)
        assert code == 2, stderr
        assert damaged.name in stderr and "Traceback" not in stderr
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes((FIXTURES / "badnet_0.safetensors").read_bytes())
    code, _, stderr = run(str(wrong), "--data", val, "--factory", "collections:OrderedDict")
    assert code == 2 and "not nn.Module" in stderr


def test_repair_into_a_missing_folder_writes_nothing(tmp_path: Path, digits: Path) -> None:
    out = tmp_path / "no" / "such" / "repaired.ts"
    code, _, stderr = run(
        str(FIXTURES / "badnet_0.ts"), "--data", str(digits / "val.npz"), "--repair", str(out),
    )  # fmt: skip
    assert code == 2 and "does not exist" in stderr
    assert not out.parent.exists()


def test_pickled_full_module_is_refused_without_running_it(tmp_path: Path, digits: Path) -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 10))
    path = tmp_path / "full_module.pt"
    torch.save(model, path)
    code, _, stderr = run(str(path), "--data", str(digits / "val.npz"))
    assert code == 2
    assert "refused" in stderr and "--trust-pickle" in stderr and "--factory" in stderr


def test_trust_pickle_loads_a_clean_pickle_and_refuses_a_malicious_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digits: Path
) -> None:
    import torch

    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(1024, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    trusted = tmp_path / "trusted.pt"
    torch.save(model, trusted)
    val = str(digits / "val.npz")
    code, stdout, stderr = run(str(trusted), "--data", val, "--trust-pickle", "--profile-only")
    assert code == 0, stderr
    assert "torch-pickle" in stdout and "layer 1" in stdout  # the hidden linear layer

    marker = tmp_path / "canary"
    monkeypatch.setenv("MODELGUARD_CANARY", str(marker))
    evil = Path(__file__).resolve().parents[2] / "fixtures" / "malicious"
    code, _, stderr = run(
        str(evil / "torch_zip_exec_in_data_pkl.pt"), "--data", val, "--trust-pickle"
    )
    assert code == 2
    assert "--trust-pickle refused" in stderr and "MG101" in stderr
    assert not marker.exists()
