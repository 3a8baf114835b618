"""Policy: what fails a run, what is allowed, what is ignored and why.

Read from ``[tool.modelguard]`` in pyproject.toml (found from the working folder
upwards) or from ``--config FILE``. A config file may be a pyproject.toml or a
plain TOML file whose top level holds the same keys::

    [tool.modelguard]
    fail-on = "high"                       # info|low|medium|high|critical|never
    allow-globals = ["mypkg.nets.MyNet", "mypkg.layers.*"]
    exclude = ["third_party/**", "*.tmp"]

    [[tool.modelguard.ignore]]
    rule = "MG102"                          # an id from the catalogue (docs/rules.md)
    paths = ["models/legacy/*.pt"]          # optional; default: everywhere
    reason = "vetted by security review 2026-03"

    [tool.modelguard.limits]
    max-member-bytes = 2147483648

Paths in ``exclude`` and ``ignore.paths`` are relative to the folder of the file
that declares them, like .gitignore's, whatever folder the scan runs from.

The files being checked never choose the policy: discovery skips every
pyproject.toml inside a scanned, verified or fetched-into tree (each one is
reported as a warning, MG412), and a fail-on read from a file never lets a
critical verification failure (MG4xx) pass; only an explicit ignore with a
reason can.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from modelguard.errors import ConfigError
from modelguard.files import display_path, open_regular
from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity, Suppressed
from modelguard.limits import Limits
from modelguard.rules import provenance

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

    def applies_to(self, finding: Finding, path: str | None = None) -> bool:
        """``path``: the finding's file as the policy's patterns see it (default: as shown)."""
        if finding.rule_id != self.rule:
            return False
        where = finding.location.path if path is None else path
        return not self.paths or path_matches(where, self.paths)


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
    fail_on_source: str | None = None  # the file that set fail-on (None: the caller did)
    ignored_files: tuple[str, ...] = ()  # policy files inside the checked tree, not used
    # The folder that paths in ``exclude`` and ``ignore.paths`` are relative to:
    # the declaring file's. None (a Policy built in code): the scan root.
    base: str | None = None
    # What shown paths are relative to (the scan root; set with ``for_root``).
    scan_root: str | None = None

    def for_root(self, root: str | os.PathLike[str]) -> Policy:
        """This policy for a scan whose shown paths are relative to ``root``."""
        return replace(self, scan_root=os.fspath(root))

    def declared_path(self, shown: str) -> str:
        """``shown`` (relative to the scan root, or absolute) as the patterns see it."""
        if self.base is None or "://" in shown:
            return shown
        root = self.scan_root or os.getcwd()
        absolute = os.path.abspath(os.path.join(root, shown))
        try:
            return PurePath(os.path.relpath(absolute, self.base)).as_posix()
        except ValueError:  # another drive (Windows): no pattern of this file can name it
            return PurePath(absolute).as_posix()

    @property
    def settings(self) -> ScanSettings:
        return ScanSettings(limits=self.limits, allow_globals=self.allow_globals)

    def is_excluded(self, rel_path: str) -> bool:
        return bool(self.exclude) and path_matches(self.declared_path(rel_path), self.exclude)

    def suppression_for(self, finding: Finding) -> str | None:
        """The reason a finding is ignored by policy, or None if it stands."""
        path = self.declared_path(finding.location.path) if self.ignores else ""
        for ignore in self.ignores:
            if ignore.applies_to(finding, path):
                return ignore.reason
        return None

    def partition(self, findings: Iterable[Finding]) -> tuple[list[Finding], list[Suppressed]]:
        """Findings that stand, and those this policy ignores (with its reason)."""
        kept: list[Finding] = []
        suppressed: list[Suppressed] = []
        for finding in findings:
            reason = self.suppression_for(finding)
            if reason is None:
                kept.append(finding)
            else:
                suppressed.append(Suppressed(finding, reason))
        return kept, suppressed

    def fail_on_for(self, report: Report) -> Severity | None:
        """The threshold that decides ``report``'s exit code and verdict.

        ``fail_on``, except that a ``fail-on`` read from a policy file cannot let
        a critical verification failure (MG4xx) pass: the bar drops to critical.
        Only an ignore with a reason suppresses such a finding.
        """
        if self.fail_on is not None or self.fail_on_source is None:
            return self.fail_on
        if any(
            f.severity >= Severity.CRITICAL and f.rule_id in _PROVENANCE for f in report.findings
        ):
            return Severity.CRITICAL
        return None

    def exit_code(self, report: Report) -> int:
        return report.exit_code(self.fail_on_for(report))


_PROVENANCE = frozenset(rule.id for rule in provenance.RULES)


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
        _check_rule_id(rule, f"{where}.rule")
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
        base=os.path.dirname(os.path.abspath(source)),
        fail_on_source=source if "fail-on" in table else None,
    )


def _check_rule_id(rule_id: str, where: str) -> None:
    """A typo in an ignore would silently ignore nothing: name the closest real id."""
    from modelguard.rules import RULES

    if rule_id in RULES:
        return
    by_name = {rule.name: rule.id for rule in RULES.values()}
    if rule_id.strip().upper() in RULES:
        closest: str | None = rule_id.strip().upper()
    elif rule_id in by_name:
        closest = by_name[rule_id]
    else:
        matches = difflib.get_close_matches(rule_id.upper(), list(RULES), n=1, cutoff=0.6)
        closest = matches[0] if matches else None
    hint = f"; the closest is {closest} ({RULES[closest].name})" if closest else ""
    raise ConfigError(f"{where}: {rule_id!r} is not a modelguard rule id{hint}")


def load_policy(
    config: Path | None = None,
    *,
    start: Path | None = None,
    checked: Sequence[str | os.PathLike[str]] = (),
) -> Policy:
    """Load policy from ``config`` or discover pyproject.toml from ``start`` upwards.

    ``checked`` names the trees being scanned, verified or fetched into: a
    pyproject.toml inside one of them is never used (the checked files must not
    choose their own policy); it is recorded in ``Policy.ignored_files`` and
    :func:`ignored_policy_report` reports it. Discovery goes on above the tree.
    """
    if config is not None:
        table = _read_table(config, required=True)
        return policy_from_mapping(table or {}, source=str(config))
    trees = _real_trees(checked)
    ignored: list[str] = []
    folder = (start or Path.cwd()).resolve()
    policy = Policy()
    for candidate_dir in (folder, *folder.parents):
        candidate = candidate_dir / "pyproject.toml"
        if not candidate.is_file():
            continue
        if _inside(candidate.resolve(), trees):
            if _declares_policy(candidate):
                ignored.append(str(candidate))
            continue
        table = _read_table(candidate, required=False)
        if table is not None:
            policy = policy_from_mapping(table, source=str(candidate))
        break
    return replace(policy, ignored_files=tuple(ignored)) if ignored else policy


_MAX_IN_TREE_BYTES = 1 << 20


def _declares_policy(path: Path) -> bool:
    """Whether a pyproject.toml in the checked tree holds modelguard settings (or may).

    It is only looked at, never obeyed: a file that cannot be read or parsed counts
    as one that may, and is reported, never an error that would stop the run.
    """
    try:
        with os.fdopen(open_regular(path), "rb") as handle:
            data = handle.read(_MAX_IN_TREE_BYTES + 1)
        if len(data) > _MAX_IN_TREE_BYTES:
            return True
        document = tomllib.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return True
    tool = document.get("tool")
    return isinstance(tool, dict) and "modelguard" in tool


def _real_trees(checked: Sequence[str | os.PathLike[str]]) -> list[Path]:
    trees = []
    for raw in checked:
        text = os.fspath(raw)
        if "://" in text:
            continue  # remote sources hold no local policy files
        trees.append(Path(os.path.realpath(text)))
    return trees


def _inside(path: Path, trees: Sequence[Path]) -> bool:
    return any(path == tree or tree in path.parents for tree in trees)


def ignored_policy_report(policy: Policy, root: Path | None = None) -> Report:
    """A warning (MG412) on each policy file the checked tree held and discovery skipped."""
    base = root or Path(os.path.abspath(Path.cwd()))
    artifacts = []
    for path in policy.ignored_files:
        shown = display_path(path, base)
        finding = provenance.POLICY_IN_CHECKED_TREE.finding(
            f"{shown} lies inside the checked tree, so its [tool.modelguard] settings were "
            f"not used (the files being checked must not choose their own policy); "
            f"{'policy from ' + policy.source if policy.source else 'default policy'} applies",
            Location(shown),
            evidence=shown,
        )
        artifacts.append(ArtifactResult(shown, "unknown", 0, findings=(finding,)))
    return Report(artifacts=tuple(artifacts), root=base.as_posix())


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
