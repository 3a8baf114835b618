"""Where does a BadNet's backdoor live? Fixture variants of the backdoor study.

    python tests/benchmarks/backdoor_variants.py [--only NAME ...] [--seeds 1]

The shipped fixtures (``fixtures/backdoor``) do not reproduce the paper's central
observation for the baseline attack: their backdoor is not carried by channels
clean data leaves dormant, so pruning in order of mean clean activation does not
remove it. This script retrains the fixtures with one thing changed at a time
(the head after the last convolution, the input resolution and hence the
receptive field, the trigger's look and place, the layer's width, the poisoning
rate) and runs the analyzer on each, to see whether any of these is the reason.
It prints, per variant, the baseline BadNet's attack success rate (test split)
after each defence, the channels pruned within the 4-point budget, and the
dormancy score of the clean model, the BadNet and the pruning-aware BadNet.

Training uses the fixture script's own functions, seeds and schedule; each
32x32 variant takes a few minutes on two CPU cores. Not a test: it prints a
table and asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "backdoor"
sys.path.insert(0, str(FIXTURE_DIR))

import make_backdoor_fixtures as fixtures  # noqa: E402

from modelguard.backdoor.api import analyze_backdoor  # noqa: E402

Stamp = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Variant:
    name: str
    scale: int  # nearest-neighbour upsampling of the 8x8 digits
    head: str  # what follows conv3: "fc" (4x4 map), "pool" (2x2), "gap" (1x1)
    trigger: str
    width: int = 64
    poison: float = fixtures.POISON_FRACTION


VARIANTS = (
    Variant("shipped: 8x8, fc head, 2x2 corner patch", 1, "fc", "corner2"),
    Variant("8x8, max-pool head", 1, "pool", "corner2"),
    Variant("8x8, global-average head", 1, "gap", "corner2"),
    Variant("8x8, 3x3 checkerboard on the digit", 1, "fc", "checker3_centre"),
    Variant("32x32, 4x4 white square, bottom right", 4, "pool", "square4_corner"),
    Variant("32x32, 6x6 checkerboard, bottom right", 4, "pool", "checker6_corner"),
    Variant("32x32, 6x6 checkerboard on the digit", 4, "pool", "checker6_centre"),
    Variant("32x32, checkerboard on digit, 128 channels", 4, "pool", "checker6_centre", 128),
    Variant(
        "32x32, checkerboard on the digit, 5% poisoned", 4, "pool", "checker6_centre", 64, 0.05
    ),
)


def checkerboard(size: int) -> np.ndarray:
    return (np.indices((size, size)).sum(0) % 2).astype(np.float32)


def stamp_for(trigger: str) -> Stamp:
    def stamp(x: np.ndarray) -> np.ndarray:
        out = x.copy()
        if trigger == "corner2":  # the shipped trigger
            out[:, :, -2:, -2:] = 1.0
        elif trigger == "checker3_centre":
            out[:, :, 3:6, 3:6] = checkerboard(3)
        elif trigger == "square4_corner":
            out[:, :, -6:-2, -6:-2] = 1.0
        elif trigger == "checker6_corner":
            out[:, :, -7:-1, -7:-1] = checkerboard(6)
        elif trigger == "checker6_centre":
            out[:, :, 13:19, 13:19] = checkerboard(6)
        else:
            raise ValueError(trigger)
        return out

    return stamp


class VariantNet(nn.Module):
    """The fixture network (digits_net.py) with the head and resolution varied.

    The variant picks modules here, never in forward(): TorchScript's graph then
    has no control flow and every layer is visible to the analyzer.
    """

    def __init__(self, variant: Variant) -> None:
        super().__init__()
        upsampled = variant.scale > 1
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        # 32x32 inputs are pooled once more, so conv3 sees 8x8 and its receptive
        # field (18 px) is smaller than the image; on 8x8 inputs it sees it all.
        self.pool1: nn.Module = nn.MaxPool2d(2) if upsampled else nn.Identity()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, variant.width, 3, padding=1)
        heads: dict[str, nn.Module] = {
            "fc": nn.Identity(),
            "pool": nn.MaxPool2d(2),
            "gap": nn.AdaptiveAvgPool2d(1),
        }
        self.head = heads[variant.head]
        conv3_side = 8 if upsampled else 4
        side = {"fc": conv3_side, "pool": conv3_side // 2, "gap": 1}[variant.head]
        hidden = 64 if upsampled else 32
        self.fc1 = nn.Linear(variant.width * side * side, hidden)
        self.fc2 = nn.Linear(hidden, 10)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu(self.conv1(x)))
        x = self.pool2(self.relu(self.conv2(x)))
        x = self.head(self.relu(self.conv3(x)))
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


def train_variant(variant: Variant, out: Path) -> None:
    """The fixture script's recipe with the variant's network, data and trigger."""
    original_split = fixtures.split_digits

    def split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
        kron = np.ones((1, 1, variant.scale, variant.scale), np.float32)
        return {k: (np.kron(x, kron), y) for k, (x, y) in original_split().items()}

    fixtures.make_model = lambda: VariantNet(variant)
    fixtures.stamp_trigger = stamp_for(variant.trigger)
    fixtures.POISON_FRACTION = variant.poison
    torch.manual_seed(fixtures.SEED)
    data = split()
    fixtures.write_data(out, data)
    for name, model in fixtures.train_models(data).items():
        model.eval()
        torch.jit.save(torch.jit.script(model), str(out / f"{name}.ts"))


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def study(variant: Variant, seeds: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        train_variant(variant, out)
        scores = {}
        for name in ("clean", "badnet", "pruneaware"):
            scores[name] = analyze_backdoor(
                out / f"{name}.ts", out / "val.npz", device="cpu", defences=False
            ).score
        runs = [
            analyze_backdoor(
                out / "badnet.ts",
                out / "val.npz",
                trigger_data=out / "test_trigger.npz",
                target=fixtures.TARGET,
                test_data=out / "test.npz",
                device="cpu",
                seed=seed,
            )
            for seed in range(seeds)
        ]
    cells = []
    for defence in ("none", "fine-tuning", "pruning", "fine-pruning"):
        asr = [run.row(defence).attack_success for run in runs]
        acc = [run.row(defence).accuracy for run in runs]
        mean_asr = float(np.mean([a for a in asr if a is not None]))
        mean_acc = float(np.mean([a for a in acc if a is not None]))
        cells.append(f"{pct(mean_acc)} / {pct(mean_asr)}")
    pruning = runs[0].pruning
    assert pruning is not None
    score_cell = " / ".join(f"{scores[n]:.3f}" for n in ("clean", "badnet", "pruneaware"))
    return (
        f"| {variant.name} | {' | '.join(cells)} | {pruning.chosen}/{pruning.channels} "
        f"| {score_cell} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="variant names containing these words")
    parser.add_argument("--seeds", type=int, default=1, help="fine-tuning seeds per variant")
    args = parser.parse_args()
    chosen = [v for v in VARIANTS if not args.only or any(w in v.name for w in args.only)]
    print(
        "baseline BadNet, clean accuracy / attack success (%) on the test split, "
        f"mean over {args.seeds} fine-tuning seed(s); dormancy score of clean / BadNet / "
        "pruning-aware\n"
    )
    print(
        "| variant | none | fine-tuning | pruning | fine-pruning | pruned in budget "
        "| dormancy score |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for variant in chosen:
        print(study(variant, args.seeds), flush=True)


if __name__ == "__main__":
    main()
