"""Remote scans over a loopback HTTP server, with and without Range support."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from modelguard.api import scan
from modelguard.cli.main import cli
from modelguard.errors import UsageError
from modelguard.findings import Finding, Report
from modelguard.policy import Policy
from modelguard.remote import is_remote
from modelguard.remote import scan as remote_scan
from modelguard.remote.http_range import BLOCK_BYTES
from modelguard.remote.scan import RemoteOptions, scan_remote_sources
from modelguard.remote.throttle import RetryPolicy

LOOPBACK = RemoteOptions(allow_http=True, timeout=10)
PADDING = 8 * 1024 * 1024  # tensor bytes a range scan must not fetch
# Provenance notes every remote result carries (what was read, where redirects led).
NOTES = {"MG413", "MG416"}


def scanned(report: Report) -> list[Finding]:
    """The scan's own findings, without the provenance notes."""
    return [f for f in report.findings if f.rule_id not in NOTES]


def summary(report: Report) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted((f.rule_id, f.location.path, f.location.members) for f in scanned(report))


@pytest.fixture
def evil_checkpoint(models: SimpleNamespace) -> bytes:
    data: bytes = models.torch_like_zip(models.malicious_pickle(), padding_bytes=PADDING)
    return data


def test_range_scan_reads_only_directory_and_pickle(
    range_server: Any, evil_checkpoint: bytes
) -> None:
    url = range_server.serve("/models/evil.pt", evil_checkpoint, etag='"v1"')
    report, (detail,) = scan_remote_sources([url], Policy(), LOOPBACK)
    assert [(f.rule_id, f.location.members) for f in scanned(report)] == [
        ("MG101", ("archive/data.pkl",))
    ]
    assert report.findings[0].location.path == url
    assert detail.method == "ranges"
    # The result says what it vouches for: the ETag, not a digest it never computed.
    (basis,) = [f for f in report.findings if f.rule_id == "MG416"]
    assert basis.evidence == 'etag:"v1"' and detail.digests == {"etag": '"v1"'}
    assert "digest of the whole file is not known" in basis.message
    assert detail.size == len(evil_checkpoint)
    # Every request was a range request, and together they moved a few blocks at most.
    assert all(rng is not None for _, _, rng in range_server.requests)
    assert range_server.bytes_sent == detail.stats.bytes_received
    assert range_server.bytes_sent <= 4 * BLOCK_BYTES < len(evil_checkpoint) // 20


def test_ranges_cut_short_are_retried_and_change_no_finding(
    range_server: Any, evil_checkpoint: bytes
) -> None:
    """A connection lost mid-range (the probe's first block included) is retried;
    the report states the bytes scanned, not the wire's, so it is the same."""
    clean_url = range_server.serve("/clean/evil.pt", evil_checkpoint, etag='"v1"')
    cut_url = range_server.serve("/cut/evil.pt", evil_checkpoint, etag='"v1"', cut_ranges=3)
    retrying = RemoteOptions(allow_http=True, timeout=10, retry=RetryPolicy(base_delay=0.01))
    clean, (clean_detail,) = scan_remote_sources([clean_url], Policy(), retrying)
    cut, (cut_detail,) = scan_remote_sources([cut_url], Policy(), retrying)
    assert cut.errors == () and cut_detail.method == "ranges"
    assert range_server.routes["/cut/evil.pt"].cut_ranges == 0  # every cut happened
    assert cut_detail.stats.bytes_received > clean_detail.stats.bytes_received
    assert cut_detail.stats.bytes_scanned == clean_detail.stats.bytes_scanned
    renamed = [(f.rule_id, f.message.replace("/cut/", "/clean/")) for f in cut.findings]
    assert renamed == [(f.rule_id, f.message) for f in clean.findings]


