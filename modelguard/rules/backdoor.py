"""MG5xx: findings of the backdoor analyzer."""

from __future__ import annotations

from modelguard.findings import Severity
from modelguard.rules.base import Rule

DORMANT_CHANNELS = Rule(
    "MG501",
    "backdoor-dormant-channels",
    Severity.MEDIUM,
    "The analysed layer has channels that clean data leaves dormant but that "
    "the network is wired to listen to.",
    "BadNet-style backdoors tend to live in neurons that clean inputs do not "
    "activate (Liu, Dolan-Gavitt & Garg, RAID 2018). The dormancy score is the "
    "share of the layer's filter norm (L2, per channel) held by channels clean "
    "data leaves dormant; the pruning-aware attack's decoys, strong filters "
    "silenced by a negative bias, raise it. A high score is a hint, not proof: "
    "clean networks have dead units too. A low score is no all-clear: a "
    "backdoor carried by channels clean data also uses leaves no dormancy trace.",
    "Run the analysis with trigger data if you suspect a specific trigger, and "
    "repair the model with --fine-prune (prune dormant channels, then fine-tune "
    "on clean data).",
    ("security", "backdoor"),
)
TRIGGER_EFFECTIVE = Rule(
    "MG502",
    "backdoor-trigger-effective",
    Severity.HIGH,
    "Inputs carrying the given trigger are classified as the target label.",
    "The attack success rate (share of triggered inputs whose true label is not "
    "the target but which the model labels as the target) is high: the model "
    "responds to the trigger as a backdoor would.",
    "Do not deploy the model. Repair it with --fine-prune and re-check, or "
    "obtain a model trained from trusted data.",
    ("security", "backdoor"),
)
BACKDOOR_SURVIVES = Rule(
    "MG503",
    "backdoor-survives-repair",
    Severity.HIGH,
    "After pruning and fine-tuning, the trigger still works.",
    "Fine-pruning did not bring the attack success rate below the residual "
    "threshold within the clean-accuracy budget; the backdoor may live in "
    "channels clean data also uses.",
    "Try a larger --max-acc-drop or more --epochs, analyse another --layer, or "
    "retrain the model from trusted data.",
    ("security", "backdoor"),
)
ANALYSIS_SUMMARY = Rule(
    "MG504",
    "backdoor-analysis-summary",
    Severity.INFO,
    "Backdoor analysis results: dormancy profile, pruning and fine-pruning.",
    "Clean accuracy and attack success rate before any defence, after "
    "fine-tuning only, after pruning only and after fine-pruning, with the "
    "number of channels pruned within the accuracy budget.",
    "No action needed; read the numbers.",
    ("backdoor",),
)
REPAIRED_MODEL_WRITTEN = Rule(
    "MG505",
    "backdoor-repaired-model-written",
    Severity.INFO,
    "A fine-pruned copy of the model was written.",
    "The pruned channels are zeroed (weights and bias) and were kept at zero "
    "during fine-tuning; the file has the input's format where feasible.",
    "Scan and evaluate the repaired model before using it.",
    ("backdoor",),
)

RULES: tuple[Rule, ...] = (
    DORMANT_CHANNELS,
    TRIGGER_EFFECTIVE,
    BACKDOOR_SURVIVES,
    ANALYSIS_SUMMARY,
    REPAIRED_MODEL_WRITTEN,
)
