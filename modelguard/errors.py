"""Typed exceptions. Library code raises these; only the CLI turns them into
messages and exit codes (2 for usage and unreadable input)."""

from __future__ import annotations


class ModelGuardError(Exception):
    """Base class for every error modelguard raises on purpose."""


class UsageError(ModelGuardError):
    """The caller asked for something impossible (bad option, bad config)."""


class ConfigError(UsageError):
    """A policy file is invalid; the message names the file and the key."""


class UnreadableInput(ModelGuardError):
    """An input path is missing or cannot be read."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class MissingExtra(ModelGuardError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the '{module}' package: pip install 'modelguard[{extra}]'"
        )
        self.extra = extra
        self.module = module


class VerificationError(ModelGuardError):
    """A digest or signature did not match; the artifact must not be used."""


class FetchError(ModelGuardError):
    """A download failed (network, size cap, server error)."""


class BackdoorAnalysisError(ModelGuardError):
    """The backdoor analyzer could not run on the given model or data."""
