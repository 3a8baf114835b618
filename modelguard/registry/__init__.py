"""Registry-scale scans: whole Hub organisations, object-store buckets, source lists.

The scanning itself is the remote range-reading path (:mod:`modelguard.remote`);
this package lists what to scan, remembers results by content identity
(:mod:`~modelguard.registry.store`), and spreads the work over a process pool
or a Ray cluster (:mod:`~modelguard.registry.executors`).
"""

from __future__ import annotations

from modelguard.registry.run import (
    Progress,
    ProgressCallback,
    RegistryOptions,
    RegistryRun,
    RegistryStats,
    scan_registry,
)
from modelguard.registry.sources import is_registry_source, read_source_list

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
