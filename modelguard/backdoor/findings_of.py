"""The findings one analysis produces, each from its rule (severities come from
``modelguard.rules.backdoor``, never typed here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modelguard.backdoor.activations import ChannelProfile
from modelguard.backdoor.detection import Detection
from modelguard.backdoor.model import LayerInfo
from modelguard.backdoor.prune import Trigger
from modelguard.backdoor.result import DefenceRow
from modelguard.findings import Finding, Location
from modelguard.rules import backdoor as R

TRIGGER_EFFECTIVE_ASR = 0.5  # above this, the given trigger works as a backdoor
RESIDUAL_ASR = 0.2  # a repair that leaves more than this has not disabled the backdoor

# What the statistics cannot see, said in every "no evidence" finding (and what they
# see less reliably: on the fixture family's holdout halves large patches were the
# kind most often missed).
NOT_TESTED = (
    "source-specific triggers (that work from some classes only), triggers that are "
    "not a stamped patch or blend (warps, filters, physical objects), backdoors aimed "
    "at these statistics, and classes absent from the data; patches covering a quarter "
    "of the input or more are tested but detected less reliably"
)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _row_text(row: DefenceRow) -> str:
    text = f"{row.defence}: acc {_pct(row.accuracy)}"
    if row.attack_success is not None:
        text += f", ASR {_pct(row.attack_success)}"
    if row.recovered_flip is not None:
        text += f", recovered-trigger flip {_pct(row.recovered_flip)}"
    return text


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _detection_findings(detection: Detection, where: Location) -> list[Finding]:
    tested = ", ".join(detection.statistics)
    if not detection.detected:
        return [
            R.NO_BACKDOOR_EVIDENCE.finding(
                f"no evidence of a backdoor: score {detection.score:.2f} below the threshold "
                f"{detection.threshold:g}. Tested: {tested}, on all "
                f"{len(detection.classes)} classes. Not tested: {NOT_TESTED}",
                where,
                evidence=f"score={detection.score:.2f}",
            )
        ]
    by_label = {c.label: c for c in detection.classes}
    if detection.all_to_all:
        signs = []
        if detection.shortcut is not None:
            signs.append(f"shortcut {detection.shortcut:.2f}")
        if detection.mapping is not None:
            signs.append(f"universal mapping {detection.mapping:.2f}")
        if detection.spread_exits:
            reached = [c.exit_to for c in detection.classes if c.exit_to is not None]
            signs.append(
                f"the smallest exits of {len(reached)} classes lead to "
                f"{len(set(reached))} different classes"
            )
        what = (
            f"small triggers move every class, to a class that depends on the input's "
            f"({', '.join(signs)}): an all-to-all backdoor; every class is a suspected target"
        )
    elif detection.via_exits:
        others = [c for c in detection.classes if c.label != detection.exit_target]
        leading = sum(c.exit_to == detection.exit_target for c in others)
        what = (
            f"small triggers move every class (shortcut {_num(detection.shortcut)}, universal "
            f"mapping {_num(detection.mapping)}), and the smallest exits of {leading} of the "
            f"{len(others)} other classes lead to class "
            f"{detection.exit_target}: an all-to-one backdoor the per-class search did not "
            f"single out; suspected {'target' if len(detection.targets) == 1 else 'targets'} "
            + ", ".join(str(t) for t in detection.targets)
        )
    else:
        parts = []
        for label in detection.targets:
            c = by_label[label]
            margin = "" if c.margin_index is None else f", margin index {c.margin_index:.2f}"
            parts.append(
                f"class {label} (mask L1 {c.norm:.1f}, anomaly index {c.nc_index:.2f}, "
                f"norm index {c.norm_index:.2f}{margin})"
            )
        noun = "target" if len(parts) == 1 else "targets"
        what = f"suspected {noun}: " + "; ".join(parts)
    return [
        R.BACKDOOR_DETECTED.finding(
            f"backdoor detected: score {detection.score:.2f} >= threshold "
            f"{detection.threshold:g}; {what}. Tested: {tested}",
            where,
            evidence="target=" + ",".join(str(t) for t in detection.targets),
        )
    ]


def build_findings(
    *,
    path: Path,
    layer: LayerInfo,
    profile: ChannelProfile,
    dormancy: float,
    detection: Detection | None,
    rows: Sequence[DefenceRow],
    method: str | None,
    requested: str,
    repair_asked: bool,
    repaired: str | None,
    repaired_format: str | None,
    trigger: Trigger | None,
    held_out_count: int,
    can_train: bool,
) -> list[Finding]:
    where = Location(str(path))
    by_name = {r.defence: r for r in rows}
    findings: list[Finding] = []
    if detection is not None:
        findings += _detection_findings(detection, where)
    dormant = int(profile.dormant().sum())
    findings.append(
        R.DORMANT_CHANNELS.finding(
            f"layer {layer.name}: dormancy score {dormancy:.3f}, {dormant}/{layer.channels} "
            "dormant channels (a profile, not a detector)",
            where,
            evidence=f"layer={layer.name}",
        )
    )
    summary = "; ".join(_row_text(r) for r in rows)
    chosen = f"; repair: {method}" if method is not None else ""
    if requested == "auto" and repair_asked and method == "unlearn":
        chosen += " (auto: unlearning the triggers detection recovered)"
    if repair_asked and method is None:
        chosen += (
            "; no repaired model written: method auto found nothing to unlearn (no evidence "
            "of a backdoor); choose method unlearn, fine-prune or fine-tune to repair anyway"
        )
    findings.append(
        R.ANALYSIS_SUMMARY.finding(
            f"on {held_out_count} held-out inputs: {summary}{chosen}",
            where,
            evidence=f"layer={layer.name}",
        )
    )
    base = by_name["none"]
    if (
        trigger is not None
        and base.attack_success is not None
        and base.attack_success >= TRIGGER_EFFECTIVE_ASR
    ):
        findings.append(
            R.TRIGGER_EFFECTIVE.finding(
                f"{_pct(base.attack_success)} of triggered inputs are labelled "
                f"{trigger.target} (trigger data {trigger.data.source})",
                where,
                evidence=f"target={trigger.target}",
            )
        )
    repaired_row = by_name.get(method) if method is not None else None
    refused = None if repaired_row is None else _refusal(repaired_row, repair_asked, where)
    if refused is not None:
        findings.append(refused)
    if repaired_row is not None and refused is None:
        residual = max(
            (
                v
                for v in (repaired_row.attack_success, repaired_row.recovered_flip)
                if v is not None
            ),
            default=None,
        )
        effective = trigger is None or (
            base.attack_success is not None and base.attack_success >= TRIGGER_EFFECTIVE_ASR
        )
        if residual is not None and residual >= RESIDUAL_ASR and effective:
            findings.append(
                R.BACKDOOR_SURVIVES.finding(
                    f"after {repaired_row.defence} the trigger still works on "
                    f"{_pct(residual)} of held-out inputs",
                    where,
                    evidence=f"method={repaired_row.defence}",
                )
            )
        still = () if repaired_row.outcome is None else repaired_row.outcome.still_flagged
        if still:
            labels = ", ".join(str(label) for label in still)
            findings.append(
                R.BACKDOOR_SURVIVES.finding(
                    f"after {repaired_row.defence}, detection re-run on the repaired model "
                    f"still flags class(es) {labels}; the accuracy guard refused the round "
                    "that would unlearn them (it cost too much clean accuracy), so the "
                    "model keeps them",
                    where,
                    evidence=f"method={repaired_row.defence}; still_flagged={labels}",
                )
            )
    if repaired is not None and method is not None:
        done = method if can_train or method != "fine-prune" else "pruned (no fine-tuning)"
        findings.append(
            R.REPAIRED_MODEL_WRITTEN.finding(
                f"repaired model ({done}) written to {repaired} ({repaired_format})",
                where,
                evidence=f"out={repaired}",
            )
        )
    return findings


def _refusal(row: DefenceRow, repair_asked: bool, where: Location) -> Finding | None:
    """The accuracy guard refused every attempt of the chosen repair: say so, with its
    cost, rather than report the unchanged model's residual as the repair's."""
    outcome = row.outcome
    if outcome is None or outcome.refused_at is None:
        return None
    cost = 100 * (outcome.guard_before - outcome.refused_at)
    written = "; no repaired model written" if repair_asked else ""
    return R.BACKDOOR_SURVIVES.finding(
        f"the accuracy guard refused {row.defence}: its best fine-tuning lost {cost:.1f} "
        "points of clean accuracy on the guard split, over the budget (--max-acc-drop), "
        f"so it was undone{written}; raise the budget to accept that cost",
        where,
        evidence=f"method={row.defence}; refused",
    )
