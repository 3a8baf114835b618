"""What an analysis returns: the numbers behind the findings, and their table.

Every accuracy and attack success rate here is measured on the held-out part of
the data (``held_out_count`` images), never on what was tuned on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelguard.backdoor.activations import ChannelProfile
from modelguard.backdoor.defences import RepairOutcome
from modelguard.backdoor.detection import Detection
from modelguard.backdoor.model import FloatArray, LayerInfo
from modelguard.backdoor.prune import PruningResult
from modelguard.findings import Report


@dataclass(frozen=True)
class DefenceRow:
    """Held-out clean accuracy and attack success after one defence (None: not measured)."""

    defence: str  # "none", "unlearn", "fine-prune", "fine-tune", "pruning"
    accuracy: float | None
    attack_success: float | None  # of the known trigger (--trigger-data)
    recovered_flip: float | None = None  # of the suspects' recovered triggers, held out
    note: str = ""
    outcome: RepairOutcome | None = None


@dataclass(frozen=True)
class BackdoorAnalysis:
    report: Report
    model: str
    format: str
    layer: str
    device: str
    profile: ChannelProfile
    score: float  # the dormancy score (MG501's profile)
    pruning: PruningResult | None
    rows: tuple[DefenceRow, ...]
    repaired: str | None = None
    repair_method: str | None = None
    layers: tuple[LayerInfo, ...] = field(default=())
    detection: Detection | None = None
    held_out_flip: tuple[float, ...] = ()  # per class, recovered trigger on held-out
    held_out_count: int = 0
    held_out_source: str = ""
    trigger_count: int = 0  # triggered inputs the known-trigger ASR is measured on
    held_out_example: FloatArray | None = None  # one input, for the plot
    tuning_count: int = 0
    guard_count: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def row(self, defence: str) -> DefenceRow:
        return next(r for r in self.rows if r.defence == defence)

    def repair_row(self) -> DefenceRow | None:
        if self.repair_method is None:
            return None
        return next((r for r in self.rows if r.defence == self.repair_method), None)

    def json_block(self) -> dict[str, Any]:
        """The artifact's ``backdoor`` object of the JSON report (docs/json-report.md)."""
        det = self.detection
        classes: list[dict[str, Any]] = []
        if det is not None:
            for c in det.classes:
                classes.append(
                    {
                        "label": c.label,
                        "l1_norm": round(c.norm, 4),
                        "flip_rate": round(self.held_out_flip[c.label], 4)
                        if c.label < len(self.held_out_flip)
                        else None,
                        "anomaly_index": round(c.nc_index, 4),
                        "norm_index": round(c.norm_index, 4),
                        "margin": None if c.margin is None else round(c.margin, 4),
                        "margin_index": None
                        if c.margin_index is None
                        else round(c.margin_index, 4),
                        "untargeted_l1_norm": None
                        if c.untargeted_norm is None
                        else round(c.untargeted_norm, 4),
                        "exit_to": c.exit_to,
                        "score": round(c.score, 4),
                        "suspected": c.suspected,
                    }
                )
        repair: dict[str, Any] | None = None
        chosen = self.repair_row()
        if chosen is not None:
            repair = {
                "method": chosen.defence,
                "output": self.repaired,
                "rechecked": [] if chosen.outcome is None else list(chosen.outcome.rechecked),
                "still_flagged": []
                if chosen.outcome is None
                else list(chosen.outcome.still_flagged),
                # the accuracy guard refused every attempt: the model was left as it came
                "refused": chosen.outcome is not None and chosen.outcome.refused,
                "held_out": {
                    "clean_acc": chosen.accuracy,
                    "asr": chosen.attack_success,
                    "recovered_flip_rate": chosen.recovered_flip,
                    "count": self.held_out_count,
                },
            }
        base = self.row("none")
        return {
            "detected": bool(det is not None and det.detected),
            "score": None if det is None else round(det.score, 4),
            "target": None if det is None else det.target,
            "threshold": None if det is None else det.threshold,
            "all_to_all": bool(det is not None and det.all_to_all),
            "exit_target": None if det is None else det.exit_target,
            "statistics": [] if det is None else list(det.statistics),
            "shortcut": None if det is None or det.shortcut is None else round(det.shortcut, 4),
            "mapping": None if det is None or det.mapping is None else round(det.mapping, 4),
            "classes": classes,
            "held_out": {
                "count": self.held_out_count,
                "source": self.held_out_source,
                "clean_acc": base.accuracy,
                "asr": base.attack_success,
            },
            "defences": [
                {
                    "method": r.defence,
                    "clean_acc": r.accuracy,
                    "asr": r.attack_success,
                    "recovered_flip_rate": r.recovered_flip,
                    "note": r.note,
                }
                for r in self.rows
            ],
            "repair": repair,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "samples_per_second": None
            if det is None or det.seconds <= 0
            else round(det.samples / det.seconds, 1),
        }

    def table(self) -> str:
        """Detection per class and the defences' held-out numbers, as text."""

        def pct(value: float | None) -> str:
            return "   n/a" if value is None else f"{100 * value:6.1f}"

        lines = [
            f"backdoor analysis of {self.model} ({self.format}, layer {self.layer}, "
            f"{self.profile.channels} channels, {self.device})",
            f"  data: {self.tuning_count} tuning, {self.guard_count} guard, "
            f"{self.held_out_count} held-out images ({self.held_out_source})",
        ]
        det = self.detection
        if det is not None:
            verdict = "DETECTED" if det.detected else "no evidence"
            target = det.target if det.detected else "-"
            lines.append(
                f"  detection: score {det.score:.2f} (threshold {det.threshold:g}) {verdict}; "
                f"suspected target {target}"
                + ("; all-to-all" if det.all_to_all else "")
                + (
                    f"; all-to-one: the exits lead to {det.exit_target}"
                    if det.exit_target is not None
                    else ""
                )
                + (f"; shortcut {det.shortcut:.2f}" if det.shortcut is not None else "")
            )
            lines.append(
                f"  {det.samples} samples in {det.seconds:.1f}s "
                f"({det.samples / max(det.seconds, 1e-9):.0f}/s, CPU {det.cpu_seconds:.1f}s)"
            )
            lines.append(
                f"  {'class':>5} {'L1 norm':>8} {'flip %':>7} {'NC idx':>7} {'norm idx':>8} "
                f"{'margin':>7} {'mrg idx':>7} {'score':>6}"
            )
            for c in det.classes:
                flip = self.held_out_flip[c.label] if c.label < len(self.held_out_flip) else None
                margin = "n/a" if c.margin is None else f"{c.margin:.1f}"
                m_index = "n/a" if c.margin_index is None else f"{c.margin_index:.2f}"
                lines.append(
                    f"  {c.label:>5} {c.norm:>8.1f} {pct(flip):>7} {c.nc_index:>7.2f} "
                    f"{c.norm_index:>8.2f} {margin:>7} {m_index:>7} {c.score:>6.2f}"
                    + ("  <- suspected" if c.suspected else "")
                )
        lines.append(
            f"  dormancy profile: score {self.score:.3f}, "
            f"{int(self.profile.dormant().sum())} dormant channels"
        )
        lines.append(f"  {'defence':<12}{'clean acc %':>12}{'ASR %':>8}{'rev. flip %':>12}  note")
        for r in self.rows:
            lines.append(
                f"  {r.defence:<12}{pct(r.accuracy):>12}{pct(r.attack_success):>8}"
                f"{pct(r.recovered_flip):>12}  {r.note}"
            )
        if self.trigger_count:
            lines.append(f"  ASR on {self.trigger_count} triggered inputs (--trigger-data)")
        lines.append(f"  total {self.seconds:.1f}s (CPU {self.cpu_seconds:.1f}s)")
        return "\n".join(lines)
