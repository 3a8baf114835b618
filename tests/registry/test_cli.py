"""``modelguard scan`` at registry scale: hf://ORG, s3://, --from, summary, jsonl, extras."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from modelguard.cli import cli


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def invoke(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["scan", "--no-progress", *args], input=stdin)


def test_owner_scan_jsonl_and_summary(hub_fleet: Any, cache_dir: Path) -> None:
    result = invoke("hf://acme", "-f", "jsonl", "--workers", "2")
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    artifacts = [line for line in lines if line["type"] == "artifact"]
    assert len(artifacts) == 420 and lines[-1]["type"] == "summary"
    assert lines[-1]["verdict"] == "fail" and lines[-1]["summary"]["files"] == 420
    flagged = {a["path"].split("@")[0] for a in artifacts if a["max_severity"] == "critical"}
    assert flagged == {f"hf://{r}" for r in hub_fleet.malicious}
    # The summary table on stderr: by verdict, then by organisation.
    assert f"fail     {len(hub_fleet.malicious):>9}" in result.stderr
    assert f"pass     {420 - len(hub_fleet.malicious):>9}" in result.stderr
    assert "acme" in result.stderr
    # The default results store lives in the cache folder; a rerun reads no model bytes.
    assert (cache_dir / "registry-results-v1.sqlite").is_file()
    hub_fleet.hub.reset_counts()
    again = invoke("hf://acme", "-f", "jsonl")
    assert again.stdout == result.stdout and hub_fleet.hub.model_bytes == 0
    assert "       420" in again.stderr  # all 420 from the store


def test_sources_from_a_file_and_stdin(hub_fleet: Any, cache_dir: Path, tmp_path: Path) -> None:
    listing = tmp_path / "sources.txt"
    listing.write_text("# nightly\nhf://acme/model-0007\n\nhf://acme/model-0008/config.json\n")
    result = invoke("--from", str(listing), "-f", "json", "--no-cache")
    assert result.exit_code == 1, result.output
    paths = [a["path"].split("@")[0] for a in json.loads(result.stdout)["artifacts"]]
    assert paths == ["hf://acme/model-0007", "hf://acme/model-0007", "hf://acme/model-0008"]
    piped = invoke("--from", "-", "-f", "json", "--no-cache", stdin=listing.read_text())
    assert piped.stdout == result.stdout
    missing = invoke("--from", str(tmp_path / "nope.txt"))
    assert missing.exit_code == 2 and "nope.txt: no such source list" in missing.output


def test_results_db_option(hub_fleet: Any, cache_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.sqlite"
    result = invoke("hf://acme/model-0001", "--no-cache", "--results-db", str(db))
    assert result.exit_code == 0, result.output
    assert db.is_file() and not cache_dir.exists()


def test_bad_options_are_one_line_errors(fake_hub: Any, cache_dir: Path) -> None:
    bad = invoke("hf://acme", "--executor", "spark")
    assert bad.exit_code == 2
    assert bad.output.strip() == (
        "modelguard: error: executor 'spark': expected 'pool', 'ray' or 'ray://HOST:PORT'"
    )
    bad_filter = invoke("hf://acme", "--filter", "tag:")
    assert bad_filter.exit_code == 2 and "tag:NAME" in bad_filter.output


def test_executor_ray_without_the_extra(
    fake_hub: Any, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    result = invoke("hf://acme", "--executor", "ray")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [
        "modelguard: error: running scans on Ray needs the 'ray' package: "
        "pip install 'modelguard[ray]'"
    ]
    assert fake_hub.counts == {}  # refused before any request
