"""Provenance: fetch, lock, verify and sign model artifacts.

Every verification outcome is a :class:`~modelguard.findings.Finding` (MG4xx) in
an ordinary :class:`~modelguard.findings.Report`, so the text, JSON and SARIF
reporters render provenance exactly like scan results, and ``Report.merged``
combines them. One module per verb: :mod:`.fetch`, :mod:`.lock`, :mod:`.verify`,
:mod:`.signing` (the public functions are ``modelguard.fetch``, ``lock``,
``verify`` and ``sign``); :mod:`.hub` and :mod:`.sources` turn sources into plans.
"""
