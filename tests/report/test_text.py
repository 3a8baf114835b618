"""Text reporter: exact output for a constructed Report, colour, verbosity, verdicts."""

from __future__ import annotations

import re
from collections.abc import Callable

import click

from modelguard.findings import ArtifactResult, Finding, Location, Report, Severity
from modelguard.report.interface import RenderOptions, render
from modelguard.report.text import EVIDENCE_MAX_CHARS, printable, render_text

ReportFactory = Callable[..., Report]

ANSI = re.compile(r"\x1b\[[0-9;]*m")

EXPECTED_DEFAULT = """\
models/evil.pt  (pytorch-zip, 1,234 bytes)
  CRITICAL MG101 pickle-dangerous-import  pickle imports os.system
      in archive/data.pkl, at offset 17
      evidence: os.system
  LOW      MG106 pickle-trailing-data  3 bytes follow the pickle STOP
      in archive/data.pkl, at offset 90
      evidence: trailing:3

3 files scanned: 1 critical, 0 high, 0 medium, 1 low, 2 info; 1 suppressed; 0 errors
(2 info findings and 1 suppressed not shown; use --verbose to list them)
FAIL: 1 finding at or above high (--fail-on)
"""

EXPECTED_VERBOSE = """\
models/evil.pt  (pytorch-zip, 1,234 bytes)
  CRITICAL MG101 pickle-dangerous-import  pickle imports os.system
      in archive/data.pkl, at offset 17
      evidence: os.system
  LOW      MG106 pickle-trailing-data  3 bytes follow the pickle STOP
      in archive/data.pkl, at offset 90
      evidence: trailing:3
  INFO     MG107 pickle-multiple-streams  2 pickle streams
      evidence: streams:2
  MEDIUM   MG102 pickle-unknown-import [suppressed]  pickle imports mypkg.nets.MyNet
      in archive/data.pkl, at offset 40
      evidence: mypkg.nets.MyNet
      reason: vetted by security review

weights.safetensors  (safetensors, 10 bytes)
  no findings

/elsewhere/outside model.bin  (unknown, 5 bytes)
  INFO     MG001 unsupported-format  format not recognised; skipped
      evidence: unknown

unreadable inputs
  gone.pt: no such file or directory

3 files scanned: 1 critical, 0 high, 0 medium, 1 low, 2 info; 1 suppressed; 1 error
ERROR: 1 input could not be read; 1 finding at or above high (--fail-on)
"""


def test_default_output_hides_info_and_suppressed_but_counts_them(
    make_report: ReportFactory,
) -> None:
    assert render_text(make_report(errors=False), RenderOptions()) == EXPECTED_DEFAULT


def test_verbose_output_lists_everything_with_reasons_and_errors(
    make_report: ReportFactory,
) -> None:
    assert render_text(make_report(), RenderOptions(verbose=True)) == EXPECTED_VERBOSE


def test_rendering_is_deterministic_and_reachable_through_the_registry(
    make_report: ReportFactory,
) -> None:
    report = make_report()
    options = RenderOptions(verbose=True)
    assert render(report, "text", options) == render_text(report, options) == EXPECTED_VERBOSE


def test_colour_only_when_asked_and_only_adds_styling(make_report: ReportFactory) -> None:
    report = make_report(errors=False)
    plain = render_text(report, RenderOptions(color=False))
    coloured = render_text(report, RenderOptions(color=True))
    assert not ANSI.search(plain)
    assert ANSI.search(coloured)
    assert click.style("CRITICAL", fg="red", bold=True) in coloured
    assert click.style("FAIL: 1 finding at or above high (--fail-on)", fg="red", bold=True) in (
        coloured
    )
    assert ANSI.sub("", coloured) == plain


def test_verdict_follows_fail_on(make_report: ReportFactory) -> None:
    report = make_report(errors=False)

    def last(opts: RenderOptions) -> str:
        return render_text(report, opts).splitlines()[-1]

    assert last(RenderOptions(fail_on=Severity.CRITICAL)) == (
        "FAIL: 1 finding at or above critical (--fail-on)"
    )
    assert last(RenderOptions(fail_on=Severity.LOW)) == (
        "FAIL: 2 findings at or above low (--fail-on)"
    )
    assert last(RenderOptions(fail_on=None)) == (
        "PASS: findings do not fail this run (--fail-on never)"
    )
    clean = Report(artifacts=(ArtifactResult("a.safetensors", "safetensors", 8),), root="/r")
    assert render_text(clean, RenderOptions()) == (
        "1 file scanned: 0 critical, 0 high, 0 medium, 0 low, 0 info; 0 suppressed; 0 errors\n"
        "PASS: 0 findings at or above high (--fail-on)\n"
    )


def test_hostile_names_and_evidence_cannot_inject_terminal_escapes() -> None:
    name = "evil\x1b[2J\rOK.pt"
    finding = Finding(
        "MG101",
        Severity.CRITICAL,
        "pickle imports os.system\nPASS: forged line",
        Location(name, ("a\x07b",), 3),
        evidence="x" * (EVIDENCE_MAX_CHARS + 50) + "\x1b]0;title\x07",
    )
    report = Report(artifacts=(ArtifactResult(name, "pickle", 1, (finding,)),), root="/r")
    text = render_text(report, RenderOptions())
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "evil\\x1b[2J\\x0dOK.pt" in text
    assert "os.system\\x0aPASS: forged line" in text
    assert "in a\\x07b, at offset 3" in text
    evidence_line = next(line for line in text.splitlines() if "evidence:" in line)
    assert evidence_line.endswith("…")
    assert len(evidence_line.split("evidence: ", 1)[1]) == EVIDENCE_MAX_CHARS


def test_printable_escapes_surrogates_bidi_overrides_and_separators() -> None:
    assert printable("ok \udcff é") == "ok \\udcff é"
    assert printable("model\u202egnp.pt") == "model\\u202egnp.pt"  # right-to-left override
    assert printable("a\u200bb\u2028c\x85") == "a\\u200bb\\u2028c\\x85"
    assert printable("模型 ✓ naïve") == "模型 ✓ naïve"
