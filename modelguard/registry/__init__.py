"""Registry-scale scans: whole Hub organisations, object-store buckets, source lists.

The scanning itself is the remote range-reading path (:mod:`modelguard.remote`);
this package lists what to scan, remembers results by content identity
(:mod:`~modelguard.registry.store`), and spreads the work over a process pool
or a Ray cluster (:mod:`~modelguard.registry.executors`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelguard.registry.run import (
        Progress,
        ProgressCallback,
        RegistryOptions,
        RegistryRun,
        RegistryStats,
        scan_registry,
    )
    from modelguard.registry.sources import is_registry_source, read_source_list

# Loaded on first use: `modelguard scan FILE` asks is_registry_source() and must
# not pay for the registry engine (store, executors, Hub client) on every run.
_HOMES = {
    "Progress": "run",
    "ProgressCallback": "run",
    "RegistryOptions": "run",
    "RegistryRun": "run",
    "RegistryStats": "run",
    "scan_registry": "run",
    "is_registry_source": "sources",
    "read_source_list": "sources",
}

__all__ = [
    "Progress",
    "ProgressCallback",
    "RegistryOptions",
    "RegistryRun",
    "RegistryStats",
    "is_registry_source",
    "read_source_list",
    "scan_registry",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
