"""The registry engine loads only for registry scans (a file scan's start-up cost)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import modelguard.registry as registry


def test_every_exported_name_resolves() -> None:
    for name in registry.__all__:
        assert getattr(registry, name) is not None


def test_a_file_scan_does_not_load_the_registry_engine(tmp_path: Path) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(b"\x80\x04K\x01.")
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from modelguard.cli.main import cli\n"
        f"result = CliRunner().invoke(cli, ['scan', '--no-cache', {str(model)!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in sys.modules if m.startswith('modelguard.registry.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert "modelguard.registry.run" not in out, out
    assert "modelguard.registry.hub" not in out, out
