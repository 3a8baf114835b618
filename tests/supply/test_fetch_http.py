"""``fetch`` from URLs and zoo readmes over a loopback HTTP server.

In every failure case nothing unverified reaches the destination, no partial
file is left behind, and the exit code and message say what happened.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

import modelguard
from modelguard.cli.main import cli
from modelguard.errors import FetchError, UsageError
from modelguard.supply.download import DownloadOptions
from modelguard.supply.lockfile import read_lock

if TYPE_CHECKING:
    from conftest import LoopbackServer

WEIGHTS = bytes(range(256)) * 200
EVIL_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
FAST = DownloadOptions(timeout=5, retries=2, backoff=0.01)


def zoo_readme(url: str, sha1: str) -> str:
    return (
        "---\nname: Test Net\ncaffemodel: test_net.caffemodel\n"
        f"caffemodel_url: {url}\nlicense: unrestricted\nsha1: {sha1}\n---\n\n# Test Net\n"
    )


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "dest").mkdir()
    return tmp_path


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_fetch_url_with_sha256_places_and_locks(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS)
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    result = modelguard.fetch(
        url, "dest", sha256=digest, allow_http=True, lock="modelguard.lock", options=FAST
    )
    assert result.ok
    assert (work / "dest" / "weights.bin").read_bytes() == WEIGHTS
    assert listing(work / "dest") == ["weights.bin"]
    entry = read_lock(work / "modelguard.lock").by_path()["dest/weights.bin"]
    assert (entry.sha256, entry.size, entry.source) == (digest, len(WEIGHTS), url)
    assert [f.rule_id for f in result.report.findings if f.rule_id.startswith("MG4")] == ["MG400"]


def test_fetch_url_mismatch_leaves_nothing(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS)
    result = CliRunner().invoke(
        cli,
        ["fetch", url, "--dest", "dest", "--sha256", "0" * 64, "--allow-http", "--retries", "0"],
    )
    assert result.exit_code == 1
    assert listing(work / "dest") == []
    assert "0" * 64 in result.output
    assert hashlib.sha256(WEIGHTS).hexdigest() in result.output
    assert url in result.output
    assert "nothing was placed" in result.output


def test_zoo_readme_sha1_mismatch_story(server: LoopbackServer, work: Path) -> None:
    # The readme promises one file (sha1 A); the server returns another (sha1 B).
    promised = b"the weights the authors published" * 100
    served = b"different weights on the server!!" * 100
    url = server.serve("/zoo/test_net.caffemodel", served)
    sha1_promised = hashlib.sha1(promised).hexdigest()
    readme = work / "readme.md"
    readme.write_text(zoo_readme(url, sha1_promised))
    result = CliRunner().invoke(
        cli, ["fetch", str(readme), "--dest", "dest", "--allow-http", "--lock", "modelguard.lock"]
    )
    assert result.exit_code == 1
    assert listing(work / "dest") == []
    assert not (work / "modelguard.lock").exists()
    out = result.output
    assert f"sha1 mismatch: expected {sha1_promised}" in out
    assert hashlib.sha1(served).hexdigest() in out
    assert url in out and "zoo readme" in out


def test_zoo_readme_by_url_matches(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/zoo/test_net.caffemodel", WEIGHTS)
    readme_url = server.serve(
        "/gist/readme.md", zoo_readme(url, hashlib.sha1(WEIGHTS).hexdigest()).encode()
    )
    result = modelguard.fetch(
        readme_url, "dest", allow_http=True, lock="modelguard.lock", options=FAST
    )
    assert result.ok
    entry = read_lock(work / "modelguard.lock").by_path()["dest/test_net.caffemodel"]
    assert entry.sha1 == hashlib.sha1(WEIGHTS).hexdigest()
    assert entry.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    # The lock now pins the file: verify checks it later.
    assert modelguard.verify("dest").exit_code(modelguard.Severity.HIGH) == 0


def test_server_dying_mid_download_leaves_no_partial_file(
    server: LoopbackServer, work: Path
) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS, die_after=1000)
    result = CliRunner().invoke(
        cli, ["fetch", url, "--dest", "dest", "--allow-http", "--retries", "1", "--no-progress"]
    )
    assert result.exit_code == 2
    assert "connection lost" in result.output or "of 51200 bytes" in result.output
    assert "2 attempt(s)" in result.output
    assert listing(work / "dest") == []


def test_transient_errors_are_retried(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS, fail_first=2)
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    result = modelguard.fetch(url, "dest", sha256=digest, allow_http=True, options=FAST)
    assert result.ok
    assert server.routes["/m/weights.bin"].hits == 3


def test_http_404_is_not_retried(server: LoopbackServer, work: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        modelguard.fetch(server.url + "/missing.bin", "dest", allow_http=True, options=FAST)
    assert sum(1 for _, p, _ in server.requests if p == "/missing.bin") == 1


def test_size_cap(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS)
    result = CliRunner().invoke(
        cli, ["fetch", url, "--dest", "dest", "--allow-http", "--max-size", "1000"]
    )
    assert result.exit_code == 2
    assert "size cap" in result.output
    assert listing(work / "dest") == []


def test_interrupted_download_leaves_no_partial_file(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS * 40)

    def interrupt(name: str, done: int, total: int | None) -> None:
        if done > 100_000:
            raise KeyboardInterrupt

    options = DownloadOptions(timeout=5, retries=0, progress=interrupt)
    with pytest.raises(KeyboardInterrupt):
        modelguard.fetch(url, "dest", allow_http=True, options=options)
    assert listing(work / "dest") == []


def test_malicious_pickle_is_quarantined(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/m/model.pkl", EVIL_PICKLE)
    result = CliRunner().invoke(
        cli,
        [
            "fetch", url, "--dest", "dest", "--allow-http",
            "--sha256", hashlib.sha256(EVIL_PICKLE).hexdigest(), "--quarantine", "q",
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert listing(work / "dest") == []
    quarantined = list((work / "q").iterdir())
    assert len(quarantined) == 1 and quarantined[0].read_bytes() == EVIL_PICKLE
    assert not os.access(quarantined[0], os.W_OK) or os.geteuid() == 0
    assert "quarantined" in result.output
    assert "MG101" in result.output  # reported under its final name
    assert "dest/model.pkl" in result.output


def test_no_scan_places_the_pickle(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/m/model.pkl", EVIL_PICKLE)
    digest = hashlib.sha256(EVIL_PICKLE).hexdigest()
    result = modelguard.fetch(url, "dest", sha256=digest, allow_http=True, scan=False, options=FAST)
    assert result.ok
    assert (work / "dest" / "model.pkl").exists()


def test_unpinned_url_is_trusted_on_first_use_with_finding(
    server: LoopbackServer, work: Path
) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS)
    result = modelguard.fetch(url, "dest", allow_http=True, options=FAST)
    assert result.ok
    (finding,) = [f for f in result.report.findings if f.rule_id.startswith("MG4")]
    assert finding.rule_id == "MG409"
    assert hashlib.sha256(WEIGHTS).hexdigest() in finding.message


def test_lock_pins_a_refetch(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS)
    assert modelguard.fetch(url, "dest", allow_http=True, lock="modelguard.lock", options=FAST).ok
    # The server now returns different bytes for the same URL.
    server.serve("/m/weights.bin", WEIGHTS[::-1])
    result = modelguard.fetch(url, "dest", allow_http=True, lock="modelguard.lock", options=FAST)
    assert not result.placed
    assert [f.rule_id for f in result.report.findings if f.rule_id.startswith("MG4")] == ["MG401"]
    assert (work / "dest" / "weights.bin").read_bytes() == WEIGHTS  # old, verified copy kept


def test_plain_http_refused_without_flag(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS)
    with pytest.raises(UsageError, match="plain http is not allowed; `allow_http`"):
        modelguard.fetch(url, "dest")
    result = CliRunner().invoke(cli, ["fetch", url, "--dest", "dest"])
    assert result.exit_code == 2
    assert "--allow-http" in result.output
    assert server.requests == []


def test_zoo_readme_with_plain_http_model_url_needs_flag(work: Path) -> None:
    readme = work / "readme.md"
    readme.write_text(zoo_readme("http://dl.example.invalid/x.caffemodel", "a" * 40))
    with pytest.raises(UsageError, match="plain http is not allowed"):
        modelguard.fetch(str(readme), "dest")


def test_unsafe_zoo_file_name_rejected(work: Path) -> None:
    readme = work / "readme.md"
    readme.write_text(
        zoo_readme("https://x.invalid/a", "a" * 40).replace("test_net.caffemodel", "../evil")
    )
    result = modelguard.fetch(str(readme), "dest")  # refused before any download
    assert not result.placed
    (finding,) = result.report.findings
    assert finding.rule_id == "MG414" and "climbs out of its folder" in finding.message
    assert result.report.exit_code(modelguard.Severity.HIGH) == 1


def test_lock_outside_destination_tree_fails_before_download(
    server: LoopbackServer, work: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS)
    lock = tmp_path_factory.mktemp("other") / "modelguard.lock"
    with pytest.raises(UsageError, match="outside the lock file's folder"):
        modelguard.fetch(url, "dest", allow_http=True, lock=lock, options=FAST)
    assert server.requests == []
    assert listing(work / "dest") == []


def test_progress_bar_draws_on_request(server: LoopbackServer, work: Path) -> None:
    url = server.serve("/m/weights.bin", WEIGHTS)
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    result = CliRunner().invoke(
        cli, ["fetch", url, "--dest", "dest", "--allow-http", "--sha256", digest, "--progress"]
    )
    assert result.exit_code == 0, result.output
    # Off a terminal click prints only the bar's label; on one it draws the bar.
    assert result.stderr.startswith("weights.bin\n")
