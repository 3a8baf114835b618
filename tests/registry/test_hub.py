"""hf://ORG against the loopback fake Hub: every repository, every malicious model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelguard.findings import Report
from modelguard.policy import Policy
from modelguard.registry import RegistryOptions, scan_registry


def findings_of(report: Report) -> list[tuple[str, str, tuple[str, ...], str | None]]:
    return [
        (f.location.path, f.rule_id, f.location.members, f.evidence)
        for a in report.artifacts
        for f in a.findings
    ]


def flagged_repos(report: Report) -> set[str]:
    return {
        a.path.removeprefix("hf://").split("@")[0]
        for a in report.artifacts
        if any(f.rule_id == "MG101" for f in a.findings)
    }


def test_owner_scan_finds_every_malicious_model(
    hub_fleet: Any, tmp_path: Path, same_report: Any
) -> None:
    sequential = scan_registry(["hf://acme"], Policy(), RegistryOptions(workers=1, threads=1))
    assert len(sequential.report.artifacts) == 2 * len(hub_fleet.hub.repos) == 420
    assert sequential.report.errors == ()
    assert flagged_repos(sequential.report) == hub_fleet.malicious
    assert len(hub_fleet.malicious) >= 5
    parallel = scan_registry(["hf://acme"], Policy(), RegistryOptions(workers=2))
    # Finding for finding, in the same order.
    assert not same_report(parallel.report, sequential.report)
    # Range reads: far less than the models' bytes crossed the wire.
    total = sum(len(d) for r in hub_fleet.hub.repos.values() for d in r.files.values())
    assert parallel.stats.bytes_read < total / 2


def test_filters_on_names_and_tags(hub_fleet: Any) -> None:
    options = RegistryOptions(workers=1, filters=("tag:vision",))
    tagged = scan_registry(["hf://acme"], Policy(), options).report
    repos = {a.path.split("@")[0] for a in tagged.artifacts}
    assert repos == {f"hf://acme/model-{i:04d}" for i in range(0, 210, 10)}
    named = scan_registry(
        ["hf://acme"], Policy(), RegistryOptions(workers=1, filters=("model-000*",))
    ).report
    assert {a.path.split("@")[0] for a in named.artifacts} == {
        f"hf://acme/model-{i:04d}" for i in range(10)
    }


def test_single_repo_and_path(hub_fleet: Any) -> None:
    repo = hub_fleet.hub.repos["acme/model-0007"]
    run = scan_registry(["hf://acme/model-0007/pytorch_model.bin"], Policy(), RegistryOptions())
    (artifact,) = run.report.artifacts
    assert artifact.path == f"hf://acme/model-0007@{repo.sha}/pytorch_model.bin"
    assert [f.rule_id for f in artifact.findings] == ["MG101", "MG416"]  # and how it was read
    missing = scan_registry(["hf://acme/model-0007/nothing"], Policy(), RegistryOptions())
    assert missing.report.artifacts == ()
    assert "no file 'nothing'" in missing.report.errors[0].message


def test_unknown_owner_and_repo_are_errors_not_crashes(fake_hub: Any) -> None:
    run = scan_registry(["hf://nobody", "hf://nobody/nothing"], Policy(), RegistryOptions())
    assert run.report.artifacts == ()
    nobody, nothing = run.report.errors
    assert (nobody.path, nobody.message) == ("hf://nobody", "no model repository")
    assert nothing.path == "hf://nobody/nothing" and "404" in nothing.message
    assert run.report.exit_code(None) == 2  # a typo in an owner's name never passes


def test_listing_is_paginated(hub_fleet: Any) -> None:
    scan_registry(["hf://acme"], Policy(), RegistryOptions(workers=1, filters=("nomatch",)))
    assert hub_fleet.hub.counts["list"] == -(-210 // hub_fleet.hub.PAGE)


@pytest.mark.parametrize("bad", ["hf://", "hf://a b", "hf://a/b@"])
def test_malformed_sources(fake_hub: Any, bad: str) -> None:
    from modelguard.errors import UsageError

    with pytest.raises(UsageError):
        scan_registry([bad], Policy(), RegistryOptions())
