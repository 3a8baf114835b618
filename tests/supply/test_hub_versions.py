"""modelguard works with the oldest huggingface_hub it declares (>=0.24), not only the newest.

The test environment has the newest release; this test lays huggingface_hub
0.24 over it in a throw-away virtual environment (its wheel unpacked into the
new environment's site-packages, everything else reached through the test
environment's) and runs the Hub tests there. Before: with 0.36.2, inside the
declared range, ``fetch hf://`` said the package was missing because of an
undeclared ``import httpx2``.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

LOWEST = "0.24.*"
REPO = Path(__file__).resolve().parents[2]
HUB_TESTS = [
    "tests/supply/test_fetch_hf.py",
    "tests/supply/test_attack_fetch.py",
    "tests/integrations/test_remote.py",
    "tests/cli/test_options.py::test_no_progress_silences_huggingface_hub_bars",
]


def _lowest_hub_wheel(folder: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
         "--dest", str(folder), f"huggingface_hub=={LOWEST}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    wheels = sorted(folder.glob("huggingface_hub-*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(f"cannot download huggingface_hub {LOWEST}: {done.stderr.strip()[-300:]}")
    return wheels[-1]


def _overlay_venv(root: Path, wheel: Path) -> Path:
    """A venv whose own site-packages holds only the old wheel, in front of ours."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    with zipfile.ZipFile(wheel) as archive:  # a pure-Python wheel: unpacking installs it
        archive.extractall(purelib)
    ours = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(ours))
    Path(purelib, "zz-modelguard-test-env.pth").write_text(lines)
    return python


@pytest.mark.slow
def test_hub_tests_pass_with_the_lowest_supported_huggingface_hub(tmp_path: Path) -> None:
    wheel = _lowest_hub_wheel(tmp_path / "wheels")
    python = _overlay_venv(tmp_path / "venv", wheel)
    version = subprocess.run(
        [str(python), "-c", "import huggingface_hub; print(huggingface_hub.__version__)"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout.strip()  # fmt: skip
    assert version.startswith("0.24."), version
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *HUB_TESTS],
        capture_output=True, text=True, timeout=900, check=False, cwd=REPO, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
