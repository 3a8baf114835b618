"""Shared fixtures: the trained models and data shipped in fixtures/backdoor/
(made by fixtures/backdoor/make_backdoor_fixtures.py), and analysis results
computed once per test session (each run takes seconds on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "backdoor"
FACTORY = f"{FIXTURES / 'digits_net.py'}:make_model"
TARGET = 0


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def analyse_badnet():  # type: ignore[no-untyped-def]
    from modelguard.backdoor.api import analyze_backdoor

    def run(name: str = "badnet.ts", **kwargs):  # type: ignore[no-untyped-def]
        if name.endswith((".safetensors", ".pt")):
            kwargs.setdefault("factory", FACTORY)
        return analyze_backdoor(
            FIXTURES / name,
            FIXTURES / "val.npz",
            trigger_data=FIXTURES / "test_trigger.npz",
            target=TARGET,
            test_data=FIXTURES / "test.npz",
            device="cpu",
            **kwargs,
        )

    return run


@pytest.fixture(scope="session")
def badnet_analysis(analyse_badnet):  # type: ignore[no-untyped-def]
    return analyse_badnet("badnet.ts")


@pytest.fixture(scope="session")
def pruneaware_analysis(analyse_badnet):  # type: ignore[no-untyped-def]
    return analyse_badnet("pruneaware.ts")
