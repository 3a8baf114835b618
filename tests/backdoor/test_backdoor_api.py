"""The paper's claims on the fixtures, and the Findings they become."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelguard.backdoor.api import analyze_backdoor
from modelguard.backdoor.rules import (
    ANALYSIS_SUMMARY,
    BACKDOOR_SURVIVES,
    DORMANT_CHANNELS,
    TRIGGER_EFFECTIVE,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "backdoor"


def test_badnet_trigger_works_before_any_defence(badnet_analysis) -> None:
    none = badnet_analysis.row("none")
    assert none.attack_success > 0.9
    assert none.accuracy > 0.95
    assert TRIGGER_EFFECTIVE in {f.rule_id for f in badnet_analysis.report.findings}


def test_fine_pruning_disables_the_badnet_within_the_accuracy_budget(badnet_analysis) -> None:
    none = badnet_analysis.row("none")
    repaired = badnet_analysis.row("fine-pruning")
    assert repaired.attack_success < 0.2
    assert repaired.accuracy >= none.accuracy - 0.04
    assert BACKDOOR_SURVIVES not in {f.rule_id for f in badnet_analysis.report.findings}


def test_pruning_stops_at_the_budget(badnet_analysis) -> None:
    pruning = badnet_analysis.pruning
    baseline = pruning.points[0].accuracy
    within = [p for p in pruning.points if p.pruned <= pruning.chosen]
    assert all(baseline - p.accuracy <= 0.04 + 1e-9 for p in within)
    # the curve goes exactly one step past the budget (not full_curve) unless all were pruned
    if pruning.chosen < pruning.channels:
        assert baseline - pruning.points[-1].accuracy > 0.04
        assert pruning.points[-1].pruned == pruning.chosen + 1
    # channels pruned in increasing order of mean clean activation
    means = badnet_analysis.profile.mean
    order = np.asarray(pruning.order)
    assert np.all(np.diff(means[order]) >= 0)


def test_all_four_defence_rows_are_reported(badnet_analysis) -> None:
    assert [r.defence for r in badnet_analysis.rows] == [
        "none",
        "fine-tuning",
        "pruning",
        "fine-pruning",
    ]
    summary = [f for f in badnet_analysis.report.findings if f.rule_id == ANALYSIS_SUMMARY]
    assert len(summary) == 1
    assert "fine-pruning" in summary[0].message
    table = badnet_analysis.table()
    assert "fine-pruning" in table and "ASR" in table


def test_dormancy_score_ranks_badnet_above_clean() -> None:
    kwargs = {"device": "cpu", "defences": False}
    clean = analyze_backdoor(FIXTURES / "clean.ts", FIXTURES / "val.npz", **kwargs)
    badnet = analyze_backdoor(FIXTURES / "badnet.ts", FIXTURES / "val.npz", **kwargs)
    assert badnet.score > clean.score
    assert DORMANT_CHANNELS not in {f.rule_id for f in clean.report.findings}


def test_clean_model_raises_no_trigger_finding() -> None:
    clean = analyze_backdoor(
        FIXTURES / "clean.ts",
        FIXTURES / "val.npz",
        trigger_data=FIXTURES / "test_trigger.npz",
        target=0,
        device="cpu",
        defences=False,
    )
    assert clean.row("none").attack_success < 0.1
    assert clean.report.exit_code(None) == 0
    assert TRIGGER_EFFECTIVE not in {f.rule_id for f in clean.report.findings}


def test_analysis_leaves_the_model_unchanged(analyse_badnet) -> None:
    # defences run on copies of the weights; the profile after them is the same
    first = analyse_badnet("badnet.safetensors", epochs=1)
    again = analyze_backdoor(
        FIXTURES / "badnet.safetensors",
        FIXTURES / "val.npz",
        factory=f"{FIXTURES / 'digits_net.py'}:make_model",
        device="cpu",
        defences=False,
    )
    np.testing.assert_allclose(first.profile.mean, again.profile.mean, rtol=1e-6)
