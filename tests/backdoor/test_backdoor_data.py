"""Validation data from a folder of images or the user's own function, and the
backdoor report as SARIF."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from modelguard.backdoor.analysis import analyze_backdoor
from modelguard.backdoor.data import load_data
from modelguard.errors import BackdoorAnalysisError
from modelguard.report.interface import RenderOptions, render

from .conftest import FIXTURES

SARIF_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "sarif-schema-2.1.0.json"


def _image_folder(root: Path, val_path: Path, count: int = 3) -> Path:
    from PIL import Image

    val = np.load(val_path)
    for label in range(10):
        folder = root / f"class_{label:02d}"
        folder.mkdir(parents=True)
        picks = np.flatnonzero(val["y"] == label)[:count]
        for i, index in enumerate(picks):
            pixels = (val["x"][index, 0] * 255).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    (root / "class_00" / "notes.txt").write_text("not an image")  # ignored
    return root


def test_folder_of_class_folders_becomes_labelled_nchw_data(tmp_path: Path, digits: Path) -> None:
    data = load_data(_image_folder(tmp_path / "val", digits / "val.npz", count=4))
    assert data.x.shape == (40, 1, 32, 32) and data.x.dtype == np.float32
    assert data.y.tolist() == [label for label in range(10) for _ in range(4)]
    val = np.load(digits / "val.npz")
    first = np.flatnonzero(val["y"] == 0)[0]
    np.testing.assert_allclose(data.x[0], val["x"][first], atol=1 / 255)
    # the folder works as data for the analysis (8-bit pixels, same scaling)
    analysis = analyze_backdoor(
        FIXTURES / "badnet_0.ts", tmp_path / "val", device="cpu", detect=False
    )
    assert analysis.row("none").accuracy is not None and analysis.row("none").accuracy > 0.8


def test_image_folders_with_mixed_sizes_or_broken_images_are_errors(
    tmp_path: Path, digits: Path
) -> None:
    from PIL import Image

    root = _image_folder(tmp_path / "mixed", digits / "val.npz", count=1)
    Image.new("L", (9, 9)).save(root / "class_03" / "big.png")
    with pytest.raises(BackdoorAnalysisError, match=r"big\.png: shape"):
        load_data(root)
    broken = _image_folder(tmp_path / "broken", digits / "val.npz", count=1)
    (broken / "class_01" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(BackdoorAnalysisError, match=r"bad\.png: not a readable image"):
        load_data(broken)
    with pytest.raises(BackdoorAnalysisError, match="one sub-folder of images per class"):
        load_data(tmp_path / "mixed" / "class_03")


def test_module_function_yields_batches(tmp_path: Path, digits: Path) -> None:
    source = tmp_path / "my_data.py"
    source.write_text(
        "import numpy as np\n"
        f"_VAL = np.load({str(digits / 'val.npz')!r})\n"
        "def batches():\n"
        "    for i in range(0, 350, 100):\n"
        "        yield _VAL['x'][i:i + 100], _VAL['y'][i:i + 100]\n"
        "def nothing():\n"
        "    return []\n"
    )
    data = load_data(f"{source}:batches")
    assert data.x.shape == (350, 1, 32, 32) and len(data) == 350
    with pytest.raises(BackdoorAnalysisError, match="returned no batches"):
        load_data(f"{source}:nothing")


def test_backdoor_report_is_valid_sarif(detected) -> None:  # type: ignore[no-untyped-def]
    analysis = detected("badnet_0")
    sarif = json.loads(render(analysis.report, "sarif", RenderOptions()))
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft4Validator(schema)
    assert list(validator.iter_errors(sarif)) == []
    rules = {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    results = {r["ruleId"] for r in sarif["runs"][0]["results"]}
    assert {"MG506", "MG504"} <= results <= rules
