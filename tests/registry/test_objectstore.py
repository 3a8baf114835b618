"""s3:// against moto's server: every object, by ranges, incrementally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelguard.cli import cli
from modelguard.errors import UsageError
from modelguard.policy import Policy
from modelguard.registry import RegistryOptions, scan_registry
from modelguard.registry.objectstore import object_identity, object_version


def flagged(report: Any) -> set[str]:
    return {a.path for a in report.artifacts if any(f.rule_id == "MG101" for f in a.findings)}


def test_bucket_scan_finds_every_malicious_object(
    bucket: Any, counted: Any, same_report: Any
) -> None:
    sequential = scan_registry(["s3://models/"], Policy(), RegistryOptions(workers=1, threads=1))
    assert len(sequential.report.artifacts) == 204 and sequential.report.errors == ()
    assert flagged(sequential.report) == bucket.malicious and len(bucket.malicious) >= 5
    counted.reset_counts()
    parallel = scan_registry(["s3://models"], Policy(), RegistryOptions(workers=2))
    assert not same_report(parallel.report, sequential.report)
    # Each object: one HEAD and ranged GETs of its first and last blocks, never all of it.
    assert counted.counts["HEAD object"] == 204
    total = 204 * (320 * 1024)
    assert counted.model_bytes == parallel.stats.bytes_read < total / 2
    groups = set(parallel.stats.groups.values())
    assert groups == {"s3://models/team-a", "s3://models/team-b"}


def test_prefix_filter_and_single_object(bucket: Any) -> None:
    team = scan_registry(["s3://models/team-a"], Policy(), RegistryOptions(workers=1)).report
    assert len(team.artifacts) == 102
    assert all(a.path.startswith("s3://models/team-a/") for a in team.artifacts)
    only = scan_registry(
        ["s3://models"], Policy(), RegistryOptions(workers=1, filters=("m000*.pt",))
    ).report
    names = sorted(a.path.rsplit("/", 1)[1] for a in only.artifacts)
    assert names == [f"m000{i}.pt" for i in range(10)]
    one = scan_registry(["s3://models/team-a/m0003.pt"], Policy(), RegistryOptions()).report
    assert [a.path for a in one.artifacts] == ["s3://models/team-a/m0003.pt"]
    assert [f.rule_id for f in one.findings] == ["MG101", "MG416"]


def test_rerun_reads_no_object_bytes_and_rescans_the_changed(
    bucket: Any, counted: Any, make_model: Any, tmp_path: Path, same_report: Any
) -> None:
    import s3fs

    options = RegistryOptions(workers=2, results_db=tmp_path / "results.sqlite")
    first = scan_registry(["s3://models"], Policy(), options)
    counted.reset_counts()
    second = scan_registry(["s3://models"], Policy(), options)
    assert not same_report(second.report, first.report) and second.stats.from_store == 204
    assert counted.counts["HEAD object"] == 0 and counted.object_gets == {}
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    changed = {"models/team-b/m0000.pt": (0, True), "models/team-a/m0003.pt": (3, False)}
    originals = {key: fs.cat_file(key) for key in changed}
    try:
        for key, (index, evil) in changed.items():
            fs.pipe_file(key, make_model(index, evil, 4096))
        counted.reset_counts()
        third = scan_registry(["s3://models"], Policy(), options)
    finally:
        for key, data in originals.items():
            fs.pipe_file(key, data)
    assert set(counted.object_gets) == {f"/{key}" for key in changed}
    assert third.stats.scanned == 2 and third.stats.from_store == 202
    assert "s3://models/team-b/m0000.pt" in flagged(third.report)
    assert "s3://models/team-a/m0003.pt" not in flagged(third.report)


def test_bucket_scan_through_the_cli(
    bucket: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(tmp_path / "cache"))
    args = ["scan", "s3://models/team-a", "-f", "json", "--no-cache", "--no-progress"]
    result = CliRunner().invoke(cli, [*args, "--workers", "1"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["summary"]["files"] == 102
    assert "s3://models/team-a" in result.stderr  # the summary's group column


def test_object_identity_names_path_and_version() -> None:
    info = {"ETag": '"abc"', "size": 10, "LastModified": None, "VersionId": "v1"}
    assert object_identity("s3", "b/k", info) == 's3:b/k:etag="abc":versionid=v1:size=10:modified='
    assert object_version({"generation": "17", "size": 3}) == "generation=17:size=3"
    assert object_identity("gs", "b/k", {"size": 3}) is None  # nothing vouches: always scanned


def test_missing_bucket_is_an_error_and_tags_are_refused(s3_server: Any) -> None:
    run = scan_registry(["s3://no-such-bucket/x"], Policy(), RegistryOptions())
    assert run.report.artifacts == ()
    assert run.report.errors[0].path == "s3://no-such-bucket/x"
    with pytest.raises(UsageError, match="tag filters"):
        scan_registry(["s3://b"], Policy(), RegistryOptions(filters=("tag:x",)))
    with pytest.raises(UsageError, match="bucket"):
        scan_registry(["s3://"], Policy(), RegistryOptions())
