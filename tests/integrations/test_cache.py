"""The scan-result cache: hits skip the scanner, any change or damage forces a rescan."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelguard.api import scan
from modelguard.cli.main import cli
from modelguard.policy import IgnoreRule, Policy
from modelguard.rules.scan import PICKLE_DANGEROUS_IMPORT
from modelguard.scan import cache as cache_module
from modelguard.scan import engine
from modelguard.scan.cache import ScanCache, default_cache_dir
from modelguard.scan.context import Input, ScanContext


class CountingDispatch:
    """Stands in for formats.dispatch: reports MG101 when the bytes contain EVIL."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, inp: Input, ctx: ScanContext) -> str:
        self.calls.append(inp.name)
        data = inp.read_at(0, inp.size)
        if b"EVIL" in data:
            ctx.report(
                PICKLE_DANGEROUS_IMPORT,
                "dangerous import os.system",
                offset=3,
                evidence="os.system",
                member="archive/data.pkl",
            )
        ctx.set_format("fake")
        return "fake"


@pytest.fixture
def dispatch(monkeypatch: pytest.MonkeyPatch) -> CountingDispatch:
    fake = CountingDispatch()
    monkeypatch.setattr(engine, "dispatch", fake)
    return fake


@pytest.fixture
def store(tmp_path: Path) -> ScanCache:
    return ScanCache(tmp_path / "cache")


def entries(store: ScanCache) -> list[Path]:
    return sorted(store.directory.rglob("*.json"))


def test_unchanged_file_is_answered_from_the_cache(
    tmp_path: Path, dispatch: CountingDispatch, store: ScanCache
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"xxEVILxx")
    first = scan(model, policy=Policy(), root=tmp_path, cache=store)
    second = scan(model, policy=Policy(), root=tmp_path, cache=store)
    assert dispatch.calls == ["model.pt"]
    assert first.artifacts == second.artifacts
    assert [f.rule_id for f in second.findings] == ["MG101"]
    assert second.findings[0].location.members == ("archive/data.pkl",)
    assert second.findings[0].location.offset == 3
    assert second.artifacts[0].format == "fake"
    assert len(entries(store)) == 1


def test_api_does_not_cache_unless_asked(tmp_path: Path, dispatch: CountingDispatch) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"benign")
    os.environ[cache_module.ENV_CACHE_DIR] = str(tmp_path / "cache")
    try:
        scan(model, policy=Policy(), root=tmp_path)
        scan(model, policy=Policy(), root=tmp_path)
    finally:
        del os.environ[cache_module.ENV_CACHE_DIR]
    assert len(dispatch.calls) == 2
    assert not (tmp_path / "cache").exists()


def test_changed_content_with_forged_mtime_is_rescanned(
    tmp_path: Path, dispatch: CountingDispatch, store: ScanCache
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"xxGOODxx")
    before = model.stat()
    assert not scan(model, policy=Policy(), root=tmp_path, cache=store).findings
    # Same size, mtime put back as `touch -r` would: only ctime tells the change.
    model.write_bytes(b"xxEVILxx")
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert model.stat().st_mtime_ns == before.st_mtime_ns
    report = scan(model, policy=Policy(), root=tmp_path, cache=store)
    assert [f.rule_id for f in report.findings] == ["MG101"]
    assert len(dispatch.calls) == 2


def test_replaced_file_is_rescanned(
    tmp_path: Path, dispatch: CountingDispatch, store: ScanCache
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"xxGOODxx")
    scan(model, policy=Policy(), root=tmp_path, cache=store)
    replacement = tmp_path / "new.pt"
    replacement.write_bytes(b"xxEVILxx")
    os.replace(replacement, model)
    report = scan(model, policy=Policy(), root=tmp_path, cache=store)
    assert [f.rule_id for f in report.findings] == ["MG101"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: "",
        lambda text: text[: len(text) // 2],
        lambda text: "not json at all {",
        lambda text: "[]",
        lambda text: text.replace("MG101", "MG999"),  # checksum no longer matches
        lambda text: "\udcff" + text,  # undecodable garbage
    ],
    ids=["empty", "truncated", "garbage", "wrong-shape", "tampered", "binary"],
)
def test_damaged_entry_is_ignored_and_rescanned(
    tmp_path: Path, dispatch: CountingDispatch, store: ScanCache, damage
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"xxEVILxx")
    scan(model, policy=Policy(), root=tmp_path, cache=store)
    (entry,) = entries(store)
    entry.write_bytes(damage(entry.read_text()).encode("utf-8", "surrogateescape"))
    report = scan(model, policy=Policy(), root=tmp_path, cache=store)
    assert len(dispatch.calls) == 2
    assert [f.rule_id for f in report.findings] == ["MG101"]


def test_entry_with_valid_checksum_but_empty_findings_for_other_key_is_not_trusted(
    tmp_path: Path, dispatch: CountingDispatch, store: ScanCache
) -> None:
    """An entry copied over from another file (checksum intact) is not trusted."""
    evil, good = tmp_path / "evil.pt", tmp_path / "good.pt"
    evil.write_bytes(b"xxEVILxx")
    good.write_bytes(b"xxGOODxx")
    scan(evil, policy=Policy(), root=tmp_path, cache=store)
    (evil_entry,) = entries(store)
    scan(good, policy=Policy(), root=tmp_path, cache=store)
    (good_entry,) = [e for e in entries(store) if e != evil_entry]
    evil_entry.write_bytes(good_entry.read_bytes())
    report = scan(evil, policy=Policy(), root=tmp_path, cache=store)
    assert [f.rule_id for f in report.findings] == ["MG101"]
    assert dispatch.calls.count("evil.pt") == 2


