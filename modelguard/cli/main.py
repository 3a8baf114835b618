"""Old import path of the command group (``modelguard.cli.main:cli``), kept for
scripts and entry points installed before the group moved to ``modelguard.cli``."""

from __future__ import annotations

from modelguard.cli import cli, main

__all__ = ["cli", "main"]

if __name__ == "__main__":  # pragma: no cover
    main()
