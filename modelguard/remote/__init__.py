"""Remote scans: ``hf://`` repositories and ``https://`` files, read by HTTP ranges."""

from __future__ import annotations

from modelguard.remote.scan import RemoteOptions, RemoteScan, is_remote, scan_remote_sources

__all__ = ["RemoteOptions", "RemoteScan", "is_remote", "scan_remote_sources"]
