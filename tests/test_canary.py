"""The safety proof: scanning never runs a payload; loading does.

Every malicious fixture's payload only creates a marker file at
``$MODELGUARD_CANARY``. Scanning all of them (API in-process, CLI in a
subprocess) must leave no marker. The positive control loads the same files
with the loaders they target (pickle, also on io.BytesIO, torch, torch.jit, numpy,
joblib, Keras with safe_mode=False, and pickle.load of a 7z member) in a subprocess
and shows each marker appears, so the negative result means something. TorchScript
cannot read the environment: its payload writes ``modelguard-canary-ts`` in the current
folder, so it is loaded from a scratch folder and that file stands for the marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import modelguard
from modelguard.findings import Severity
from modelguard.policy import Policy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ENTRIES: list[dict[str, Any]] = json.loads((FIXTURES / "manifest.json").read_text())["files"]
MALICIOUS = [FIXTURES / e["path"] for e in ENTRIES if e["kind"] == "malicious"]
LIVE = [e for e in ENTRIES if e["live"]]

# Runs in a child: load each fixture with its target loader, each with its own
# canary path, and print which markers appeared.
LOADER_SCRIPT = r"""
import json, os, pickle, sys, tempfile
os.environ["KERAS_BACKEND"] = "torch"
results = {}
for path, loader, canary in json.loads(sys.argv[1]):
    os.environ["MODELGUARD_CANARY"] = canary
    here = os.getcwd()
    scratch = tempfile.mkdtemp()
    try:
        if loader == "pickle":
            with open(path, "rb") as f:
                pickle.load(f)
        elif loader == "pickle-bytesio":
            import io
            with open(path, "rb") as f:
                pickle.load(io.BytesIO(f.read()))
        elif loader == "torch":
            import torch
            torch.load(path, weights_only=False)
        elif loader == "numpy":
            import numpy
            numpy.load(path, allow_pickle=True)
        elif loader == "joblib":
            import joblib
            joblib.load(path)
        elif loader == "torch.jit":
            import torch
            os.chdir(scratch)
            torch.jit.load(path)
        elif loader == "keras":
            import keras
            keras.saving.load_model(path, safe_mode=False)
        elif loader == "7z-pickle":
            import py7zr, py7zr.io
            factory = py7zr.io.BytesIOFactory(1 << 26)
            with py7zr.SevenZipFile(path) as archive:
                archive.extractall(factory=factory)
            for product in factory.products.values():
                product.seek(0)
                pickle.loads(product.read())
    except Exception as exc:  # the payload ran first; what follows may fail
        pass
    finally:
        os.chdir(here)
    if os.path.exists(os.path.join(scratch, "modelguard-canary-ts")):
        open(canary, "w").write("x")
    results[path] = os.path.exists(canary)
print(json.dumps(results))
"""


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    marker = tmp_path / "scan-canary"
    monkeypatch.setenv("MODELGUARD_CANARY", str(marker))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where payloads write when unset
    monkeypatch.chdir(tmp_path)  # where the TorchScript payload would write
    yield marker
    assert not (tmp_path / "modelguard-canary-ts").exists()


def test_every_malicious_fixture_is_scanned_in_process_without_running_it(canary: Path) -> None:
    report = modelguard.scan(MALICIOUS, policy=Policy(), root=FIXTURES, workers=1)
    assert not canary.exists()
    assert not report.errors
    assert len(report.artifacts) == len(MALICIOUS)
    # Sanity: the scan really read the payloads (most are critical).
    flagged = [a for a in report.artifacts if (a.max_severity or Severity.INFO) >= Severity.MEDIUM]
    assert len(flagged) == len(MALICIOUS)


def test_folder_scan_with_parallel_workers_does_not_run_payloads(canary: Path) -> None:
    report = modelguard.scan(FIXTURES / "malicious", policy=Policy(), root=FIXTURES, workers=2)
    assert not canary.exists()
    assert len(report.artifacts) == len(MALICIOUS)


def test_cli_scan_in_subprocess_does_not_run_payloads(canary: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelguard", "scan", "--no-cache", *map(str, MALICIOUS)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
        check=False,
    )
    assert result.returncode == 1, result.stderr  # findings at or above the fail level
    assert "MG101" in result.stdout
    assert not canary.exists()
    assert not (canary.parent / "modelguard-canary-unset").exists()


def _load_in_child(jobs: list[tuple[str, str, str]], env: dict[str, str]) -> dict[str, bool]:
    out = subprocess.run(
        [sys.executable, "-c", LOADER_SCRIPT, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=True,
    )
    result: dict[str, bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_positive_control_loading_the_fixtures_runs_every_payload(tmp_path: Path) -> None:
    assert {e["live"] for e in LIVE} == {
        "pickle",
        "pickle-bytesio",
        "torch",
        "torch.jit",
        "numpy",
        "joblib",
        "keras",
        "7z-pickle",
    }
    jobs = [
        (str(FIXTURES / e["path"]), e["live"], str(tmp_path / f"marker-{i}"))
        for i, e in enumerate(LIVE)
    ]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("MODELGUARD_CANARY", None)
    fired = _load_in_child(jobs, env)
    assert fired == {path: True for path, _, _ in jobs}


def test_payloads_write_only_into_temp_folder_when_canary_unset(tmp_path: Path) -> None:
    """Unset MODELGUARD_CANARY: both payload kinds (Python and shell) fall back to $TMPDIR."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("MODELGUARD_CANARY", None)
    fallback = tmp_path / "modelguard-canary-unset"
    for name in ("pickle_builtins_exec_p4.pkl", "pickle_os_system_p0.pkl"):
        script = (
            "import os, pickle, sys; os.environ.pop('MODELGUARD_CANARY', None); "
            "pickle.load(open(sys.argv[1], 'rb'))"
        )
        subprocess.run(
            [sys.executable, "-c", script, str(FIXTURES / "malicious" / name)],
            env=env,
            check=True,
            timeout=60,
        )
        assert fallback.read_text() in ("x", ""), name
        fallback.unlink()
