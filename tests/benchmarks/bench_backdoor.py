"""Backdoor analyzer on the shipped fixtures: the paper's Table 1 shape, and speed.

    python tests/benchmarks/bench_backdoor.py [--seeds 3] [--epochs 10] [--samples 20000]

1. For the clean model, the baseline BadNet and the pruning-aware BadNet
   (``fixtures/backdoor``, TorchScript), clean accuracy (cl) and attack success
   rate (bd) on the test split after no defence, fine-tuning only, pruning only
   and fine-pruning (Liu, Dolan-Gavitt & Garg, RAID 2018, Table 1), with each
   fine-tuning learning-rate schedule. Fine-tuning is stochastic: every cell is
   the mean over ``--seeds`` fine-tuning seeds, with the range.
2. Where the baseline BadNet's backdoor lives: conv3's activation by position
   on clean and triggered inputs, how strongly the channels clean data uses most
   respond to the trigger, and the effect of cutting the first dense layer off
   the map positions under the trigger.
3. Activation collection time and samples/s per model format on the CPU, and
   on CUDA when torch sees a GPU (``--samples`` inputs: the validation split
   repeated).

Not a test: it prints tables and asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from modelguard.backdoor.activations import collect_profile
from modelguard.backdoor.api import analyze_backdoor, default_layer
from modelguard.backdoor.data import Dataset, load_data
from modelguard.backdoor.loaders import load_model

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "backdoor"
FACTORY = f"{FIXTURES / 'digits_net.py'}:make_model"
MODELS = (("clean", "clean model"), ("badnet", "baseline BadNet"), ("pruneaware", "pruning-aware"))
DEFENCES = ("none", "fine-tuning", "pruning", "fine-pruning")
FORMATS = ("ts", "pt2", "safetensors", "onnx")


def cell(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) == 1 or max(values) - min(values) < 5e-4:
        return f"{mean:.1f}"
    return f"{mean:.1f} ({100 * min(values):.1f}–{100 * max(values):.1f})"


def defence_table(seeds: int, epochs: int, schedule: str) -> str:
    lines = [
        f"| model | {' | '.join(f'{d} cl / bd' for d in DEFENCES)} | pruned | score |",
        "|---|" + "---:|" * (len(DEFENCES) + 2),
    ]
    for name, label in MODELS:
        runs = [
            analyze_backdoor(
                FIXTURES / f"{name}.ts",
                FIXTURES / "val.npz",
                trigger_data=FIXTURES / "test_trigger.npz",
                target=0,
                test_data=FIXTURES / "test.npz",
                device="cpu",
                epochs=epochs,
                lr_schedule=schedule,
                seed=seed,
            )
            for seed in range(seeds)
        ]
        cells = []
        for defence in DEFENCES:
            rows = [run.row(defence) for run in runs]
            acc = [r.accuracy for r in rows if r.accuracy is not None]
            asr = [r.attack_success for r in rows if r.attack_success is not None]
            cells.append(f"{cell(acc)} / {cell(asr)}")
        pruning = runs[0].pruning
        assert pruning is not None
        pruned = f"{pruning.chosen}/{pruning.channels}"
        lines.append(f"| {label} | {' | '.join(cells)} | {pruned} | {runs[0].score:.3f} |")
    return "\n".join(lines)


def diagnosis() -> str:
    """Is the baseline backdoor in dormant channels, or in positions of active ones?"""
    import torch
    from safetensors.torch import load_file

    from modelguard.backdoor.loaders import load_factory

    net = load_factory(FACTORY)()
    net.load_state_dict(load_file(str(FIXTURES / "badnet.safetensors")))
    net.eval()
    clean, trig, test = (np.load(FIXTURES / f"{n}.npz") for n in ("val", "test_trigger", "test"))
    seen: list[torch.Tensor] = []
    net.conv3.register_forward_hook(lambda _m, _i, out: seen.append(out.clamp(min=0)))

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(net(torch.from_numpy(x)).argmax(1).numpy())

    predict(clean["x"])
    predict(trig["x"])
    clean_map, trig_map = seen[0].mean(0), seen[1].mean(0)  # (channels, 4, 4)
    by_use = clean_map.mean(dim=(1, 2)).argsort(descending=True)
    top = by_use[:16]
    gain = (trig_map[:, 2:, 2:] - clean_map[:, 2:, 2:]).mean(dim=(1, 2))
    lines = [
        "conv3 mean activation by map position (channels averaged), clean -> triggered:",
        *(
            "  " + "  ".join(f"{c:4.2f}->{t:4.2f}" for c, t in zip(crow, trow, strict=True))
            for crow, trow in zip(
                clean_map.mean(0).tolist(), trig_map.mean(0).tolist(), strict=True
            )
        ),
        f"trigger's gain in the bottom-right 2x2 of the map: {gain[top].mean():.2f} for the 16 "
        f"channels clean data uses most, {gain[by_use[-16:]].mean():.2f} for the 16 it uses least",
    ]
    weights = net.fc1.weight.data.view(net.fc1.out_features, -1, 4, 4)
    for label, rows, cols in (
        ("(3,3)", slice(3, 4), slice(3, 4)),
        ("2x2", slice(2, 4), slice(2, 4)),
    ):
        saved = weights.clone()
        weights[:, :, rows, cols] = 0
        acc = float((predict(test["x"]) == test["y"]).mean())
        asr = float((predict(trig["x"]) == 0).mean())
        weights.copy_(saved)
        lines.append(
            f"fc1 cut off the bottom-right {label} map positions: clean acc {100 * acc:.1f}%, "
            f"ASR {100 * asr:.1f}%"
        )
    return "\n".join(lines)


def repeated(data: Dataset, samples: int) -> Dataset:
    reps = -(-samples // len(data))
    x = np.concatenate([data.x] * reps)[:samples]
    y = np.concatenate([data.y] * reps)[:samples]
    return Dataset(x, y, data.source)


def speed_table(samples: int, devices: list[str], batch_size: int) -> str:
    data = repeated(load_data(FIXTURES / "val.npz"), samples)
    lines = [
        "| format | device | samples | seconds | samples/s |",
        "|---|---|---:|---:|---:|",
    ]
    for device in devices:
        for fmt in FORMATS:
            path = FIXTURES / f"badnet.{fmt}"
            model = load_model(path, device=device, factory=FACTORY)
            layer = default_layer(model.layers()).name
            collect_profile(model, layer, repeated(data, batch_size), batch_size)  # warm-up
            start = time.perf_counter()
            profile = collect_profile(model, layer, data, batch_size)
            seconds = time.perf_counter() - start
            lines.append(
                f"| {model.format} | {model.device} | {profile.samples:,} | {seconds:.3f} "
                f"| {profile.samples / seconds:,.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--schedules", default="cosine,constant")
    args = parser.parse_args()

    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, ")
    print(f"{torch.get_num_threads()} CPU threads, devices {devices}\n")
    for schedule in args.schedules.split(","):
        print(
            f"clean accuracy / attack success (%), test split, {args.epochs} epochs, "
            f"SGD lr 0.01 momentum 0.9, {schedule} schedule, mean (range) over "
            f"{args.seeds} fine-tuning seeds:\n"
        )
        print(defence_table(args.seeds, args.epochs, schedule))
        print()
    print("where the baseline BadNet's backdoor lives:\n")
    print(diagnosis())
    print()
    print("activation collection (layer conv3, baseline BadNet):\n")
    print(speed_table(args.samples, devices, args.batch_size))


if __name__ == "__main__":
    main()
