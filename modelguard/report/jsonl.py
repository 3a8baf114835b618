"""JSON Lines: one artifact per line, for pipelines that stream a registry scan.

Each line is a JSON object with a ``type``: ``artifact`` (the same object as in
the JSON report's ``artifacts``), ``error`` (an unreadable input), and a last
``summary`` line carrying the JSON report's header fields (schema, tool,
verdict, exit code, summary counts). A consumer can ``grep`` or ``jq -c``
line by line without holding the whole report.
"""

from __future__ import annotations

import json
from typing import Any

from modelguard.findings import Report
from modelguard.report.interface import RenderOptions
from modelguard.report.json import report_to_dict


def _line(kind: str, body: dict[str, Any]) -> str:
    return json.dumps({"type": kind, **body}, ensure_ascii=True, separators=(",", ":"))


def render_jsonl(report: Report, options: RenderOptions) -> str:
    """Every finding, info and suppressed ones included, like the JSON report."""
    whole = report_to_dict(report, options)
    lines = [_line("artifact", artifact) for artifact in whole.pop("artifacts")]
    lines += [_line("error", error) for error in whole.pop("errors")]
    lines.append(_line("summary", whole))
    return "\n".join(lines) + "\n"
