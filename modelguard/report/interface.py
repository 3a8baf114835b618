"""Reporters render a Report; they never reach into scanner internals."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from modelguard.findings import Report, Severity


@dataclass(frozen=True)
class RenderOptions:
    color: bool = False
    fail_on: Severity | None = Severity.HIGH
    verbose: bool = False  # text: also list info findings and suppressed ones


class Renderer(Protocol):
    def __call__(self, report: Report, options: RenderOptions) -> str: ...


# format name -> "module:function"; imported lazily (cyclonedx pulls a big library)
RENDERERS: dict[str, str] = {
    "text": "modelguard.report.text:render_text",
    "json": "modelguard.report.json:render_json",
    "jsonl": "modelguard.report.jsonl:render_jsonl",
    "sarif": "modelguard.report.sarif:render_sarif",
    "cyclonedx": "modelguard.report.cyclonedx:render_cyclonedx",
}


def get_renderer(fmt: str) -> Renderer:
    module_name, _, func_name = RENDERERS[fmt].partition(":")
    renderer: Renderer = getattr(importlib.import_module(module_name), func_name)
    return renderer


def render(report: Report, fmt: str, options: RenderOptions | None = None) -> str:
    return get_renderer(fmt)(report, options or RenderOptions())
