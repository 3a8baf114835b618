"""Policy: parsing [tool.modelguard], discovery, errors naming file and key, effect on a scan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelguard.api import scan
from modelguard.errors import ConfigError, UsageError
from modelguard.findings import Finding, Location, Severity
from modelguard.limits import Limits
from modelguard.policy import (
    IgnoreRule,
    Policy,
    load_policy,
    parse_fail_on,
    path_matches,
    policy_from_mapping,
)

UNKNOWN_BYTES = b"\x00\x00not a model file\n"


def _finding(rule: str = "MG102", path: str = "models/a.pt") -> Finding:
    return Finding(rule, Severity.MEDIUM, "m", Location(path), evidence="x")


def test_parse_fail_on() -> None:
    assert parse_fail_on("never") is None
    assert parse_fail_on(" NEVER ") is None
    assert parse_fail_on("Medium") is Severity.MEDIUM
    with pytest.raises(ValueError, match="severe"):
        parse_fail_on("severe")


@pytest.mark.parametrize(
    ("path", "patterns", "expected"),
    [
        ("third_party/x/y.pt", ["third_party/*"], True),
        ("third_party/x/y.pt", ["third_party/**"], True),
        ("third_party", ["third_party/*"], False),
        ("a/b.tmp", ["*.tmp"], True),
        ("models/legacy/a.pt", ["models/legacy/*.pt"], True),
        ("models/a.pt", ["models/legacy/*.pt"], False),
        ("models/a.pt", [], False),
        ("Models/a.pt", ["models/*"], False),  # case-sensitive on every platform
    ],
)
def test_path_matches(path: str, patterns: list[str], expected: bool) -> None:
    assert path_matches(path, patterns) is expected


def test_full_table_is_parsed() -> None:
    policy = policy_from_mapping(
        {
            "fail-on": "critical",
            "allow-globals": ["mypkg.nets.MyNet", "mypkg.layers.*"],
            "exclude": ["third_party/*"],
            "ignore": [
                {"rule": "MG102", "reason": " vetted ", "paths": ["models/legacy/*.pt"]},
                {"rule": "MG001", "reason": "not models"},
            ],
            "limits": {"max-member-bytes": 1024, "max_archive_depth": 2},
        },
        source="pyproject.toml",
    )
    assert policy.fail_on is Severity.CRITICAL
    assert policy.allow_globals == frozenset({"mypkg.nets.MyNet", "mypkg.layers.*"})
    assert policy.exclude == ("third_party/*",)
    assert policy.ignores[0] == IgnoreRule("MG102", "vetted", ("models/legacy/*.pt",))
    assert policy.limits == Limits(max_member_bytes=1024, max_archive_depth=2)
    assert policy.source == "pyproject.toml"
    assert policy_from_mapping({"fail-on": "never"}, source="x").fail_on is None


def test_defaults() -> None:
    policy = policy_from_mapping({}, source="x")
    assert policy == Policy(source="x", base=os.getcwd())  # paths relative to x's folder
    assert policy.fail_on is Severity.HIGH
    assert not policy.is_excluded("anything.pt")
    assert policy.suppression_for(_finding()) is None


def test_suppression_matches_rule_and_paths() -> None:
    policy = policy_from_mapping(
        {
            "ignore": [
                {"rule": "MG102", "reason": "legacy", "paths": ["models/legacy/*"]},
                {"rule": "MG001", "reason": "everywhere"},
            ]
        },
        source="x",
    )
    assert policy.suppression_for(_finding("MG102", "models/legacy/a.pt")) == "legacy"
    assert policy.suppression_for(_finding("MG102", "models/a.pt")) is None
    assert policy.suppression_for(_finding("MG101", "models/legacy/a.pt")) is None
    assert policy.suppression_for(_finding("MG001", "deep/down/x.bin")) == "everywhere"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"fail-on": 3}, "fail-on must be a string"),
        ({"fail-on": "severe"}, "fail-on: unknown severity 'severe'"),
        ({"allow-globals": "mypkg.Net"}, "allow-globals must be an array of strings"),
        ({"allow-globals": ["Net"]}, "allow-globals entry 'Net'"),
        ({"exclude": [1]}, "exclude must be an array of strings"),
        ({"ignore": {"rule": "MG1"}}, "ignore must be an array of tables"),
        ({"ignore": ["MG102"]}, "ignore[0] must be a table"),
        ({"ignore": [{"reason": "r"}]}, "ignore[0]: 'rule'"),
        ({"ignore": [{"rule": "MG102"}]}, "ignore[0]: ignoring MG102 needs a non-empty 'reason'"),
        ({"ignore": [{"rule": "MG102", "reason": " "}]}, "needs a non-empty 'reason'"),
        ({"ignore": [{"rule": "MG102", "reason": "r", "path": ["x"]}]}, "unknown key(s) path"),
        ({"ignore": [{"rule": "MG102", "reason": "r", "paths": "x"}]}, "ignore[0].paths"),
        ({"limits": 5}, "limits must be a table"),
        ({"limits": {"max-opcodes": 5}}, "unknown limit 'max-opcodes'"),
        ({"limits": {"max-member-bytes": 0}}, "'max-member-bytes' must be a positive integer"),
        ({"limits": {"max-member-bytes": True}}, "must be a positive integer"),
        # a typo would silently ignore nothing: the key and the closest real id
        (
            {"ignore": [{"rule": "mg101", "reason": "r"}]},
            "ignore[0].rule: 'mg101' is not a modelguard rule id; the closest is MG101 "
            "(pickle-dangerous-import)",
        ),
        ({"ignore": [{"rule": "MG9999", "reason": "r"}]}, "'MG9999' is not a modelguard rule id"),
        ({"ignore": [{"rule": "pickle-dangerous-import", "reason": "r"}]}, "the closest is MG101"),
    ],
)
def test_errors_name_the_file_and_key(table: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        policy_from_mapping(table, source="conf/pyproject.toml")
    message = str(info.value)
    assert message.startswith("conf/pyproject.toml: ")
    assert expected in message
    assert isinstance(info.value, UsageError)  # the CLI maps it to exit 2


def test_discovery_walks_up_to_the_nearest_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.modelguard]\nfail-on = 'low'\n", "utf-8")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    policy = load_policy(start=deep)
    assert policy.fail_on is Severity.LOW
    assert policy.source == str(tmp_path.resolve() / "pyproject.toml")


def test_nearest_pyproject_without_our_table_means_defaults(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.modelguard]\nfail-on = 'low'\n", "utf-8")
    inner = tmp_path / "pkg"
    inner.mkdir()
    (inner / "pyproject.toml").write_text("[project]\nname = 'x'\n", "utf-8")
    assert load_policy(start=inner) == Policy()


def test_explicit_config_files(tmp_path: Path) -> None:
    plain = tmp_path / "modelguard.toml"
    plain.write_text("fail-on = 'medium'\nexclude = ['*.tmp']\n", "utf-8")
    policy = load_policy(plain)
    assert policy.fail_on is Severity.MEDIUM and policy.exclude == ("*.tmp",)
    py = tmp_path / "pyproject.toml"
    py.write_text("[project]\nname = 'x'\n[tool.modelguard]\nfail-on = 'info'\n", "utf-8")
    assert load_policy(py).fail_on is Severity.INFO
    # a pyproject.toml named explicitly but without our table gives defaults
    other = tmp_path / "sub" / "pyproject.toml"
    other.parent.mkdir()
    other.write_text("[project]\nname = 'x'\n", "utf-8")
    assert load_policy(other).fail_on is Severity.HIGH


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("fail-on = [", "invalid TOML"),
        ("[tool]\nmodelguard = 3\n", "[tool.modelguard] must be a table"),
        ("fail-on = 'low'\nwhat = 1\n", "unknown key 'what'"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str, expected: str) -> None:
    config = tmp_path / "policy.toml"
    config.write_text(content, "utf-8")
    with pytest.raises(ConfigError) as info:
        load_policy(config)
    assert str(config) in str(info.value) and expected in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_policy(tmp_path / "absent.toml")


def test_policy_applies_to_a_scan(tmp_path: Path) -> None:
    for rel in ("keep.bin", "legacy/old.bin", "third_party/lib/x.bin", "scratch.tmp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(UNKNOWN_BYTES)
    policy = policy_from_mapping(
        {
            "exclude": ["third_party/*", "*.tmp"],
            "ignore": [{"rule": "MG001", "reason": "legacy blobs", "paths": ["legacy/*"]}],
            "fail-on": "info",
        },
        source=str(tmp_path / "pyproject.toml"),
    )
    report = scan(tmp_path, policy=policy, root=tmp_path, workers=1)
    by_path = {a.path: a for a in report.artifacts}
    assert sorted(by_path) == ["keep.bin", "legacy/old.bin"]
    assert [f.rule_id for f in by_path["keep.bin"].findings] == ["MG001"]
    assert by_path["legacy/old.bin"].findings == ()
    [suppressed] = by_path["legacy/old.bin"].suppressed
    assert suppressed.finding.rule_id == "MG001" and suppressed.reason == "legacy blobs"
    assert report.exit_code(policy.fail_on) == 1
    assert report.exit_code(Severity.LOW) == 0


# -- paths are relative to the file that declares them --------------------------------


def _repository(tmp_path: Path) -> Path:
    """repo/pyproject.toml excluding vendor/ and ignoring MG001 under sub/legacy/."""
    repo = tmp_path / "repo"
    for rel in ("sub/keep.bin", "sub/legacy/old.bin", "vendor/x.bin"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(UNKNOWN_BYTES)
    (repo / "pyproject.toml").write_text(
        "[tool.modelguard]\n"
        'exclude = ["vendor/*"]\n'
        "[[tool.modelguard.ignore]]\n"
        'rule = "MG001"\n'
        'paths = ["sub/legacy/*"]\n'
        'reason = "legacy blobs"\n',
        "utf-8",
    )
    return repo


@pytest.mark.parametrize("cwd", [".", "sub", "sub/legacy"])
def test_paths_match_from_any_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cwd: str
) -> None:
    repo = _repository(tmp_path)
    monkeypatch.chdir(repo / cwd)
    policy = load_policy()  # discovered upwards
    report = scan(repo, policy=policy, workers=1)  # shown relative to the working folder
    by_file = {Path(report.root, a.path).resolve(): a for a in report.artifacts}
    assert set(by_file) == {repo / "sub/keep.bin", repo / "sub/legacy/old.bin"}
    assert [s.reason for s in by_file[repo / "sub/legacy/old.bin"].suppressed] == ["legacy blobs"]
    assert by_file[repo / "sub/keep.bin"].suppressed == ()


def test_a_config_elsewhere_matches_relative_to_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repository(tmp_path)
    (repo / "pyproject.toml").unlink()
    (repo / "ci").mkdir()
    config = repo / "ci" / "modelguard.toml"
    config.write_text('exclude = ["../vendor/*"]\n', "utf-8")
    monkeypatch.chdir(repo)
    report = scan(".", policy=load_policy(config), workers=1)
    assert sorted(a.path for a in report.artifacts) == ["sub/keep.bin", "sub/legacy/old.bin"]


def test_a_policy_built_in_code_matches_paths_as_shown() -> None:
    policy = Policy(exclude=("vendor/*",)).for_root("/anywhere")
    assert policy.is_excluded("vendor/x.bin")
    assert not policy.is_excluded("sub/vendor/x.bin")