def test_no_range_support_falls_back_to_full_download(
    plain_server: Any, evil_checkpoint: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    url = plain_server.serve("/evil.pt", evil_checkpoint)
    report, (detail,) = scan_remote_sources([url], Policy(), LOOPBACK)
    assert detail.method == "download"
    assert [f.rule_id for f in report.findings] == ["MG101", "MG416"]
    digest = hashlib.sha256(evil_checkpoint).hexdigest()
    assert detail.digests == {"sha256": digest}
    assert report.findings[1].evidence == f"sha256:{digest}"
    assert report.findings[0].location.path == url
    assert plain_server.bytes_sent == len(evil_checkpoint)
    assert len(plain_server.requests) == 1  # the probe's 200 response was the download
    assert list(tmp_path.iterdir()) == []  # the temporary copy is gone


def test_both_paths_find_the_same_as_a_local_scan(
    range_server: Any, plain_server: Any, models: SimpleNamespace, tmp_path: Path
) -> None:
    files = {
        "good.pt": models.torch_like_zip(models.benign_pickle(), padding_bytes=300_000),
        "evil.pt": models.torch_like_zip(models.malicious_pickle(), padding_bytes=300_000),
        "legacy.pkl": models.malicious_text_pickle(),
        "weights.pkl": models.benign_pickle(),
    }
    for name, data in files.items():
        models.write(tmp_path / name, data)
        range_server.serve(f"/{name}", data)
        plain_server.serve(f"/{name}", data)
    local = scan([tmp_path / n for n in files], policy=Policy(), root=tmp_path)
    expected = summary(local)
    assert expected  # the malicious files were found
    for server in (range_server, plain_server):
        urls = [f"{server.url}/{n}" for n in files]
        report, _ = scan_remote_sources(urls, Policy(), LOOPBACK)
        got = [(r, p.rsplit("/", 1)[1], m) for r, p, m in summary(report)]
        assert got == expected
        assert {a.format for a in report.artifacts} == {a.format for a in local.artifacts}


def test_real_torch_checkpoint_by_ranges(range_server: Any, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 4))
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    data = path.read_bytes()
    url = range_server.serve("/model.pt", data)
    report, (detail,) = scan_remote_sources([url], Policy(), LOOPBACK)
    assert scanned(report) == []
    assert report.artifacts[0].format == scan(path, policy=Policy()).artifacts[0].format
    assert detail.method == "ranges"
    assert detail.stats.bytes_received < len(data) // 2


