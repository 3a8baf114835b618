"""The MG4xx provenance rules are in the catalogue and documented."""

from __future__ import annotations

from modelguard.rules import all_rules, provenance


def test_provenance_rules_registered_with_docs() -> None:
    catalogue = {r.id: r for r in all_rules()}
    assert [r.id for r in provenance.RULES] == [f"MG4{n:02d}" for n in range(18)]
    for rule in provenance.RULES:
        assert catalogue[rule.id] is rule
        assert rule.id.startswith("MG4")
        assert rule.summary and rule.description and rule.fix
        assert "provenance" in rule.tags
