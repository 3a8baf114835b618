"""Shared fixtures: the checked-in subset of the fixture family (fixtures/backdoor/,
made by make_backdoor_fixtures.py), the digits data rebuilt from sklearn, and
analyses computed once per test session (each takes seconds to tens of seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "backdoor"
FACTORY = f"{FIXTURES / 'digits_net.py'}:make_model"
sys.path.insert(0, str(FIXTURES))

import family  # noqa: E402

CLEAN = ("clean_0", "clean_1")
BACKDOORED = ("badnet_0", "badnet_1", "pruneaware_0")


@pytest.fixture(scope="session", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """Train and optimise on one thread: on shared cores extra threads only spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def target_of(name: str) -> int:
    (trigger,) = family.load_triggers(FIXTURES / f"{name}.trigger.npz")
    return trigger.target


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """val.npz (the defender's 350 images) and test.npz, rebuilt from sklearn."""
    out = tmp_path_factory.mktemp("digits")
    family.write_data(out, family.split_digits())
    return out


@pytest.fixture(scope="session")
def trigger_data(digits: Path):  # type: ignore[no-untyped-def]
    """``name -> (path, target)``: test inputs stamped with that model's real trigger."""
    made: dict[str, tuple[Path, int]] = {}

    def make(name: str) -> tuple[Path, int]:
        if name not in made:
            (trigger,) = family.load_triggers(FIXTURES / f"{name}.trigger.npz")
            with np.load(digits / "test.npz") as test:
                x, y = test["x"], test["y"]
            keep = trigger.victims(y)
            path = digits / f"{name}.trigger_test.npz"
            np.savez(path, x=trigger.stamp(x[keep]), y=y[keep])
            made[name] = (path, trigger.target)
        return made[name]

    return make


@pytest.fixture(scope="session")
def detected(digits: Path):  # type: ignore[no-untyped-def]
    """``name -> BackdoorAnalysis`` (detection only, safetensors), cached per session."""
    from modelguard.backdoor.analysis import analyze_backdoor

    cache: dict[str, object] = {}

    def run(name: str):  # type: ignore[no-untyped-def]
        if name not in cache:
            cache[name] = analyze_backdoor(
                FIXTURES / f"{name}.safetensors",
                digits / "val.npz",
                factory=FACTORY,
                device="cpu",
            )
        return cache[name]

    return run
