"""JSON Lines: each line one object; together exactly the JSON report."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from modelguard.findings import Report, Severity
from modelguard.report.interface import RENDERERS, RenderOptions, render
from modelguard.report.json import report_to_dict


def test_lines_are_the_json_report_split(make_report: Callable[..., Report]) -> None:
    report = make_report()
    options = RenderOptions(fail_on=Severity.HIGH)
    text = render(report, "jsonl", options)
    assert text.endswith("\n") and "\n\n" not in text
    lines: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines()]
    kinds = [line.pop("type") for line in lines]
    whole = report_to_dict(report, options)
    assert kinds == ["artifact"] * len(whole["artifacts"]) + ["error"] * len(whole["errors"]) + [
        "summary"
    ]
    assert lines[: len(whole["artifacts"])] == whole["artifacts"]
    assert lines[len(whole["artifacts"]) : -1] == whole["errors"]
    assert lines[-1] == {k: v for k, v in whole.items() if k not in ("artifacts", "errors")}
    assert lines[-1]["verdict"] == whole["verdict"] and whole["errors"]


def test_registered_and_empty_report() -> None:
    assert "jsonl" in RENDERERS
    (line,) = render(Report(), "jsonl").splitlines()
    assert json.loads(line)["type"] == "summary"
