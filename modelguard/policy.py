"""Policy: what fails a run, what is allowed, what is ignored and why.

Read from ``[tool.modelguard]`` in pyproject.toml (found from the working folder
upwards) or from ``--config FILE``. A config file may be a pyproject.toml or a
plain TOML file whose top level holds the same keys::

    [tool.modelguard]
    fail-on = "high"                       # info|low|medium|high|critical|never
    allow-globals = ["mypkg.nets.MyNet", "mypkg.layers.*"]
    exclude = ["third_party/**", "*.tmp"]

    [[tool.modelguard.ignore]]
    rule = "MG102"
    paths = ["models/legacy/*.pt"]          # optional; default: everywhere
    reason = "vetted by security review 2026-03"

    [tool.modelguard.limits]
    max-member-bytes = 2147483648
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from modelguard.errors import ConfigError
from modelguard.findings import Finding, Severity
from modelguard.limits import Limits

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

NEVER = "never"


def parse_fail_on(text: str) -> Severity | None:
    """``never`` disables failing on findings; otherwise a severity name."""
    if text.strip().lower() == NEVER:
        return None
    return Severity.parse(text)


def path_matches(rel_path: str, patterns: Iterable[str]) -> bool:
    """True if ``rel_path`` (POSIX) or any folder above it matches a glob pattern.

    ``*`` crosses folder boundaries, so ``third_party/*`` excludes everything below
    third_party/, and ``**`` is accepted as a synonym.
    """
    pure = PurePosixPath(rel_path)
    candidates = [str(pure), *(str(p) for p in pure.parents if str(p) != ".")]
    return any(
        fnmatch.fnmatchcase(candidate, pattern.replace("**", "*"))
        for pattern in patterns
        for candidate in candidates
    )


@dataclass(frozen=True)
class IgnoreRule:
    rule: str
    reason: str
    paths: tuple[str, ...] = ()

    def applies_to(self, finding: Finding) -> bool:
        if finding.rule_id != self.rule:
            return False
        return not self.paths or path_matches(finding.location.path, self.paths)


@dataclass(frozen=True)
class ScanSettings:
    """The settings that change what the scanner reports (and so key the scan cache).

    Everything else in a Policy (fail level, suppressions, excludes) is applied to
    findings after the scan.
    """

    limits: Limits = field(default_factory=Limits)
    allow_globals: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Policy:
    fail_on: Severity | None = Severity.HIGH
    allow_globals: frozenset[str] = frozenset()
    ignores: tuple[IgnoreRule, ...] = ()
    exclude: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    source: str | None = None  # the file the policy came from, for messages
    # Scan also folders that no model scan wants (.git, venvs, node_modules, ...) and
    # what .gitignore names (see modelguard.files.DEFAULT_EXCLUDES).
    no_default_excludes: bool = False

    @property
    def settings(self) -> ScanSettings:
        return ScanSettings(limits=self.limits, allow_globals=self.allow_globals)

    def is_excluded(self, rel_path: str) -> bool:
        return bool(self.exclude) and path_matches(rel_path, self.exclude)

    def suppression_for(self, finding: Finding) -> str | None:
        """The reason a finding is ignored by policy, or None if it stands."""
        for ignore in self.ignores:
            if ignore.applies_to(finding):
                return ignore.reason
        return None


def policy_from_mapping(table: Mapping[str, Any], *, source: str) -> Policy:
    """Validate a ``[tool.modelguard]`` table; every error names the file and key."""
    known = {"fail-on", "allow-globals", "ignore", "exclude", "limits"}
    for key in table:
        if key not in known:
            raise ConfigError(f"{source}: unknown key {key!r} in [tool.modelguard]")

    fail_on: Severity | None = Severity.HIGH
    if "fail-on" in table:
        value = table["fail-on"]
        if not isinstance(value, str):
            raise ConfigError(f"{source}: fail-on must be a string")
        try:
            fail_on = parse_fail_on(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: fail-on: {exc}") from None

    allow = _string_list(table.get("allow-globals", []), "allow-globals", source)
    for name in allow:
        if "." not in name:
            raise ConfigError(
                f"{source}: allow-globals entry {name!r} must be 'module.name' or 'module.*'"
            )
    exclude = _string_list(table.get("exclude", []), "exclude", source)

    ignores: list[IgnoreRule] = []
    raw_ignores = table.get("ignore", [])
    if not isinstance(raw_ignores, list):
        raise ConfigError(f"{source}: ignore must be an array of tables")
    for index, entry in enumerate(raw_ignores):
        where = f"{source}: ignore[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with rule and reason")
        unknown = set(entry) - {"rule", "reason", "paths"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        rule = entry.get("rule")
        reason = entry.get("reason")
        if not isinstance(rule, str) or not rule:
            raise ConfigError(f"{where}: 'rule' (a rule id such as MG102) is required")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(f"{where}: ignoring {rule} needs a non-empty 'reason'")
        paths = _string_list(entry.get("paths", []), f"ignore[{index}].paths", source)
        ignores.append(IgnoreRule(rule=rule, reason=reason.strip(), paths=tuple(paths)))

    limits_table = table.get("limits", {})
    if not isinstance(limits_table, dict):
        raise ConfigError(f"{source}: limits must be a table")
    limits = Limits.from_mapping(limits_table, source=source)

    return Policy(
        fail_on=fail_on,
        allow_globals=frozenset(allow),
        ignores=tuple(ignores),
        exclude=tuple(exclude),
        limits=limits,
        source=source,
    )


def load_policy(config: Path | None = None, *, start: Path | None = None) -> Policy:
    """Load policy from ``config`` or discover pyproject.toml from ``start`` upwards."""
    if config is not None:
        table = _read_table(config, required=True)
        return policy_from_mapping(table or {}, source=str(config))
    folder = (start or Path.cwd()).resolve()
    for candidate_dir in (folder, *folder.parents):
        candidate = candidate_dir / "pyproject.toml"
        if candidate.is_file():
            table = _read_table(candidate, required=False)
            if table is not None:
                return policy_from_mapping(table, source=str(candidate))
            return Policy()
    return Policy()


def _read_table(path: Path, *, required: bool) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    tool = document.get("tool")
    if isinstance(tool, dict) and "modelguard" in tool:
        table = tool["modelguard"]
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [tool.modelguard] must be a table")
        return dict(table)
    if required and path.name != "pyproject.toml":
        return dict(document)  # a dedicated config file holds the keys at top level
    return None


def _string_list(value: object, key: str, source: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: {key} must be an array of strings")
    return list(value)
