"""Reporters render a Report; they never reach into scanner internals or the disk.

``RENDERERS`` is the one list of formats: the CLI's ``--format`` choices, the
API's ``render(report, fmt)`` and the docs all come from it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from modelguard.errors import MissingExtra
from modelguard.findings import Report, Severity

if TYPE_CHECKING:  # pragma: no cover
    from modelguard.supply.inventory import Inventory


@dataclass(frozen=True)
class RenderOptions:
    color: bool = False
    fail_on: Severity | None = Severity.HIGH
    verbose: bool = False  # text: also list info findings, suppressed findings, skipped files
    # Per-artifact facts from the disk and the lock files (digests, pins, sources,
    # signature state) for the BOM: gathered by the caller, never by a renderer.
    inventory: Inventory | None = None


class Renderer(Protocol):
    def __call__(self, report: Report, options: RenderOptions) -> str: ...


@dataclass(frozen=True)
class RendererSpec:
    """Where a format's renderer lives (imported lazily) and what it needs installed."""

    target: str  # "module:function"
    feature: str  # names the format in a missing-extra message
    module: str | None = None  # third-party top-level module it imports
    extra: str | None = None  # the pip extra that installs ``module``

    def check_available(self) -> None:
        """Raise :class:`MissingExtra` when the renderer's library is not installed."""
        if self.module is None or self.extra is None:
            return
        if importlib.util.find_spec(self.module) is None:
            raise MissingExtra(self.feature, self.extra, self.module)


RENDERERS: dict[str, RendererSpec] = {
    "text": RendererSpec("modelguard.report.text:render_text", "text output"),
    "json": RendererSpec("modelguard.report.json:render_json", "JSON output"),
    "jsonl": RendererSpec("modelguard.report.jsonl:render_jsonl", "JSON Lines output"),
    "sarif": RendererSpec("modelguard.report.sarif:render_sarif", "SARIF output"),
    # cyclonedx-python-lib is big and optional (the ``bom`` extra).
    "cyclonedx": RendererSpec(
        "modelguard.report.cyclonedx:render_cyclonedx",
        "CycloneDX output",
        module="cyclonedx",
        extra="bom",
    ),
}


def get_renderer(fmt: str) -> Renderer:
    """The renderer for ``fmt``; ``MissingExtra`` when its library is not installed."""
    spec = RENDERERS[fmt]
    spec.check_available()
    module_name, _, func_name = spec.target.partition(":")
    renderer: Renderer = getattr(importlib.import_module(module_name), func_name)
    return renderer


def render(report: Report, fmt: str, options: RenderOptions | None = None) -> str:
    return get_renderer(fmt)(report, options or RenderOptions())
