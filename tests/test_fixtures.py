"""The shipped fixtures scan as their manifest says, and the generator reproduces them.

``fixtures/manifest.json`` (written by ``fixtures/make_fixtures.py``) lists every
fixture with its expected verdict: benign files yield nothing at or above MEDIUM;
malicious files yield each expected rule at its expected severity.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import modelguard
from modelguard.findings import Report, Severity
from modelguard.policy import Policy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "manifest.json").read_text())
ENTRIES: list[dict[str, Any]] = MANIFEST["files"]

# Fixtures the scanners do not yet judge correctly. strict xfail: when a scanner
# is fixed the test fails until the entry is removed here.
KNOWN_GAPS: dict[str, str] = {}


def _param(entry: dict[str, Any]) -> Any:
    marks = []
    if entry["path"] in KNOWN_GAPS:
        marks.append(pytest.mark.xfail(reason=KNOWN_GAPS[entry["path"]], strict=True))
    return pytest.param(entry, id=entry["path"], marks=marks)


def _scan(*paths: Path) -> Report:
    return modelguard.scan(list(paths), policy=Policy(), root=FIXTURES, workers=1)


def _describe(report: Report) -> list[str]:
    return [f"{f.rule_id} {f.severity.label} {f.location}: {f.message}" for f in report.findings]


def test_manifest_lists_every_fixture_file() -> None:
    listed = {e["path"] for e in ENTRIES} | {c for e in ENTRIES for c in e["companions"]}
    on_disk = {
        p.relative_to(FIXTURES).as_posix()
        for sub in ("benign", "malicious")
        for p in (FIXTURES / sub).rglob("*")
        if p.is_file()
    }
    assert listed == on_disk


def test_manifest_covers_both_kinds_and_every_expected_rule_exists() -> None:
    from modelguard.rules import get as get_rule

    kinds = {e["kind"] for e in ENTRIES}
    assert kinds == {"benign", "malicious"}
    for entry in ENTRIES:
        if entry["kind"] == "malicious":
            assert entry["expect"], f"{entry['path']} has no expected rule"
        for exp in entry["expect"]:
            get_rule(exp["rule"])  # raises on an unknown id
            Severity.parse(exp["severity"])


@pytest.mark.parametrize("entry", [_param(e) for e in ENTRIES if e["kind"] == "malicious"])
def test_malicious_fixture_yields_expected_rules(entry: dict[str, Any]) -> None:
    report = _scan(FIXTURES / entry["path"])
    assert not report.errors
    got = {(f.rule_id, f.severity) for f in report.findings}
    for exp in entry["expect"]:
        wanted = (exp["rule"], Severity.parse(exp["severity"]))
        assert wanted in got, f"missing {wanted}; findings: {_describe(report)}"
    assert all(f.rule_id != "MG004" for f in report.findings), _describe(report)


@pytest.mark.parametrize("entry", [_param(e) for e in ENTRIES if e["kind"] == "benign"])
def test_benign_fixture_has_nothing_at_or_above_medium(entry: dict[str, Any]) -> None:
    report = _scan(FIXTURES / entry["path"])
    assert not report.errors
    assert len(report.artifacts) == 1
    serious = [f for f in report.findings if f.severity >= Severity.MEDIUM]
    assert not serious, _describe(report)
    # The scanner recognised the format (MG001 would mean it skipped the file).
    assert all(f.rule_id != "MG001" or f.location.members for f in report.findings)


def test_sha256_in_manifest_matches_files() -> None:
    import hashlib

    for entry in ENTRIES:
        data = (FIXTURES / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]


# Conditions that change float kernels on a real machine, simulated here: the
# thread count, and the vector instructions ATen dispatches to. The shipped bytes
# must not depend on either (fixtures are built from exact values; see
# make_fixtures.exact_values).
MACHINES = {
    "1-thread": ({}, ["--threads", "1"]),
    "2-threads-no-simd": ({"ATEN_CPU_CAPABILITY": "default"}, ["--threads", "2"]),
}


@pytest.mark.parametrize("machine", list(MACHINES))
def test_generator_reproduces_identical_bytes(tmp_path: Path, machine: str) -> None:
    """Byte-identical regeneration: every file, the manifest and the README.

    The generator pins what would vary (zip/tar/gzip timestamps, legacy torch's
    address-based storage keys, TorchScript's hash-ordered constants, every float
    value); it re-execs itself with PYTHONHASHSEED=0. Bytes depend on the pinned
    library versions only.
    """
    extra_env, args = MACHINES[machine]
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONHASHSEED", "ATEN_CPU_CAPABILITY")
    }
    env.update(extra_env)
    # The generator runs from a copy elsewhere, as from another checkout: no byte
    # may depend on where the sources lie (TorchScript records source paths).
    generator = tmp_path / "checkout" / "fixtures"
    generator.mkdir(parents=True)
    for script in FIXTURES.glob("*.py"):
        shutil.copy2(script, generator / script.name)
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(generator / "make_fixtures.py"), "--out", str(out), *args],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
    )
    regenerated = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    shipped = sorted(
        p.relative_to(FIXTURES).as_posix()
        for sub in ("benign", "malicious")
        for p in (FIXTURES / sub).rglob("*")
        if p.is_file()
    )
    assert regenerated == sorted([*shipped, "manifest.json", "README.md"])
    made_with = json.loads((out / "manifest.json").read_text())["generated_with"]
    if made_with != MANIFEST["generated_with"]:
        pytest.skip(
            f"fixtures were written by {MANIFEST['generated_with']}, this run has {made_with}: "
            "bytes are only comparable on the same library versions"
        )
    different = [
        rel for rel in regenerated if (out / rel).read_bytes() != (FIXTURES / rel).read_bytes()
    ]
    assert different == []


# Runs in a child: every benign fixture opens with the loader it was made for, so
# the fixtures are faithful samples of their formats (these are our own benign
# files; the scanner itself never loads anything).
LOADERS_SCRIPT = r"""
import json, sys, zipfile
import h5py, joblib, numpy, onnx, safetensors.numpy, torch
for rel in json.loads(sys.argv[2]):
    path = sys.argv[1] + "/" + rel
    name = rel.rsplit("/", 1)[-1]
    if name.startswith("torchscript_"):
        torch.jit.load(path)
    elif name.startswith("torch_legacy_tar_"):
        torch.load(path, weights_only=False)  # the tar format predates weights_only
    elif name.startswith("torch_"):
        torch.load(path, weights_only=True)
    elif name.endswith((".npy", ".npz")):
        numpy.load(path, allow_pickle=name.startswith("numpy_object_"))
    elif name.endswith(".safetensors"):
        safetensors.numpy.load_file(path)
    elif name.endswith(".onnx"):
        onnx.checker.check_model(onnx.load(path))
    elif name.endswith(".h5"):
        with h5py.File(path, "r") as f:
            json.loads(f.attrs["model_config"])
    elif name.endswith(".keras"):
        with zipfile.ZipFile(path) as z:
            json.loads(z.read("config.json"))
    elif name.endswith(".joblib"):
        joblib.load(path)
    else:
        continue
    print(rel)
"""


def test_benign_fixtures_open_with_their_own_loaders() -> None:
    benign = [e["path"] for e in ENTRIES if e["kind"] == "benign"]
    out = subprocess.run(
        [sys.executable, "-c", LOADERS_SCRIPT, str(FIXTURES), json.dumps(benign)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    loaded = set(out.stdout.split())
    # Everything but the plain pickles and compressed/tar containers has a loader here.
    assert len(loaded) >= 20
    assert "benign/torch_legacy_tar_mlp_state_dict.pt" in loaded
    assert "benign/onnx_mlp_external.onnx" in loaded
