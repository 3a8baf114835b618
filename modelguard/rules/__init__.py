"""The rule catalogue: every finding a check can emit has a documented entry here.

Ids are stable and grouped: MG0xx general, MG1xx pickle, MG2xx archives,
MG3xx tensor/model formats (``rules.scan``), MG4xx provenance
(``rules.provenance``), MG5xx backdoor analysis (``rules.backdoor``).
Checks pass the ``Rule`` objects themselves; ``modelguard rules`` prints this
catalogue and SARIF embeds it as tool.driver.rules.
"""

from __future__ import annotations

from modelguard.rules import backdoor, provenance, scan
from modelguard.rules.base import HELP_BASE, Rule

RULES: dict[str, Rule] = {r.id: r for r in (*scan.RULES, *provenance.RULES, *backdoor.RULES)}

__all__ = ["HELP_BASE", "RULES", "Rule", "all_rules", "get"]


def get(rule_id: str) -> Rule:
    """The rule with this id; ``KeyError`` naming the id when there is none."""
    try:
        return RULES[rule_id]
    except KeyError:
        raise KeyError(f"unknown rule id {rule_id!r}") from None


def all_rules() -> list[Rule]:
    """Every rule, sorted by id."""
    return sorted(RULES.values(), key=lambda r: r.id)
