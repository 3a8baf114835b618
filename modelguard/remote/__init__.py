"""Remote scans: ``hf://`` repositories and ``https://`` files, read by HTTP ranges.

The scanning code lives in :mod:`modelguard.remote.scan`; this module stays
import-light so that ``modelguard.scan`` can tell remote sources from paths
without loading an HTTP client.
"""

from __future__ import annotations

REMOTE_PREFIXES = ("hf://", "https://", "http://")


def is_remote(source: object) -> bool:
    """True for ``hf://`` and ``http(s)://`` sources (everything else is a local path)."""
    return isinstance(source, str) and source.startswith(REMOTE_PREFIXES)
