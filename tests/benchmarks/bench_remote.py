"""Remote scan cost: HTTP range reads vs a full download, on a loopback server.

    python tests/benchmarks/bench_remote.py [--size-mb 1024]

Makes a large torch checkpoint (a real ``torch.save`` of a state_dict when torch
is installed, else a zip laid out like one), serves it from memory on 127.0.0.1
twice (one server honours Range, one ignores it), and prints, per method, the
bytes that crossed the wire, the number of requests and the wall time. Loopback
has no latency and ~GB/s bandwidth, so real networks widen the gap: the range
scan's cost is a few round trips; the download's is the whole file.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path) -> object:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


helpers: Any = _load("integration_conftest", HERE.parent / "integrations" / "conftest.py")
servers: Any = _load("tests_conftest", HERE.parent / "conftest.py")

from modelguard.policy import Policy  # noqa: E402
from modelguard.remote.scan import RemoteOptions, scan_remote_sources  # noqa: E402


def make_checkpoint(size_mb: int) -> tuple[bytes, str]:
    try:
        import torch
    except ImportError:
        padding = size_mb * 1024 * 1024
        return helpers.torch_like_zip(helpers.benign_pickle(), padding), "torch-like zip"
    width = 4096
    layers = max(1, size_mb * 1024 * 1024 // (width * width * 4))
    state = {f"layer{i}.weight": torch.zeros(width, width) for i in range(layers)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), f"torch.save, {layers} tensors"


def plain_download(url: str) -> int:
    total = 0
    with urllib.request.urlopen(url) as response:
        while chunk := response.read(1 << 20):
            total += len(chunk)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()

    data, kind = make_checkpoint(args.size_mb)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickles = sum(i.file_size for i in archive.infolist() if i.filename.endswith(".pkl"))
    ranged = servers.LoopbackServer(ranges=True)
    plain = servers.LoopbackServer(ranges=False)
    options = RemoteOptions(allow_http=True)
    rows = []
    try:
        for label, server in (("range requests", ranged), ("full download (no Range)", plain)):
            url = server.serve("/model.pt", data, etag='"v1"')
            server.reset_counts()
            start = time.perf_counter()
            report, (detail,) = scan_remote_sources([url], Policy(), options)
            elapsed = time.perf_counter() - start
            assert not report.errors, report.errors
            assert detail.method == ("ranges" if server is ranged else "download")
            rows.append((f"scan: {label}", server.bytes_sent, len(server.requests), elapsed))
        plain.reset_counts()
        start = time.perf_counter()
        got = plain_download(f"{plain.url}/model.pt")
        rows.append(
            ("download only (urllib)", got, len(plain.requests), time.perf_counter() - start)
        )
    finally:
        ranged.close()
        plain.close()

    print(f"checkpoint: {len(data):,} bytes ({kind}); pickle member {pickles:,} bytes")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, loopback 127.0.0.1")
    print()
    print(
        f"{'method':<34} {'bytes transferred':>18} {'% of file':>10} {'requests':>9} {'seconds':>9}"
    )
    for label, sent, requests, seconds in rows:
        share = 100 * sent / len(data)
        print(f"{label:<34} {sent:>18,} {share:>9.3f}% {requests:>9} {seconds:>9.3f}")


if __name__ == "__main__":
    main()
