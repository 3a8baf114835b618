"""docs/rules.md is generated from the catalogue and must stay in sync with it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from modelguard.findings import Severity
from modelguard.rules import Rule, all_rules
from modelguard.rules_doc import anchor, render_rules_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "rules.md"
REGENERATE = "python -m modelguard.rules_doc > docs/rules.md"


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower-case, punctuation dropped, spaces to '-'."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _heading_anchors(markdown: str) -> list[str]:
    return [github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.M)]


def test_committed_doc_matches_the_catalogue() -> None:
    committed = DOC.read_text(encoding="utf-8")
    assert committed == render_rules_markdown(), f"docs/rules.md is stale; run: {REGENERATE}"


def test_every_rule_has_a_section_whose_anchor_is_its_help_uri_fragment() -> None:
    anchors = _heading_anchors(render_rules_markdown())
    assert len(anchors) == len(set(anchors)), "duplicate heading anchors"
    for rule in all_rules():
        fragment = rule.help_uri.split("#", 1)[1]
        assert fragment == anchor(rule)
        assert fragment in anchors, rule.id
        assert rule.help_uri.startswith("https://") and "/docs/rules.md#" in rule.help_uri


def test_section_carries_severity_description_and_fix() -> None:
    rule = Rule(
        "MG999",
        "made-up-rule",
        Severity.LOW,
        "Something | was seen.",
        "Why it matters.",
        "Do this | that.",
        ("security", "integrity"),
    )
    text = render_rules_markdown([rule])
    section = text.split("### MG999 made-up-rule", 1)[1]
    assert "**Severity:** low" in section and "security, integrity" in section
    assert "Why it matters." in section and "**Fix:** Do this | that." in section
    # table cells escape '|' so the row keeps its columns
    assert "| [MG999 made-up-rule](#mg999-made-up-rule) | low | Something \\| was seen. |" in text
    assert "## Other rules" in text


def test_module_prints_the_document() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "modelguard.rules_doc"],
        capture_output=True,
        text=True,
        check=True,
        encoding="utf-8",
    )
    assert completed.stdout == render_rules_markdown()
