"""Remote scans: ``hf://`` repositories, ``https://`` files and object stores, read by ranges.

The scanning code lives in :mod:`modelguard.remote.scan`; this module stays
import-light so that ``modelguard.scan`` can tell remote sources from paths
without loading an HTTP client.
"""

from __future__ import annotations

REMOTE_PREFIXES = ("hf://", "https://", "http://", "s3://", "gs://")


def is_remote(source: object) -> bool:
    """True for ``hf://``, ``http(s)://``, ``s3://`` and ``gs://`` sources (else a local path)."""
    return isinstance(source, str) and source.startswith(REMOTE_PREFIXES)
