"""modelguard: a supply-chain scanner for machine-learning model files.

Public API (everything the CLI does goes through these)::

    import modelguard
    report = modelguard.scan(["models/"])
    if report.exit_code(modelguard.Severity.HIGH):
        ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelguard._version import __version__
from modelguard.api import scan
from modelguard.errors import (
    BackdoorAnalysisError,
    ConfigError,
    FetchError,
    MissingExtra,
    ModelGuardError,
    UnreadableInput,
    UsageError,
    VerificationError,
)
from modelguard.findings import (
    ArtifactResult,
    Finding,
    InputError,
    Location,
    Report,
    Severity,
    Suppressed,
)
from modelguard.policy import Policy, load_policy

if TYPE_CHECKING:  # pragma: no cover
    from modelguard.backdoor.analysis import analyze_backdoor  # type: ignore[import-not-found,unused-ignore]
    from modelguard.supply.fetch import fetch
    from modelguard.supply.lock import lock
    from modelguard.supply.signing import sign
    from modelguard.supply.verify import verify

# Provenance and backdoor entry points load on first use: they pull in
# huggingface_hub, cryptography or torch, which a plain scan never needs.
_LAZY = {
    "fetch": "modelguard.supply.fetch",
    "lock": "modelguard.supply.lock",
    "verify": "modelguard.supply.verify",
    "sign": "modelguard.supply.signing",
    "analyze_backdoor": "modelguard.backdoor.analysis",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelguard' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ArtifactResult",
    "BackdoorAnalysisError",
    "ConfigError",
    "FetchError",
    "Finding",
    "InputError",
    "Location",
    "MissingExtra",
    "ModelGuardError",
    "Policy",
    "Report",
    "Severity",
    "Suppressed",
    "UnreadableInput",
    "UsageError",
    "VerificationError",
    "__version__",
    "analyze_backdoor",
    "fetch",
    "load_policy",
    "lock",
    "scan",
    "sign",
    "verify",
]
