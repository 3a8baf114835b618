"""MG5xx: findings of the backdoor analyzer."""

from __future__ import annotations

from modelguard.findings import Severity
from modelguard.rules.base import Rule

DORMANT_CHANNELS = Rule(
    "MG501",
    "backdoor-dormant-channels",
    Severity.INFO,
    "Dormancy profile: how much of the analysed layer's filter mass clean data leaves idle.",
    "The share of the layer's filter norm (L2, per channel) held by channels clean "
    "data leaves dormant (Liu, Dolan-Gavitt & Garg, RAID 2018). It is a profile, not "
    "a detector: on the fixture family it ranked baseline BadNets below clean models "
    "(AUROC 0.22) and flagged every clean model at its old threshold, so it no longer "
    "raises a severity. The pruning-aware attack's decoys (strong filters silenced by "
    "a negative bias) raise it; a backdoor in channels clean data also uses leaves no "
    "trace here.",
    "No action needed; read it beside the detection finding (MG506 or MG507).",
    ("backdoor",),
)
TRIGGER_EFFECTIVE = Rule(
    "MG502",
    "backdoor-trigger-effective",
    Severity.HIGH,
    "Inputs carrying the given trigger are classified as the target label.",
    "The attack success rate (share of triggered inputs whose true label is not "
    "the target but which the model labels as the target) is high: the model "
    "responds to the trigger as a backdoor would.",
    "Do not deploy the model. Repair it with --repair OUT (unlearning) and re-check, "
    "or obtain a model trained from trusted data.",
    ("security", "backdoor"),
)
BACKDOOR_SURVIVES = Rule(
    "MG503",
    "backdoor-survives-repair",
    Severity.HIGH,
    "After the repair, the trigger still works on held-out inputs.",
    "The repair did not bring the attack success rate (of the given trigger, or of "
    "the recovered trigger) on held-out inputs below the residual threshold within "
    "the clean-accuracy budget; or detection, re-run on the repaired model, still "
    "flags a class that unlearning could not remove within it; or the accuracy guard "
    "refused the repair outright (every fine-tuning and blend cost more than the budget), "
    "so nothing was written.",
    "Try --method unlearn (if another method was used), more --epochs, or retrain "
    "the model from trusted data.",
    ("security", "backdoor"),
)
ANALYSIS_SUMMARY = Rule(
    "MG504",
    "backdoor-analysis-summary",
    Severity.INFO,
    "Backdoor analysis results: held-out accuracy and attack success per defence.",
    "Clean accuracy and attack success rate on held-out inputs (never the ones "
    "tuned on) before any defence and after each repair that ran, with the number "
    "of held-out inputs.",
    "No action needed; read the numbers.",
    ("backdoor",),
)
REPAIRED_MODEL_WRITTEN = Rule(
    "MG505",
    "backdoor-repaired-model-written",
    Severity.INFO,
    "A repaired copy of the model was written.",
    "The model after the chosen repair (unlearning, fine-pruning or fine-tuning), "
    "in the input's format, written atomically.",
    "Scan and evaluate the repaired model before using it.",
    ("backdoor",),
)
BACKDOOR_DETECTED = Rule(
    "MG506",
    "backdoor-detected",
    Severity.HIGH,
    "Reverse-engineered triggers point to a backdoor; the suspected target is named.",
    "Without any trigger data, the analyzer searched, for every class, for the "
    "smallest trigger that sends clean inputs there (Neural Cleanse), for the "
    "largest logit margin any input reaches (MM-BD) and for the smallest way out "
    "of every class (all-to-all backdoors). A class that needs an abnormally small "
    "trigger, or reaches an abnormally large margin, is a backdoor's target; the "
    "combined score and its threshold are in the message.",
    "Do not deploy the model. Repair it with --repair OUT (unlearns the recovered "
    "triggers, checks held-out accuracy) and re-analyse, or obtain a model trained "
    "from trusted data.",
    ("security", "backdoor"),
)
NO_BACKDOOR_EVIDENCE = Rule(
    "MG507",
    "backdoor-no-evidence",
    Severity.INFO,
    "No evidence of a backdoor was found by the statistics that ran.",
    "None of the detection statistics crossed its threshold. This is not a proof "
    "that the model is clean: the message lists what was tested and what was not "
    "(for example source-specific triggers, triggers that are not additive stamps, "
    "or attacks aimed at these statistics).",
    "Obtain models from trusted sources; re-analyse with more clean data if you have it.",
    ("backdoor",),
)

RULES: tuple[Rule, ...] = (
    DORMANT_CHANNELS,
    TRIGGER_EFFECTIVE,
    BACKDOOR_SURVIVES,
    ANALYSIS_SUMMARY,
    REPAIRED_MODEL_WRITTEN,
    BACKDOOR_DETECTED,
    NO_BACKDOOR_EVIDENCE,
)
