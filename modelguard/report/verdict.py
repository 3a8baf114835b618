"""The run's verdict, shared by every reporter so they agree with the exit code."""

from __future__ import annotations

import enum

from modelguard.findings import Report, Severity


class Verdict(enum.Enum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password; exit 0
    FAIL = "fail"  # exit 1: findings at or above fail-on
    ERROR = "error"  # exit 2: some input could not be read


_BY_EXIT_CODE = {0: Verdict.PASS, 1: Verdict.FAIL, 2: Verdict.ERROR}


def verdict_for(report: Report, fail_on: Severity | None) -> Verdict:
    """The verdict matching ``report.exit_code(fail_on)``."""
    return _BY_EXIT_CODE[report.exit_code(fail_on)]
