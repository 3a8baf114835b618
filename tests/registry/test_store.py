"""The results store: reruns read no model bytes for unchanged artifacts, and resume."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from modelguard.errors import UsageError
from modelguard.findings import Report
from modelguard.policy import IgnoreRule, Policy
from modelguard.registry import Progress, RegistryOptions, scan_registry
from modelguard.registry.store import ResultStore


def models_of(report: Report) -> dict[str, Any]:
    return {a.path: a for a in report.artifacts}


def test_rerun_reads_no_model_bytes_and_rescans_exactly_the_changed(
    hub_fleet: Any, make_model: Any, tmp_path: Path, same_report: Any
) -> None:
    model_bytes = make_model
    hub = hub_fleet.hub
    options = RegistryOptions(workers=2, results_db=tmp_path / "results.sqlite")
    first = scan_registry(["hf://acme"], Policy(), options)
    assert first.stats.scanned == 420 and first.stats.from_store == 0

    hub.reset_counts()
    second = scan_registry(["hf://acme"], Policy(), options)
    assert not same_report(second.report, first.report)
    assert second.stats.from_store == 420 and second.stats.scanned == 0
    assert hub.counts["file"] == 0 and hub.model_bytes == 0  # not one byte of a model
    assert hub.counts["api"] == 0  # each commit's file list came from the store too

    # Three repositories change: one turns malicious, one benign, one gets a new config.
    hub.change("acme/model-0001", "pytorch_model.bin", model_bytes(1, True, 4096))
    hub.change("acme/model-0007", "pytorch_model.bin", model_bytes(7, False, 4096))
    hub.change("acme/model-0010", "config.json", b'{"hidden": 99}')
    hub.reset_counts()
    third = scan_registry(["hf://acme"], Policy(), options)
    assert sorted(hub.file_requests) == [
        "acme/model-0001/pytorch_model.bin",
        "acme/model-0007/pytorch_model.bin",
        "acme/model-0010/config.json",
    ]
    assert third.stats.scanned == 3 and third.stats.from_store == 417
    assert hub.counts["api"] == 3  # only the changed repositories were listed again
    fresh = scan_registry(["hf://acme"], Policy(), RegistryOptions(workers=1))
    assert not same_report(third.report, fresh.report)  # the store changes nothing in it
    flagged = {
        path.split("@")[0]
        for path, artifact in models_of(third.report).items()
        if any(f.rule_id == "MG101" for f in artifact.findings)
    }
    assert "hf://acme/model-0001" in flagged and "hf://acme/model-0007" not in flagged


def test_identical_files_in_many_repos_are_scanned_once(fake_hub: Any, tmp_path: Path) -> None:
    shared = b'{"same": true}'
    for index in range(12):
        fake_hub.add(f"acme/copy-{index}", {"config.json": shared})
    options = RegistryOptions(workers=1, threads=1, results_db=tmp_path / "r.sqlite")
    run = scan_registry(["hf://acme"], Policy(), options)
    assert run.stats.scanned == 1 and run.stats.duplicates == 11
    assert sum(fake_hub.file_requests.values()) == 1
    paths = [f.location.path for a in run.report.artifacts for f in a.findings]
    assert len(set(paths)) == 12  # each copy's findings name the copy


def test_interrupted_run_resumes(hub_fleet: Any, tmp_path: Path, same_report: Any) -> None:
    db = tmp_path / "results.sqlite"
    options = RegistryOptions(workers=1, results_db=db)

    def stop_after_100(event: Progress) -> None:
        if event.phase == "scanning" and event.done >= 100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan_registry(["hf://acme"], Policy(), options, stop_after_100)
    with sqlite3.connect(db) as connection:
        kept = connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert kept >= 100  # everything scanned before the stop was committed
    hub_fleet.hub.reset_counts()
    resumed = scan_registry(["hf://acme"], Policy(), options)
    assert resumed.stats.from_store == kept
    assert resumed.stats.scanned == 420 - kept == len(hub_fleet.hub.file_requests)
    fresh = scan_registry(["hf://acme"], Policy(), RegistryOptions()).report
    assert not same_report(resumed.report, fresh)


def test_policy_applies_on_every_run_and_settings_key_the_store(
    hub_fleet: Any, tmp_path: Path
) -> None:
    db = tmp_path / "results.sqlite"
    scan_registry(["hf://acme"], Policy(), RegistryOptions(workers=1, results_db=db))
    ignoring = Policy(ignores=(IgnoreRule("MG101", "vetted"),))
    run = scan_registry(["hf://acme"], ignoring, RegistryOptions(workers=1, results_db=db))
    assert run.stats.from_store == 420  # suppressions do not change what is stored
    assert not any(f.rule_id == "MG101" for f in run.report.findings)
    assert len([s for s in run.report.suppressed if s.finding.rule_id == "MG101"]) >= 5
    allowing = Policy(allow_globals=frozenset({"posix.system"}))
    other = scan_registry(["hf://acme"], allowing, RegistryOptions(workers=1, results_db=db))
    assert other.stats.from_store == 0  # another scan setting: nothing reused


def test_corrupt_rows_are_misses_and_a_bad_file_is_an_error(
    hub_fleet: Any, tmp_path: Path, same_report: Any
) -> None:
    db = tmp_path / "results.sqlite"
    first = scan_registry(["hf://acme/model-0007"], Policy(), RegistryOptions(results_db=db))
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE results SET findings = 'not json'")
    again = scan_registry(["hf://acme/model-0007"], Policy(), RegistryOptions(results_db=db))
    assert again.stats.from_store == 0 and not same_report(again.report, first.report)
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello, I am not SQLite\n" * 100)
    with pytest.raises(UsageError, match=r"notes\.txt"):
        ResultStore.open(not_a_db, Policy())
