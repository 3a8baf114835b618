"""A hand-built Report that exercises every part of the reporters.

Tests take the ``make_report`` fixture (a factory) rather than importing from
this file, so nothing depends on how pytest names conftest modules.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from modelguard.findings import (
    ArtifactResult,
    Finding,
    InputError,
    Location,
    Report,
    Severity,
    Suppressed,
)

ROOT = "/work/project"  # tests that check the root repeat this literal


def build_report(*, errors: bool = True, root: str = ROOT) -> Report:
    evil = Location("models/evil.pt")
    pickle_member = evil.inside("archive/data.pkl")
    return Report(
        artifacts=(
            ArtifactResult(
                "models/evil.pt",
                "pytorch-zip",
                1234,
                findings=(
                    Finding(
                        "MG101",
                        Severity.CRITICAL,
                        "pickle imports os.system",
                        pickle_member.at(17),
                        evidence="os.system",
                    ),
                    Finding(
                        "MG106",
                        Severity.LOW,
                        "3 bytes follow the pickle STOP",
                        pickle_member.at(90),
                        evidence="trailing:3",
                    ),
                    Finding("MG107", Severity.INFO, "2 pickle streams", evil, evidence="streams:2"),
                ),
                suppressed=(
                    Suppressed(
                        Finding(
                            "MG102",
                            Severity.MEDIUM,
                            "pickle imports mypkg.nets.MyNet",
                            pickle_member.at(40),
                            evidence="mypkg.nets.MyNet",
                        ),
                        "vetted by security review",
                    ),
                ),
            ),
            ArtifactResult("weights.safetensors", "safetensors", 10),
            ArtifactResult(
                "/elsewhere/outside model.bin",
                "unknown",
                5,
                findings=(
                    Finding(
                        "MG001",
                        Severity.INFO,
                        "format not recognised; skipped",
                        Location("/elsewhere/outside model.bin"),
                        evidence="unknown",
                    ),
                ),
            ),
        ),
        errors=(InputError("gone.pt", "no such file or directory"),) if errors else (),
        root=root,
        tool_version="9.9.9",
    )


@pytest.fixture
def make_report() -> Callable[..., Report]:
    """``make_report(errors=True, root=ROOT)`` builds the sample Report."""
    return build_report
