"""The supply-chain attacks of issue 11, replayed against one or two modelguard trees.

    python tests/benchmarks/supply_attacks.py [--old PATH] [--hub-024-python PYTHON]

Each attack runs the ``modelguard`` CLI in a subprocess (``PYTHONPATH`` set to
the tree under test) against the loopback servers of ``tests/conftest.py``: a
lying Hub, a redirecting HTTPS server, a server that stalls mid-download. It
prints one row per attack and tree: the exit status and what happened
(``--old`` names an older checkout, e.g. ``git archive <rev> | tar -x -C DIR``,
to show the behaviour before). Not run by pytest: the tests in
``tests/supply/test_attack_*.py`` assert the same cases.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
_spec = importlib.util.spec_from_file_location("tests_conftest", HERE.parent / "conftest.py")
assert _spec is not None and _spec.loader is not None
servers: Any = importlib.util.module_from_spec(_spec)
sys.modules["tests_conftest"] = servers  # dataclasses look their module up
_spec.loader.exec_module(servers)

WEIGHTS = bytes(range(256)) * 300
EVIL = b"cposix\nsystem\n(S'echo pwned'\ntR."
NEVER = b'[tool.modelguard]\nfail-on = "never"\n'


class Tree:
    """One modelguard source tree, run as ``python -m modelguard`` in a folder."""

    def __init__(self, label: str, root: Path, python: str = sys.executable) -> None:
        self.label, self.root, self.python = label, root, python

    def run(
        self, folder: Path, env: dict[str, str], *args: str
    ) -> subprocess.CompletedProcess[str]:
        full = {**env, "PYTHONPATH": str(self.root), "NO_COLOR": "1"}
        return subprocess.run(
            [self.python, "-m", "modelguard", *args],
            cwd=folder, env=full, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    def popen(self, folder: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
        full = {**env, "PYTHONPATH": str(self.root), "NO_COLOR": "1"}
        return subprocess.Popen(
            [self.python, "-m", "modelguard", *args], cwd=folder, env=full, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip


def keypair(folder: Path) -> tuple[Path, Path]:
    subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "k.pem"],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "ec", "-in", "k.pem", "-pubout", "-out", "k.pub.pem"],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    return folder / "k.pem", folder / "k.pub.pem"


def model_folder(folder: Path) -> Path:
    model = folder / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(WEIGHTS)
    (model / "config.json").write_text("{}\n")
    return model


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[7] ^= 1
    path.write_bytes(bytes(data))


Env = dict[str, str]
Attack = Callable[[Tree, Path, Env, Any], str]


def verify_policy_in_tree(tree: Tree, work: Path, env: Env, world: Any) -> str:
    model = model_folder(work)
    key, pub = keypair(work)
    tree.run(work, env, "sign", "model", "--key", str(key))
    flip(model / "weights.bin")
    (model / "pyproject.toml").write_bytes(NEVER)
    done = tree.run(model, env, "verify", ".", "--key", str(pub))
    return f"exit {done.returncode}"


def scan_exclude_in_tree(tree: Tree, work: Path, env: Env, world: Any) -> str:
    (work / "pyproject.toml").write_text('[tool.modelguard]\nexclude = ["*.bin"]\n')
    (work / "weights.bin").write_bytes(EVIL)
    done = tree.run(work, env, "scan", ".", "--no-cache")
    return f"exit {done.returncode}, MG101 {'reported' if 'MG101' in done.stdout else 'missed'}"


def fetch_into_working_folder(tree: Tree, work: Path, env: Env, world: Any) -> str:
    (work / "pyproject.toml").write_text('[tool.modelguard]\nfail-on = "high"\n')
    world.hub.add("evil/policy", {"pyproject.toml": NEVER, "config.json": b"{}"})
    world.hub.add("evil/model", {"pytorch_model.bin": EVIL}, lfs={"pytorch_model.bin"})
    tree.run(work, env, "fetch", "hf://evil/policy")
    replaced = (work / "pyproject.toml").read_bytes() == NEVER
    done = tree.run(work, env, "fetch", "hf://evil/model", "--quarantine", "../q")
    placed = (work / "pytorch_model.bin").exists()
    return (
        f"pyproject {'replaced' if replaced else 'kept'}; evil pickle "
        f"{'placed' if placed else 'not placed'}, exit {done.returncode}"
    )


def hostile_name(name: str) -> Attack:
    def attack(tree: Tree, work: Path, env: Env, world: Any) -> str:
        repo = f"evil/n{abs(hash(name)) % 10**6}"
        world.hub.add(repo, {name: b"[core]\n\tfsmonitor = touch pwned\n", "m.bin": WEIGHTS})
        done = tree.run(work, env, "fetch", f"hf://{repo}", "--dest", "dest")
        placed = (work / "dest" / name).exists()
        return f"{'placed' if placed else 'not placed'}, exit {done.returncode}"

    return attack


def https_to_http(tree: Tree, work: Path, env: Env, world: Any) -> str:
    target = world.http.serve("/d/m.bin", WEIGHTS)
    url = world.https.redirect("/d/m.bin", target)
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    done = tree.run(work, env, "fetch", url, "--sha256", digest, "--dest", "dest")
    placed = (work / "dest" / "m.bin").exists()
    named = "http hop named" if target in done.stdout + done.stderr else "http hop not named"
    return f"{'placed' if placed else 'not placed'}, exit {done.returncode}, {named}"


def symlinked_subfolder(tree: Tree, work: Path, env: Env, world: Any) -> str:
    outside = work / "outside"
    outside.mkdir()
    (work / "dest").mkdir()
    (work / "dest" / "onnx").symlink_to(outside, target_is_directory=True)
    world.hub.add("acme/linked", {"onnx/model.onnx": b"\x08\x07onnx", "m.bin": WEIGHTS})
    done = tree.run(work, env, "fetch", "hf://acme/linked", "--dest", "dest")
    escaped = sorted(p.name for p in outside.iterdir())
    return f"outside the destination: {escaped or 'nothing'}, exit {done.returncode}"


def sigterm_mid_download(tree: Tree, work: Path, env: Env, world: Any) -> str:
    url = world.http.serve("/d/big.bin", bytes(range(256)) * 12288, hold_after=2 << 20)
    proc = tree.popen(work, env, "fetch", url, "--dest", "dest", "--allow-http", "--no-progress")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = (
            list((work / "dest").glob(".modelguard-partial-*")) if (work / "dest").exists() else []
        )
        if found and found[0].stat().st_size:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    world.http.release.set()
    left = list((work / "dest").glob(".modelguard-partial-*"))
    size = sum(p.stat().st_size for p in left)
    return f"{len(left)} partial file(s) left ({size:,} bytes)"


def fetched_mode(tree: Tree, work: Path, env: Env, world: Any) -> str:
    world.hub.add("acme/mode", {"m.bin": WEIGHTS}, lfs={"m.bin"})
    old = os.umask(0o022)
    try:
        tree.run(work, env, "fetch", "hf://acme/mode", "--dest", "dest")
    finally:
        os.umask(old)
    placed = work / "dest" / "m.bin"
    return f"mode {placed.stat().st_mode & 0o777:o}" if placed.exists() else "not placed"


def signature_coverage(tree: Tree, work: Path, env: Env, world: Any) -> str:
    model = model_folder(work)
    key, pub = keypair(work)
    tree.run(work, env, "sign", "model", "--key", str(key))
    (model / ".github").mkdir()
    (model / ".github" / "x.yml").write_text("on: push\n")
    (model / ".modelguard-partial-1-x.bin").write_bytes(b"unverified")
    done = tree.run(work, env, "verify", "model", "--key", str(pub), "--format", "json", "-v")
    reported = sum(
        1
        for a in json.loads(done.stdout or '{"artifacts": []}')["artifacts"]
        for f in a["findings"]
        if f["rule_id"] != "MG400"
    )
    return f"exit {done.returncode}, {reported} of 2 added files reported"


def lock_and_sign(tree: Tree, work: Path, env: Env, world: Any) -> str:
    model_folder(work)
    key, _ = keypair(work)
    tree.run(work, env, "lock", "model", "--lock", "model/modelguard.lock")
    tree.run(work, env, "sign", "model", "--key", str(key))
    tree.run(work, env, "sign", "model", "--key", str(key))  # re-sign
    done = tree.run(work, env, "verify", "model", "--lock", "model/modelguard.lock")
    return f"verify against the lock after re-signing: exit {done.returncode}"


ATTACKS: dict[str, Attack] = {
    "verify . with a pyproject fail-on=never in the tree": verify_policy_in_tree,
    "scan . with exclude=*.bin in the tree": scan_exclude_in_tree,
    "fetch into . (policy repo, then a posix.system pickle)": fetch_into_working_folder,
    "Hub file named .git/config": hostile_name(".git/config"),
    "Hub file name with a newline": hostile_name("a\nb.bin"),
    "fetch https:// redirected to http://": https_to_http,
    "destination with a symlinked subfolder": symlinked_subfolder,
    "SIGTERM mid-download": sigterm_mid_download,
    "fetched file under umask 022": fetched_mode,
    ".github/ and a partial file added after signing": signature_coverage,
    "lock inside a signed folder, then re-sign": lock_and_sign,
}


class World:
    def __init__(self, folder: Path) -> None:
        self.http = servers.LoopbackServer()
        self.hub_server = servers.LoopbackServer()
        self.hub = servers.FakeHub(self.hub_server)
        tls = servers.make_tls_files(folder)
        self.https = servers.LoopbackServer(tls=tls)
        self.env = {
            **os.environ,
            "HF_ENDPOINT": self.hub_server.url,
            "HF_HOME": str(folder / "hf-home"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "SSL_CERT_FILE": str(tls.cert),
            "MODELGUARD_CACHE_DIR": str(folder / "mg-cache"),
            "XDG_CACHE_HOME": str(folder / "xdg"),
        }

    def close(self) -> None:
        for server in (self.http, self.hub_server, self.https):
            server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="an older modelguard checkout to compare")
    parser.add_argument("--hub-024-python", help="a Python whose huggingface_hub is 0.24.x")
    args = parser.parse_args()
    trees = [Tree("this tree", REPO)]
    if args.old:
        trees.insert(0, Tree("old", args.old.resolve()))
    for tree in trees:
        with tempfile.TemporaryDirectory() as base:
            world = World(Path(base))
            try:
                for index, (label, attack) in enumerate(ATTACKS.items()):
                    work = Path(base) / f"a{index}"
                    work.mkdir()
                    world.http.release.clear()
                    print(f"{tree.label:10} | {label:55} | {attack(tree, work, world.env, world)}")
                if args.hub_024_python:
                    work = Path(base) / "hub024"
                    work.mkdir()
                    world.hub.add("acme/old", {"m.bin": WEIGHTS}, lfs={"m.bin"})
                    old_hub = Tree(tree.label, tree.root, args.hub_024_python)
                    done = old_hub.run(work, world.env, "fetch", "hf://acme/old", "--dest", "d")
                    tail = (done.stderr.strip().splitlines() or [""])[-1][:70]
                    print(f"{tree.label:10} | {'fetch hf:// with huggingface_hub 0.24':55} | "
                          f"exit {done.returncode} {tail}")  # fmt: skip
            finally:
                world.close()


if __name__ == "__main__":
    main()
