"""The one language every check speaks: Severity, Location, Finding, Report.

Findings are plain frozen data. Scanners, verifiers and the backdoor analyzer
produce them; reporters render them; nothing here knows about file formats.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


class Severity(enum.IntEnum):
    """Ordered severities; comparisons follow the order (INFO < ... < CRITICAL)."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Parse a severity name case-insensitively; raise ValueError naming the value."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            choices = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (choose one of: {choices})") from None


@dataclass(frozen=True, order=True)
class Location:
    """Where a finding lies.

    ``path`` is the artifact as the user named it (relative to the scan root when
    the scan had a folder root, POSIX separators). ``members`` is the chain of
    archive members leading to the inner file (outermost first): a torch zip's
    pickle is ``path="model.pt", members=("archive/data.pkl",)``, and a
    checkpoint inside a tarball is ``members=("ckpt.pt", "archive/data.pkl")``.
    ``offset`` is the byte offset inside the innermost member (or the file when
    there is no member).
    """

    path: str
    members: tuple[str, ...] = ()
    offset: int | None = None

    @property
    def member_path(self) -> str:
        """Members joined with ``!/`` (the jar-URL convention), empty for a plain file."""
        return "!/".join(self.members)

    def __str__(self) -> str:
        text = self.path
        if self.members:
            text += "!/" + self.member_path
        if self.offset is not None:
            text += f"@{self.offset}"
        return text

    def inside(self, member: str) -> Location:
        """The location of ``member`` inside this one (offset dropped)."""
        return Location(self.path, (*self.members, member), None)

    def at(self, offset: int | None) -> Location:
        return replace(self, offset=offset)


@dataclass(frozen=True)
class Finding:
    """One observation about one artifact, tied to a documented rule."""

    rule_id: str
    severity: Severity
    message: str
    location: Location
    evidence: str | None = None

    def fingerprint(self) -> str:
        """A stable identity for de-duplication and SARIF partialFingerprints.

        Built from the rule, the artifact, the member chain and the evidence, not
        the message wording or byte offset, so it survives rewording and small
        re-serialisations of the same payload.
        """
        parts = [self.rule_id, self.location.path, *self.location.members, self.evidence or ""]
        # surrogatepass: undecodable file names (os.fsdecode) and lone surrogates
        # in pickle strings still hash; valid text hashes exactly as plain UTF-8.
        data = "\x1f".join(parts).encode("utf-8", errors="surrogatepass")
        return hashlib.sha256(data).hexdigest()[:32]


@dataclass(frozen=True)
class Suppressed:
    """A finding that policy chose to ignore, with the policy's stated reason."""

    finding: Finding
    reason: str


@dataclass(frozen=True)
class InputError:
    """An input that could not be read at all (missing, permission denied, I/O error)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class Skipped:
    """A file that was looked at and is not a model: no result, only a reason (``-v``, JSON)."""

    path: str
    reason: str


@dataclass(frozen=True)
class ArtifactResult:
    """Everything known about one top-level artifact after the checks ran."""

    path: str
    format: str
    size: int
    findings: tuple[Finding, ...] = ()
    suppressed: tuple[Suppressed, ...] = ()
    # Symbolic links (display paths) the scan reached this file through; the
    # file itself is reported under its own path, where its bytes are.
    links: tuple[str, ...] = ()
    # The backdoor analyzer's numbers (JSON-ready; docs/json-report.md), when it ran.
    backdoor: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)


@dataclass(frozen=True)
class Report:
    """The result of a run: artifacts with their findings, plus unreadable inputs."""

    artifacts: tuple[ArtifactResult, ...] = ()
    errors: tuple[InputError, ...] = ()
    root: str = "."
    tool_version: str = field(default_factory=lambda: _version())
    skipped: tuple[Skipped, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for a in self.artifacts for f in a.findings)

    @property
    def suppressed(self) -> tuple[Suppressed, ...]:
        return tuple(s for a in self.artifacts for s in a.suppressed)

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def at_or_above(self, threshold: Severity) -> Iterator[Finding]:
        return (f for f in self.findings if f.severity >= threshold)

    def exit_code(self, fail_on: Severity | None) -> int:
        """0 clean, 1 findings at or above ``fail_on``, 2 when some input was unreadable.

        ``fail_on=None`` means never fail on findings (report only).
        """
        if self.errors:
            return 2
        if fail_on is not None and any(True for _ in self.at_or_above(fail_on)):
            return 1
        return 0

    def merged(self, other: Report) -> Report:
        """Combine two reports (e.g. verify + scan) into one, artifacts merged by path."""
        by_path: dict[str, ArtifactResult] = {a.path: a for a in self.artifacts}
        for art in other.artifacts:
            if art.path in by_path:
                mine = by_path[art.path]
                fmt = mine.format if mine.format != "unknown" else art.format
                by_path[art.path] = ArtifactResult(
                    path=art.path,
                    format=fmt,
                    size=max(mine.size, art.size),
                    findings=mine.findings + art.findings,
                    suppressed=mine.suppressed + art.suppressed,
                    links=mine.links + tuple(x for x in art.links if x not in mine.links),
                    backdoor=mine.backdoor if mine.backdoor is not None else art.backdoor,
                )
            else:
                by_path[art.path] = art
        return Report(
            artifacts=tuple(by_path.values()),
            errors=self.errors + other.errors,
            root=self.root,
            tool_version=self.tool_version,
            skipped=self.skipped + tuple(s for s in other.skipped if s.path not in by_path),
        )


def count_by_severity(findings: Iterable[Finding]) -> dict[Severity, int]:
    counts = dict.fromkeys(Severity, 0)
    for f in findings:
        counts[f.severity] += 1
    return counts


def _version() -> str:
    from modelguard._version import __version__

    return __version__
