"""Backdoor detection without trigger data: four statistics, one score.

1. **Reversed-trigger norm** (Neural Cleanse, :mod:`reverse`): per class, the
   L1 norm of the smallest mask that sends clean inputs there. Suspicious:
   small. Scored by the anomaly index of the *log* norms, so that "ten times
   smaller than the median" counts the same whatever the spread of the others
   (NC as published uses the raw norms and a threshold of 2; that index is
   reported too, as ``nc_index``). The spread it divides by is floored at
   0.15 (about 15%): added after the first model of the ``eval`` family, a clean
   one, was flagged because six of its ten norms agreed within 5%.
2. **Maximum margin** (MM-BD, :mod:`margins`): per class, the largest logit
   margin any input reaches. Suspicious: large. Scored by the anomaly index of
   the log margins. Covers triggers too large for NC's mask norm to stand out.
3. **Both at once**: two weak signs on the same class add up. Large patches on
   the fixture family's ``dev`` half gave their target one of the two smallest
   norms in all six models and the largest margin in five, while neither index
   crossed its threshold in three. Per class: ``(norm index / its threshold +
   margin index / its threshold) / 1.15``, positive sides only; 1.15 keeps the
   same headroom over the ``dev`` clean models as the score had without it
   (largest clean value 0.96 / 1.15 = 0.84, the old largest clean score).
4. **Shortcut** (:mod:`untargeted`): one value per model, large when every
   class has a small way out (all-to-all backdoors, which give no target a
   small mask).
5. **Universal mapping** (:mod:`mapping`): one value per model, large when a
   single small mask moves every class and where it sends an input depends on
   the input's class (all-to-all: n -> n+1). Added after the ``eval`` half's
   all-to-all models were missed 2 of 5 times and one was named as a single
   target; a model where it fires is taken as all-to-all. A second universal
   search that stops at 80% moved (the *probe*) is scored too, with its own
   offset, and the larger of the two counts: added after ``holdout4``'s
   all-to-all model scored 0.88 at 99% (its search grew a blob) and 3.25 on the
   probe.

The score is the largest of these, each divided by its threshold, so a
model is flagged when ``score >= 1`` (:data:`THRESHOLD`): when any statistic
crosses its own threshold. Suspected targets are every class whose part
crosses (two triggers to two targets name both), and a runner-up nearly as
strong as the best (``_with_close_runners_up``).
A model is taken as all-to-all, every class a suspected target, when the
mapping fires, or when the shortcut fires and no class stands out or the exits
lead nearly each to a different class (``untargeted.exits_spread``).

Thresholds were set on the ``dev`` half of the fixture family
(``fixtures/backdoor/family.py``); the ``eval`` half, once its numbers had
been seen, served as a second calibration half, and the ``holdout`` halves
judge (``tests/benchmarks/bench_backdoor.py --split dev --report`` prints what
they rest on). They are calibrated on small digit CNNs only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from modelguard.backdoor.anomaly import anomaly_index
from modelguard.backdoor.mapping import (
    PROBE_SIZE_OFFSET,
    PROBE_SUCCESS,
    mapping_score,
    source_dependence,
)
from modelguard.backdoor.margins import MarginRun, MarginSettings, max_margins
from modelguard.backdoor.model import AnalysedModel
from modelguard.backdoor.reverse import (
    UNIVERSAL,
    Progress,
    RecoveredTrigger,
    ReverseRun,
    ReverseSettings,
    Task,
    reverse_engineer,
)
from modelguard.backdoor.untargeted import (
    dominant_destination,
    dominant_exit,
    exit_destination,
    exits_spread,
    shortcut_score,
)

THRESHOLD = 1.0  # of the combined score
# anomaly index of the log mask norms: 3 on ``dev``; 4 after the ``holdout2`` half's
# clean models were flagged 3 of 6 (digit 3 is a natural sink: index up to 3.9); on the
# 18 clean and 125 backdoored models of eval, holdout and holdout2, 4 flags no clean
# model and misses one large patch and two adaptive models more than 3 did
NORM_THRESHOLD = 4.0
MARGIN_THRESHOLD = 3.5  # anomaly index of the log maximum margins
JOINT_THRESHOLD = 1.15  # of the two parts' sum, on one class
SHORTCUT_THRESHOLD = 2.0  # log(median targeted / smallest untargeted mask norms)
RUNNER_UP = 0.7  # a close runner-up's part, of the threshold (see _with_close_runners_up)
RUNNER_UP_SHARE = 0.75  # ... and of the best class's part
MAPPING_THRESHOLD = 1.0  # of the universal-mapping statistic (see mapping.py)
NC_PUBLISHED_THRESHOLD = 2.0  # Neural Cleanse's own, on raw norms
MIN_LOG_SPREAD = 0.15  # floor of the log indices' scaled MAD (see anomaly.anomaly_index)


@dataclass(frozen=True)
class DetectionSettings:
    reverse: ReverseSettings = field(default_factory=ReverseSettings)
    margins: MarginSettings = field(default_factory=MarginSettings)
    untargeted: bool = True
    max_margin: bool = True
    norm_threshold: float = NORM_THRESHOLD
    margin_threshold: float = MARGIN_THRESHOLD
    joint_threshold: float = JOINT_THRESHOLD
    shortcut_threshold: float = SHORTCUT_THRESHOLD
    mapping_threshold: float = MAPPING_THRESHOLD


@dataclass(frozen=True)
class ClassEvidence:
    label: int
    norm: float  # L1 of the reversed mask
    flip_rate: float  # of the reversed trigger, on the data it was optimised on
    reached: bool  # the flip rate reached NC's 99% at some point
    nc_index: float  # Neural Cleanse's anomaly index (raw norms; positive = small)
    norm_index: float  # anomaly index of log norms (positive = small)
    margin: float | None
    margin_index: float | None  # anomaly index of log margins (positive = large)
    untargeted_norm: float | None  # smallest mask sending this class elsewhere
    score: float  # this class's part of the combined score
    suspected: bool
    # where its smallest exit sends this class's images (untargeted.exit_destination)
    exit_to: int | None = None


@dataclass(frozen=True)
class Detection:
    classes: tuple[ClassEvidence, ...]
    shortcut: float | None
    score: float
    threshold: float
    detected: bool
    targets: tuple[int, ...]
    all_to_all: bool
    triggers: tuple[RecoveredTrigger, ...]  # targeted, one per class
    untargeted_triggers: tuple[RecoveredTrigger, ...]
    universal_trigger: RecoveredTrigger | None  # one mask moving every class off its label
    statistics: tuple[str, ...]  # what was tested
    samples: int
    seconds: float
    cpu_seconds: float
    # the universal trigger's source dependence and the mapping statistic (None: not run)
    dependence: float | None = None
    mapping: float | None = None  # the larger of the 99% search's and the probe's
    probe_trigger: RecoveredTrigger | None = None  # the universal search at 80% moved
    probe_dependence: float | None = None
    probe_fired: bool = False  # the mapping crossed its threshold on the probe alone
    # The all-to-all statistics fired (what the repair stamps follows them), but the
    # exits lead to one class: an all-to-one backdoor there (``all_to_all`` False).
    via_exits: bool = False
    exit_target: int | None = None
    # where the 99% universal search and the probe send most of what they move
    universal_destinations: tuple[int | None, ...] = ()
    # all-to-all because the exits lead nearly each to a different class, though a class
    # stood out (``untargeted.exits_spread``)
    spread_exits: bool = False

    @property
    def nc_flagged(self) -> tuple[int, ...]:
        """Labels Neural Cleanse as published would flag (raw index > 2, small side)."""
        return tuple(c.label for c in self.classes if c.nc_index > NC_PUBLISHED_THRESHOLD)

    @property
    def target(self) -> int | list[int] | None:
        if not self.detected:
            return None
        if len(self.targets) == 1:
            return self.targets[0]
        return list(self.targets)

    def repair_triggers(self) -> list[RecoveredTrigger]:
        """What unlearning should stamp: the reversed triggers of every suspect; for an
        all-to-all suspect its untargeted and universal triggers (and the probe, below).

        An all-to-all trigger reaches each target from one source only, so the
        per-target reversed masks are not it; stamping them costs clean accuracy,
        which makes the guard back off from the ones that are. On the fixture
        family's ``dev`` all-to-all models (5 flagged) every trigger left 14.9%
        mean ASR, the untargeted and universal ones alone 5.9%; adding the targeted
        triggers of the classes that stood out on their own (4 and 5, natural
        sinks of those models) took two of them from 4.5% and 2.1% to 22.7% and 13.0%.

        The probe (the universal search at 80%) is stamped too when the mapping fires on
        it: it is then the patch, where the 99% search may have grown a blob. On the
        all-to-all models of ``holdout3`` and ``holdout4`` (seen) it left 4.5% mean ASR
        (max 8.2) and 19.5% (max 72.9, the one model where the probe did not fire),
        against 7.8% and 22.1% unlearning without it; the clean-accuracy cost stayed
        noise-bound either way (mean 2.6 and 4.1 pp, against 2.1 and 3.8). Where only
        the 99% search fired, a probe that was no patch took 73% -> 92%, so it is left
        out there.
        """
        if not self.detected:
            return []
        if not self.all_to_all and not self.via_exits:
            return [t for t in self.triggers if t.label in self.targets]
        chosen = list(self.untargeted_triggers)
        if self.universal_trigger is not None:
            chosen.append(self.universal_trigger)
        if self.probe_trigger is not None and self.probe_fired:
            chosen.append(self.probe_trigger)
        return chosen


def detect(
    forward: object,
    x: np.ndarray,
    y: np.ndarray,
    classes: int,
    settings: DetectionSettings,
    device: str,
    progress: Progress | None = None,
) -> Detection:
    """Reverse-engineer every class (and source) in one batch, search margins, combine."""
    assert callable(forward)
    tasks = [Task(label, True) for label in range(classes)]
    present = set(np.unique(y).tolist())
    if settings.untargeted:
        tasks += [Task(label, False) for label in range(classes) if label in present]
        tasks.append(Task(UNIVERSAL, False))
    run: ReverseRun = reverse_engineer(forward, x, y, tasks, settings.reverse, device, progress)
    targeted = [t for t in run.triggers if t.targeted]
    untargeted = [t for t in run.triggers if not t.targeted and not t.universal]
    universal = next((t for t in run.triggers if t.universal), None)
    samples, seconds, cpu = run.samples, run.seconds, run.cpu_seconds

    labels = np.asarray(y)
    destinations: list[int | None] = []  # the universal search's, then the probe's

    def dependence_of(trigger: RecoveredTrigger) -> float:
        moved_to = _predict(forward, trigger.stamp(x), device)
        destinations.append(dominant_destination(labels, moved_to))
        return source_dependence(labels, moved_to, classes)

    exits = {
        t.label: exit_destination(t.label, _predict(forward, t.stamp(x[labels == t.label]), device))
        for t in untargeted
    }
    dependence = None
    probe = None
    probe_dependence = None
    if universal is not None:
        dependence = dependence_of(universal)
        # a separate run, so that the detection batch stays as it was calibrated
        probe_run = reverse_engineer(
            forward,
            x,
            y,
            [Task(UNIVERSAL, False)],
            replace(settings.reverse, success=PROBE_SUCCESS),
            device,
        )
        probe = probe_run.triggers[0]
        probe_dependence = dependence_of(probe)
        samples += probe_run.samples
        seconds += probe_run.seconds
        cpu += probe_run.cpu_seconds
    margins: MarginRun | None = None
    if settings.max_margin:
        margins = max_margins(
            forward,
            tuple(x.shape[1:]),
            classes,
            float(x.min()),
            float(x.max()),
            settings.margins,
            device,
        )
        samples += margins.samples
        seconds += margins.seconds
        cpu += margins.cpu_seconds
    return combine(
        targeted,
        untargeted,
        margins,
        settings,
        samples,
        seconds,
        cpu,
        universal,
        dependence,
        probe,
        probe_dependence,
        exits,
        tuple(destinations),
    )


def rechecker(
    x: np.ndarray, y: np.ndarray, classes: int, settings: DetectionSettings, device: str
) -> Callable[[AnalysedModel], list[RecoveredTrigger]]:
    """Detection re-run on a repaired model, per target only (no all-to-all statistics):
    the reversed triggers of the classes that still stand out, for unlearning's last
    round (``defences.unlearn``)."""
    targeted_only = replace(settings, untargeted=False)

    def again(model: AnalysedModel) -> list[RecoveredTrigger]:
        found = detect(model.differentiable(), x, y, classes, targeted_only, device)
        if not found.detected:
            return []
        return [t for t in found.triggers if t.label in found.targets]

    return again


def _with_close_runners_up(
    evidence: list[ClassEvidence], targets: tuple[int, ...]
) -> tuple[int, ...]:
    """Flagged classes plus any class whose part is nearly as strong as the strongest.

    When the best class only just crosses the threshold, the evidence does not
    single it out: on the ``eval`` half an adaptive model's true target scored
    0.88 beside a wrong class's 1.09, and only the wrong one was repaired. A
    runner-up at >= RUNNER_UP of the threshold and >= RUNNER_UP_SHARE of the
    best part is named too (unlearning a clean class's trigger costs little;
    leaving the real one costs everything).
    """
    best = max(c.score for c in evidence)
    close = [
        c.label
        for c in evidence
        if c.label not in targets and c.score >= RUNNER_UP and c.score >= RUNNER_UP_SHARE * best
    ]
    return tuple(sorted({*targets, *close}))


def _predict(forward: object, x: np.ndarray, device: str) -> np.ndarray:
    import torch

    assert callable(forward)
    out = []
    with torch.no_grad():
        for start in range(0, len(x), 256):
            batch = torch.from_numpy(np.ascontiguousarray(x[start : start + 256])).to(device)
            out.append(forward(batch).argmax(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def combine(
    targeted: list[RecoveredTrigger],
    untargeted: list[RecoveredTrigger],
    margins: MarginRun | None,
    settings: DetectionSettings,
    samples: int = 0,
    seconds: float = 0.0,
    cpu_seconds: float = 0.0,
    universal: RecoveredTrigger | None = None,
    dependence: float | None = None,
    probe: RecoveredTrigger | None = None,
    probe_dependence: float | None = None,
    exits: dict[int, int | None] | None = None,
    universal_destinations: tuple[int | None, ...] = (),
) -> Detection:
    """The one score from the statistics' raw values (pure: no model needed).

    ``exits``: per source class, where its untargeted trigger leads
    (:func:`untargeted.exit_destination`); ``universal_destinations``: where the 99%
    universal search and the probe send most of what they move, when one class gets
    most of it (:func:`untargeted.dominant_destination`).
    """
    norms = np.asarray([max(t.norm, 1e-6) for t in targeted], dtype=np.float64)
    nc_index = anomaly_index(norms, low_is_suspicious=True)
    norm_index = anomaly_index(np.log(norms), low_is_suspicious=True, min_spread=MIN_LOG_SPREAD)
    margin_index = None
    if margins is not None:
        margin_index = anomaly_index(
            np.log(np.maximum(margins.margins.astype(np.float64), 1e-6)),
            low_is_suspicious=False,
            min_spread=MIN_LOG_SPREAD,
        )
    shortcut = shortcut_score(targeted, untargeted) if untargeted else None
    by_source = {t.label: t.norm for t in untargeted}
    evidence: list[ClassEvidence] = []
    for i, trigger in enumerate(targeted):
        norm_part = float(norm_index[i]) / settings.norm_threshold
        part = norm_part
        m_index = None if margin_index is None else float(margin_index[i])
        if m_index is not None:
            margin_part = m_index / settings.margin_threshold
            joint = (max(norm_part, 0.0) + max(margin_part, 0.0)) / settings.joint_threshold
            part = max(part, margin_part, joint)
        evidence.append(
            ClassEvidence(
                label=trigger.label,
                norm=trigger.norm,
                flip_rate=trigger.flip_rate,
                reached=trigger.reached,
                nc_index=float(nc_index[i]),
                norm_index=float(norm_index[i]),
                margin=None if margins is None else float(margins.margins[i]),
                margin_index=m_index,
                untargeted_norm=by_source.get(trigger.label),
                exit_to=None if exits is None else exits.get(trigger.label),
                score=part,
                suspected=part >= THRESHOLD,
            )
        )
    score = max((c.score for c in evidence), default=0.0)
    shortcut_part = 0.0 if shortcut is None else shortcut / settings.shortcut_threshold
    score = max(score, shortcut_part)
    mapping = None
    if universal is not None and dependence is not None and len(norms):
        mapping = mapping_score(dependence, float(np.median(norms)), universal.norm)
    probed = None
    if probe is not None and probe_dependence is not None and len(norms):
        probed = mapping_score(
            probe_dependence, float(np.median(norms)), probe.norm, PROBE_SIZE_OFFSET
        )
        mapping = probed if mapping is None else max(mapping, probed)
    mapping_part = 0.0 if mapping is None else mapping / settings.mapping_threshold
    score = max(score, mapping_part)
    targets = tuple(c.label for c in evidence if c.suspected)
    # the shortcut alone names all-to-all only when no class stands out: small exits
    # everywhere also come with two ordinary targets (the holdout half's two-trigger
    # models were taken as all-to-all by the "unexplained" test); the mapping decides,
    # or exits that lead nearly each to a different class: a single target explains
    # none of that (holdout10's alltoall_3 was taken for class 4 and kept 59% ASR)
    fired = shortcut_part >= THRESHOLD
    mapped = mapping_part >= THRESHOLD
    spread = fired and not mapped and bool(targets) and exits is not None and exits_spread(exits)
    via_exits = mapped or (fired and not targets) or spread
    # ... unless the exits lead to one class: then it is all-to-one, and named
    exit_target = dominant_exit(exits) if via_exits and exits else None
    all_to_all = via_exits and exit_target is None
    if all_to_all:
        targets = tuple(c.label for c in evidence)
    elif exit_target is not None:
        named = {exit_target, *(d for d in universal_destinations if d is not None)}
        targets = tuple(sorted({*targets, *named}))
    elif targets:
        targets = _with_close_runners_up(evidence, targets)
    evidence = [replace(c, suspected=c.label in targets) for c in evidence]
    statistics = ["reversed-trigger norm (Neural Cleanse)"]
    if margins is not None:
        statistics.append("maximum margin (MM-BD)")
        statistics.append("norm and margin on one class")
    if shortcut is not None:
        statistics.append("untargeted shortcut (all-to-all)")
    if mapping is not None:
        statistics.append("universal trigger's source-dependent mapping (all-to-all)")
    return Detection(
        classes=tuple(evidence),
        shortcut=shortcut,
        score=float(score),
        threshold=THRESHOLD,
        detected=score >= THRESHOLD,
        targets=targets,
        all_to_all=all_to_all,
        via_exits=via_exits,
        spread_exits=spread and all_to_all,
        exit_target=exit_target,
        universal_destinations=universal_destinations,
        triggers=tuple(targeted),
        untargeted_triggers=tuple(untargeted),
        universal_trigger=universal,
        statistics=tuple(statistics),
        samples=samples,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        dependence=dependence,
        mapping=mapping,
        probe_trigger=probe,
        probe_dependence=probe_dependence,
        probe_fired=probed is not None and probed / settings.mapping_threshold >= THRESHOLD,
    )
