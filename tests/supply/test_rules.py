"""The MG4xx provenance rules are registered and documented."""

from __future__ import annotations

from modelguard.rules import all_rules
from modelguard.supply import rules as supply_rules


def test_provenance_rules_registered_with_docs() -> None:
    catalogue = {r.id: r for r in all_rules()}
    ids = [
        getattr(supply_rules, name)
        for name in dir(supply_rules)
        if name.isupper() and name != "PROVENANCE_RULES"
    ]
    assert len(ids) == len(supply_rules.PROVENANCE_RULES) == 11
    for rule_id in ids:
        rule = catalogue[rule_id]
        assert rule_id.startswith("MG4")
        assert rule.summary and rule.description and rule.fix
        assert "provenance" in rule.tags
