"""The paper's claims on the fixtures, and the Findings they become."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelguard.backdoor.api import analyze_backdoor
from modelguard.backdoor.score import DORMANCY_THRESHOLD
from modelguard.findings import Severity
from modelguard.rules.backdoor import (
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
    assert TRIGGER_EFFECTIVE.id in {f.rule_id for f in badnet_analysis.report.findings}


def test_fine_pruning_disables_the_pruning_aware_badnet(pruneaware_analysis) -> None:
    # Liu et al.'s adaptive attacker: the backdoor sits in channels clean data
    # uses, behind decoys that pruning removes first. Pruning alone fails;
    # fine-pruning (the fine-tuning touches the active channels) succeeds.
    none = pruneaware_analysis.row("none")
    pruned = pruneaware_analysis.row("pruning")
    tuned = pruneaware_analysis.row("fine-tuning")
    repaired = pruneaware_analysis.row("fine-pruning")
    assert none.attack_success > 0.9
    assert pruned.attack_success > 0.9
    assert repaired.attack_success < 0.2
    # Pruning costs at most the budget, also after fine-tuning (fine-tuning on the
    # defender's 400 samples itself costs ~3 points, on the clean model too).
    assert repaired.accuracy >= tuned.accuracy - 0.04
    rules = {f.rule_id for f in pruneaware_analysis.report.findings}
    assert TRIGGER_EFFECTIVE.id in rules
    assert BACKDOOR_SURVIVES.id not in rules


def test_baseline_badnet_survives_fine_pruning_and_the_report_says_so(badnet_analysis) -> None:
    # A known false-negative class of the defence (README, "Backdoor analysis"):
    # on the digits fixtures the baseline BadNet's trigger is carried by channels
    # clean data also activates, not by dormant ones, so pruning in order of
    # clean activation never reaches it within the budget, and fine-tuning on
    # 400 clean samples only weakens it. The analyzer must not claim a repair.
    pruned = badnet_analysis.row("pruning")
    repaired = badnet_analysis.row("fine-pruning")
    assert pruned.attack_success > 0.9
    assert repaired.attack_success >= 0.2
    survives = [f for f in badnet_analysis.report.findings if f.rule_id == BACKDOOR_SURVIVES.id]
    assert len(survives) == 1
    assert survives[0].severity is Severity.HIGH
    assert "fine-pruning" in survives[0].message
    assert badnet_analysis.report.exit_code(Severity.HIGH) == 1


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
    summary = [f for f in badnet_analysis.report.findings if f.rule_id == ANALYSIS_SUMMARY.id]
    assert len(summary) == 1
    assert "fine-pruning" in summary[0].message
    table = badnet_analysis.table()
    assert "fine-pruning" in table and "ASR" in table


def test_dormancy_score_flags_the_pruning_aware_badnet_only() -> None:
    kwargs = {"device": "cpu", "defences": False}
    scores = {}
    for name in ("clean", "badnet", "pruneaware"):
        analysis = analyze_backdoor(FIXTURES / f"{name}.ts", FIXTURES / "val.npz", **kwargs)
        flagged = DORMANT_CHANNELS.id in {f.rule_id for f in analysis.report.findings}
        assert flagged == (analysis.score >= DORMANCY_THRESHOLD)
        scores[name] = analysis.score
    assert scores["pruneaware"] >= DORMANCY_THRESHOLD > scores["clean"]
    # The baseline BadNet's backdoor is not in dormant channels: no dormancy
    # statistic can see it (a known false negative, reported in the README).
    assert scores["badnet"] < DORMANCY_THRESHOLD


def test_dormancy_score_weighs_dormant_channels_by_filter_norm() -> None:
    from modelguard.backdoor.activations import ChannelProfile
    from modelguard.backdoor.score import dormancy_score

    mean = np.array([0.0, 0.0, 2.0, 3.0], dtype=np.float32)
    profile = ChannelProfile("conv", mean, mean > 0, samples=10, seconds=1.0, accuracy=1.0)
    norms = np.array([3.0, 1.0, 2.0, 2.0], dtype=np.float32)
    assert dormancy_score(profile, norms) == 0.5  # (3 + 1) / 8
    assert dormancy_score(profile, np.zeros(4, dtype=np.float32)) == 0.0
    active = ChannelProfile("conv", mean + 1, mean > -1, samples=10, seconds=1.0, accuracy=1.0)
    assert dormancy_score(active, norms) == 0.0


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
    assert TRIGGER_EFFECTIVE.id not in {f.rule_id for f in clean.report.findings}


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
