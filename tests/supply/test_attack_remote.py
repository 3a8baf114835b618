"""Attacks through the network: downgrading redirects and cloaking servers.

A redirecting server sends an https request on to plain http (where anyone on
the path can change the bytes); a cloaking server shows a scanner other bytes
than a loader. Tests assert the exit code, nothing at the destination, no
partial file, and that the report names the problem.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

import modelguard
from modelguard.cli import cli
from modelguard.files import PARTIAL_PREFIX
from modelguard.supply.lockfile import read_lock

if TYPE_CHECKING:
    from conftest import LoopbackServer

CLEAN = b"\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."  # {"a": 1}
EVIL = b"cposix\nsystem\n(S'echo pwned'\ntR."  # never loaded: the scanner flags it


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(tmp_path / "mg-cache"))
    return tmp_path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def placed(work: Path) -> list[str]:
    dest = work / "dest"
    return sorted(p.name for p in dest.rglob("*")) if dest.exists() else []


def rule_ids(report: modelguard.Report) -> list[str]:
    return sorted(f.rule_id for f in report.findings)


# ---- redirects -----------------------------------------------------------------------------


@pytest.fixture
def downgrade(https_server: LoopbackServer, server: LoopbackServer) -> tuple[str, str]:
    """An https URL that redirects to the same file over plain http."""
    target = server.serve("/m/model.pkl", CLEAN)
    return https_server.redirect("/m/model.pkl", target), target


def test_fetch_refuses_a_redirect_to_plain_http(
    downgrade: tuple[str, str], server: LoopbackServer, work: Path
) -> None:
    """Before: fetch followed https -> http without --allow-http; the report named
    only the https URL."""
    url, target = downgrade
    digest = hashlib.sha256(CLEAN).hexdigest()
    result = invoke("fetch", url, "--sha256", digest, "--dest", "dest", "-f", "json")
    assert result.exit_code == 1, result.output
    (art,) = json.loads(result.stdout)["artifacts"]
    (finding,) = art["findings"]
    assert finding["rule_id"] == "MG417"
    assert url in finding["message"] and target in finding["message"]  # both hops named
    assert server.requests == []  # the plain-http hop was never taken
    assert placed(work) == []
    # Allowed explicitly, the file is placed and every hop is in the report.
    allowed = modelguard.fetch(url, "dest", sha256=digest, allow_http=True)
    assert allowed.ok
    (hops,) = [f for f in allowed.report.findings if f.rule_id == "MG413"]
    assert hops.message.endswith(f"{url} (302) → {target}")


def test_scan_refuses_a_redirect_to_plain_http(downgrade: tuple[str, str], work: Path) -> None:
    url, target = downgrade
    result = invoke("scan", url, "-f", "json", "--no-cache")
    assert result.exit_code == 1, result.output
    (art,) = json.loads(result.stdout)["artifacts"]
    assert [f["rule_id"] for f in art["findings"]] == ["MG417"]
    allowed = invoke("scan", url, "--allow-http", "-f", "json", "--no-cache")
    assert allowed.exit_code == 0, allowed.output
    (art,) = json.loads(allowed.stdout)["artifacts"]
    notes = {f["rule_id"]: f["message"] for f in art["findings"]}
    assert target in notes["MG413"] and "MG416" in notes


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x.pkl"])
def test_a_redirect_to_another_scheme_is_refused_always(
    server: LoopbackServer, work: Path, location: str
) -> None:
    url = server.redirect("/m/model.pkl", location)
    result = modelguard.fetch(url, "dest", allow_http=True)
    assert rule_ids(result.report) == ["MG417"] and not result.placed
    assert list(work.rglob(f"{PARTIAL_PREFIX}*")) == []


# ---- cloaking ------------------------------------------------------------------------------


def cloak_by_range(headers: Mapping[str, str]) -> bytes:
    return CLEAN if "Range" in headers else EVIL


def cloak_by_user_agent(headers: Mapping[str, str]) -> bytes:
    return CLEAN if headers.get("User-Agent", "").startswith("modelguard/") else EVIL


def test_range_cloaking_is_caught_by_fetch_not_by_a_range_scan(
    server: LoopbackServer, work: Path
) -> None:
    """A range scan sees what the server sends to range requests, and says so (MG416);
    fetch scans the bytes it places, so the evil full download is quarantined."""
    url = server.serve("/m/model.pkl", cloak=cloak_by_range)
    scanned = modelguard.scan(url, allow_http=True)
    assert rule_ids(scanned) == ["MG416"]  # cloaked: the scan cannot know
    assert "a server can show a scanner other bytes than a loader" in scanned.findings[0].message
    fetched = invoke(
        "fetch", url, "--dest", "dest", "--allow-http", "--lock", "modelguard.lock",
        "--quarantine", "q",
    )  # fmt: skip
    assert fetched.exit_code == 1, fetched.output
    assert "MG101" in fetched.output
    assert placed(work) == [] and not (work / "modelguard.lock").exists()


def test_user_agent_cloaking_cannot_swap_the_bytes_a_lock_vouches_for(
    server: LoopbackServer, work: Path
) -> None:
    """The server shows modelguard a clean file and everyone else an evil one. fetch
    places the bytes it scanned and locks their digest; the copy a loader downloads
    itself fails verify."""
    url = server.serve("/m/model.pkl", cloak=cloak_by_user_agent)
    assert rule_ids(modelguard.scan(url, allow_http=True)) == ["MG416"]
    result = modelguard.fetch(url, "dest", allow_http=True, lock="modelguard.lock")
    assert result.ok
    assert (work / "dest" / "model.pkl").read_bytes() == CLEAN
    entry = read_lock(work / "modelguard.lock").by_path()["dest/model.pkl"]
    assert (entry.sha256, entry.scan) == (hashlib.sha256(CLEAN).hexdigest(), "clean")
    # A loader fetching the same URL with its own client gets the evil bytes...
    request = urllib.request.Request(url, headers={"User-Agent": "python-requests/2.32"})
    with urllib.request.urlopen(request) as response:
        (work / "dest" / "model.pkl").write_bytes(response.read())
    # ...and verify refuses them.
    verified = invoke("verify", "dest")
    assert verified.exit_code == 1
    assert "MG404 size-mismatch  dest/model.pkl" in verified.output


def test_a_whole_file_scan_names_the_digest_fetch_then_enforces(
    plain_server: LoopbackServer, work: Path
) -> None:
    """Without range support the scan reads every byte and vouches for their sha256;
    pinned to it, fetch refuses the file the server serves later."""
    url = plain_server.serve("/m/model.pkl", CLEAN)
    report = modelguard.scan(url, allow_http=True)
    (basis,) = [f for f in report.findings if f.rule_id == "MG416"]
    digest = basis.evidence.removeprefix("sha256:") if basis.evidence else ""
    assert digest == hashlib.sha256(CLEAN).hexdigest()
    plain_server.serve("/m/model.pkl", EVIL)  # swapped after the scan
    result = invoke("fetch", url, "--sha256", digest, "--dest", "dest", "--allow-http")
    assert result.exit_code == 1
    assert "MG401" in result.output and digest in result.output
    assert placed(work) == []