def test_new_version_or_rules_miss(
    tmp_path: Path, dispatch: CountingDispatch, store: ScanCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"benign")
    scan(model, policy=Policy(), root=tmp_path, cache=store)
    monkeypatch.setattr(cache_module, "__version__", "99.0")
    scan(model, policy=Policy(), root=tmp_path, cache=store)
    monkeypatch.setattr(cache_module, "ruleset_digest", lambda: "other-rules")
    scan(model, policy=Policy(), root=tmp_path, cache=store)
    assert len(dispatch.calls) == 3


def test_scanner_settings_are_part_of_the_key(
    tmp_path: Path, dispatch: CountingDispatch, store: ScanCache
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"benign")
    scan(model, policy=Policy(), root=tmp_path, cache=store)
    scan(model, policy=Policy(allow_globals=frozenset({"a.b"})), root=tmp_path, cache=store)
    assert len(dispatch.calls) == 2


def test_policy_and_root_apply_to_cached_results(
    tmp_path: Path, dispatch: CountingDispatch, store: ScanCache
) -> None:
    model = tmp_path / "sub" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(b"xxEVILxx")
    scan(model, policy=Policy(), root=tmp_path, cache=store)
    ignoring = Policy(ignores=(IgnoreRule("MG101", "vetted"),))
    report = scan(model, policy=ignoring, root=tmp_path / "sub", cache=store)
    assert len(dispatch.calls) == 1
    assert report.findings == ()
    (suppressed,) = report.suppressed
    assert suppressed.reason == "vetted"
    assert suppressed.finding.location.path == "model.pt"


def test_scanner_errors_are_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: ScanCache
) -> None:
    calls: list[str] = []

    def broken(inp: Input, ctx: ScanContext) -> str:
        calls.append(inp.name)
        raise RuntimeError("bug")

    monkeypatch.setattr(engine, "dispatch", broken)
    model = tmp_path / "model.pt"
    model.write_bytes(b"anything")
    for _ in range(2):
        report = scan(model, policy=Policy(), root=tmp_path, cache=store)
        assert [f.rule_id for f in report.findings] == ["MG004"]
    assert len(calls) == 2
    assert entries(store) == []


def test_unwritable_cache_folder_does_not_break_the_scan(
    tmp_path: Path, dispatch: CountingDispatch
) -> None:
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    model = tmp_path / "model.pt"
    model.write_bytes(b"xxEVILxx")
    report = scan(model, policy=Policy(), root=tmp_path, cache=ScanCache(blocker / "cache"))
    assert [f.rule_id for f in report.findings] == ["MG101"]


def test_many_files_parallel_then_all_hits(tmp_path: Path, store: ScanCache) -> None:
    """Worker processes store entries; the next run answers all of them from the cache."""
    models = tmp_path / "models"
    models.mkdir()
    for index in range(10):
        (models / f"f{index}.bin").write_bytes(b"\x00unknown format %d" % index)
    first = scan(models, policy=Policy(), root=tmp_path, cache=store, workers=2)
    assert len(first.artifacts) == 10
    assert len(entries(store)) == 10
    second = scan(models, policy=Policy(), root=tmp_path, cache=store, workers=2)
    assert first.artifacts == second.artifacts


def test_cache_folder_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MODELGUARD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "modelguard"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "modelguard"
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"


def test_cli_caches_by_default_and_no_cache_bypasses(
    tmp_path: Path, dispatch: CountingDispatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    Path("model.pt").write_bytes(b"xxEVILxx")
    runner = CliRunner()
    args = ["scan", "model.pt", "--format", "json", "--no-progress"]
    first = runner.invoke(cli, args)
    second = runner.invoke(cli, args)
    third = runner.invoke(cli, [*args, "--no-cache"])
    assert (first.exit_code, second.exit_code, third.exit_code) == (1, 1, 1)
    assert json.loads(first.output)["artifacts"] == json.loads(second.output)["artifacts"]
    assert dispatch.calls == ["model.pt", "model.pt"]  # the second run was a hit
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1


def test_old_entries_are_pruned_once_a_day(
    tmp_path: Path, dispatch: CountingDispatch, store: ScanCache
) -> None:
    old, new = tmp_path / "old.pt", tmp_path / "new.pt"
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    scan(old, policy=Policy(), root=tmp_path, cache=store)  # first store prunes (nothing)
    (old_entry,) = entries(store)
    month_ago = old_entry.stat().st_mtime - 31 * 86400
    os.utime(old_entry, (month_ago, month_ago))
    scan(new, policy=Policy(), root=tmp_path, cache=store)
    assert old_entry.exists()  # pruned at most once a day: not yet due
    now = time.time() + 2 * 86400  # two days on: a sweep is due
    assert store.prune_if_due(now=now) == 1
    assert not old_entry.exists()
    assert len(entries(store)) == 1  # the recent entry stays
    assert store.prune_if_due(now=now + 60) == 0  # and the next sweep waits a day


def test_display_name_in_messages_follows_the_scan_root(
    tmp_path: Path, store: ScanCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real (unpatched) scan of an unknown format: MG001's message names the file."""
    blob = tmp_path / "sub" / "notes.bin"
    blob.parent.mkdir()
    blob.write_bytes(b"\x00\x01 not a model")
    first = scan(blob, policy=Policy(), root=tmp_path, cache=store)
    (finding,) = first.findings
    assert finding.rule_id == "MG001" and finding.message.startswith("sub/notes.bin: ")
    monkeypatch.setattr(engine, "dispatch", None)  # a rescan would now fail (MG004)
    again = scan(blob, policy=Policy(), root=tmp_path / "sub", cache=store)
    (cached,) = again.findings
    assert cached.location.path == "notes.bin"
    assert cached.message == finding.message.replace("sub/notes.bin", "notes.bin", 1)