def test_file_replaced_during_scan_is_a_read_error(
    range_server: Any, evil_checkpoint: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = range_server.serve("/evil.pt", evil_checkpoint, etag='"v1"')
    real_probe = remote_scan.probe

    def probe_then_replace(*args: Any, **kwargs: Any) -> Any:
        answer = real_probe(*args, **kwargs)
        range_server.serve("/evil.pt", evil_checkpoint[::-1], etag='"v2"')
        return answer

    monkeypatch.setattr(remote_scan, "probe", probe_then_replace)
    report, _ = scan_remote_sources([url], Policy(), LOOPBACK)
    assert report.artifacts == ()
    (error,) = report.errors
    assert "file changed on the server" in error.message
    assert report.exit_code(None) == 2


def test_inconsistent_content_range_is_a_read_error(
    range_server: Any, evil_checkpoint: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = range_server.serve("/evil.pt", evil_checkpoint)
    real_probe = remote_scan.probe

    def probe_then_shrink(*args: Any, **kwargs: Any) -> Any:
        answer = real_probe(*args, **kwargs)
        range_server.serve("/evil.pt", evil_checkpoint + b"appended")  # no ETag to notice
        return answer

    monkeypatch.setattr(remote_scan, "probe", probe_then_shrink)
    report, _ = scan_remote_sources([url], Policy(), LOOPBACK)
    assert not report.findings
    assert "Content-Range" in report.errors[0].message


def test_missing_file_and_empty_file(range_server: Any) -> None:
    empty = range_server.serve("/empty.bin", b"")
    missing = f"{range_server.url}/nothing.pt"
    report, details = scan_remote_sources([missing, empty], Policy(), LOOPBACK)
    assert [d.method for d in details] == ["failed", "download"]
    assert "HTTP 404" in report.errors[0].message
    (artifact,) = report.artifacts
    assert artifact.size == 0


def test_plain_http_needs_allow_http(range_server: Any, evil_checkpoint: bytes) -> None:
    url = range_server.serve("/evil.pt", evil_checkpoint)
    with pytest.raises(UsageError, match="`allow_http`"):
        scan_remote_sources([url], Policy(), RemoteOptions())
    assert range_server.requests == []
    with pytest.raises(UsageError, match="credentials"):
        scan_remote_sources([url.replace("http://", "http://user:pw@")], Policy(), LOOPBACK)


def test_api_mixes_local_and_remote(
    range_server: Any, evil_checkpoint: bytes, models: SimpleNamespace, tmp_path: Path
) -> None:
    local = models.write(tmp_path / "good.pkl", models.benign_pickle())
    url = range_server.serve("/evil.pt", evil_checkpoint)
    report = scan([local, url], policy=Policy(), root=tmp_path, allow_http=True)
    assert {a.path for a in report.artifacts} == {"good.pkl", url}
    assert report.exit_code(Policy().fail_on) == 1


def test_cli_scans_urls(
    range_server: Any, evil_checkpoint: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELGUARD_CACHE_DIR", str(tmp_path / "cache"))
    url = range_server.serve("/evil.pt", evil_checkpoint)
    runner = CliRunner()
    refused = runner.invoke(cli, ["scan", url, "--no-progress"])
    assert refused.exit_code == 2
    assert "--allow-http" in refused.output
    result = runner.invoke(cli, ["scan", url, "--allow-http", "--format", "json", "--no-progress"])
    assert result.exit_code == 1, result.output
    parsed = json.loads(result.stdout)
    assert [a["path"] for a in parsed["artifacts"]] == [url]
    missing = runner.invoke(cli, ["scan", f"{range_server.url}/gone.pt", "--allow-http"])
    assert missing.exit_code == 2
    assert "HTTP 404" in missing.output


# ---- hf:// ---------------------------------------------------------------------------


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub(server: Any, repo: str, files: dict[str, bytes], cdn: Any = None) -> None:
    """The slice of the Hub API that model_info(files_metadata=True) and /resolve/ use."""
    siblings = []
    for name, data in files.items():
        siblings.append(
            {
                "rfilename": name,
                "size": len(data),
                "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
                "lfs": {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "pointerSize": 134,
                },
            }
        )
        # /resolve/ redirects to a "CDN" path, as the Hub does for LFS files.
        cdn_path = f"/cdn/{hashlib.sha256(data).hexdigest()}"
        host = cdn or server
        host.serve(cdn_path, data, etag=f'"{hashlib.sha256(data).hexdigest()}"')
        server.redirect(
            f"/{repo}/resolve/{COMMIT}/{name}",
            cdn_path if cdn is None else f"{cdn.url}{cdn_path}",
        )
    info = {"id": repo, "sha": COMMIT, "siblings": siblings}
    server.json(f"/api/models/{repo}", info)
    server.json(f"/api/models/{repo}/revision/main", info)


@pytest.fixture
def hub_env(range_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("HF_ENDPOINT", range_server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return range_server


def test_hf_repository_scanned_by_ranges(
    hub_env: Any, evil_checkpoint: bytes, models: SimpleNamespace
) -> None:
    fake_hub(
        hub_env,
        "acme/tiny",
        {
            "pytorch_model.bin": evil_checkpoint,
            "config.json": b'{"hidden": 4}',
            "extra/weights.pkl": models.benign_pickle(),
        },
    )
    report, details = scan_remote_sources(["hf://acme/tiny"], Policy(), RemoteOptions())
    assert {d.source for d in details} == {
        f"hf://acme/tiny@{COMMIT}/pytorch_model.bin",
        f"hf://acme/tiny@{COMMIT}/config.json",
        f"hf://acme/tiny@{COMMIT}/extra/weights.pkl",
    }
    assert all(d.method == "ranges" for d in details)
    assert sorted((f.rule_id, f.location.path) for f in scanned(report)) == [
        ("MG001", f"hf://acme/tiny@{COMMIT}/config.json"),  # JSON: not a model format
        ("MG101", f"hf://acme/tiny@{COMMIT}/pytorch_model.bin"),
    ]
    assert sum(d.stats.bytes_received for d in details) < len(evil_checkpoint) // 20


def test_hf_single_file_path(hub_env: Any, models: SimpleNamespace) -> None:
    fake_hub(hub_env, "acme/tiny", {"a.pkl": models.benign_pickle(), "b.pkl": b"x"})
    report, details = scan_remote_sources(["hf://acme/tiny/a.pkl"], Policy(), RemoteOptions())
    assert [d.source for d in details] == [f"hf://acme/tiny@{COMMIT}/a.pkl"]
    assert scanned(report) == []
    # The Hub's LFS sha256 is named as what the metadata vouches for, unverified by ranges.
    (basis,) = [f for f in report.findings if f.rule_id == "MG416"]
    digest = hashlib.sha256(models.benign_pickle()).hexdigest()
    assert f"Hub LFS sha256 publishes sha256 {digest}" in basis.message
    assert details[0].digests["sha256"] == digest


def test_is_remote() -> None:
    assert is_remote("hf://a/b") and is_remote("https://x/y.pt") and is_remote("http://x/y")
    assert not is_remote("models/https.pt") and not is_remote(Path("hf://x"))


def test_hf_token_is_not_sent_to_a_cdn_on_another_origin(
    hub_env: Any, evil_checkpoint: bytes
) -> None:
    cdn = type(hub_env)(ranges=True)
    try:
        fake_hub(hub_env, "acme/private", {"model.bin": evil_checkpoint}, cdn=cdn)
        options = RemoteOptions(hf_token="hf_secret")
        report, (detail,) = scan_remote_sources(["hf://acme/private"], Policy(), options)
        assert [f.rule_id for f in report.findings] == ["MG101", "MG413", "MG416"]
        assert detail.method == "ranges"
        assert cdn.requests and all(auth is None for auth in cdn.authorizations)
        assert "Bearer hf_secret" in hub_env.authorizations
    finally:
        cdn.close()
