"""Backdoor detection and repair on the fixture family (fixtures/backdoor/family.py).

    python tests/benchmarks/bench_backdoor.py [--split eval] [--count 6] [--shard 0/1]
    python tests/benchmarks/bench_backdoor.py --report            # tables from the results

Trains the family if missing (seeded; into fixtures/backdoor/generated/SPLIT),
then per model, on one CPU thread: detection (our combined score, and Neural
Cleanse as published: raw anomaly index > 2), and every repair measured on the
judge's 447 test images with the attack's real trigger(s):

- ``unlearn``: ours (unlearn every suspected label's recovered trigger, two
  rounds: the second re-reverses the suspects on the repaired model; none when
  nothing is detected);
- ``nc``: Neural Cleanse as published (unlearn the labels with index > 2, one
  round);
- ``fine-prune`` and ``fine-tune`` (the control), and ``none``.

The defender has the 350 validation images (80% tuning, 20% the accuracy
guard). Results append to ``results-SPLIT.jsonl`` beside the models (shards
can run in parallel); ``--report`` prints per attack kind: detection AUROC
against the clean models, flagged at the threshold, target named, ASR after
each method (mean / max), clean-accuracy drop, CPU seconds; and the Table-1
shape of Liu et al. (clean accuracy / ASR after none, fine-tuning, pruning,
fine-pruning).

``--split dev`` runs the calibration half (what the thresholds were set on);
``eval`` became a second calibration half once its numbers had been seen;
``holdout`` and ``holdout2`` to ``holdout12`` were each trained after the method
they judge was fixed, and run once (the README says which commit each judged).
``--report`` re-scores stored statistics with the current thresholds, so run
it from the commit a family judged to see that run's numbers. Not a test: it
prints tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "backdoor"
sys.path.insert(0, str(FIXTURES))

import family  # noqa: E402

from modelguard.backdoor.activations import collect_profile  # noqa: E402
from modelguard.backdoor.data import load_data  # noqa: E402
from modelguard.backdoor.defences import (  # noqa: E402
    RepairSettings,
    fine_prune,
    fine_tune_only,
    rereverser,
    unlearn,
)
from modelguard.backdoor.detection import DetectionSettings, detect, rechecker  # noqa: E402
from modelguard.backdoor.loaders import load_model  # noqa: E402
from modelguard.backdoor.model import FineTuneSettings  # noqa: E402
from modelguard.backdoor.prune import accuracy  # noqa: E402
from modelguard.backdoor.reverse import ReverseSettings  # noqa: E402
from modelguard.backdoor.split import split_data  # noqa: E402

FACTORY = f"{FIXTURES / 'digits_net.py'}:make_model"
ATTACKS = [k for k in family.KINDS if k != "clean"]
METHODS = ("none", "unlearn", "nc", "fine-prune", "fine-tune")


def asr_of(module: Any, triggers: list[family.Trigger], x: np.ndarray, y: np.ndarray) -> float:
    """Worst ASR over the model's triggers (all-to-all: over every target class)."""
    import torch

    rates = []
    with torch.no_grad():
        for trigger in triggers:
            keep = trigger.victims(y)
            pred = module(torch.from_numpy(trigger.stamp(x[keep]))).argmax(1).numpy()
            hit = pred == trigger.relabel(y[keep])
            if trigger.target == family.ALL_TO_ALL:
                goal = trigger.relabel(y[keep])
                rates += [float(hit[goal == t].mean()) for t in np.unique(goal)]
            else:
                rates.append(float(hit.mean()))
    return max(rates) if rates else 0.0


def analyse(folder: Path, name: str, test: Any) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    meta = json.loads((folder / f"{name}.json").read_text())
    triggers = family.load_triggers(folder / f"{name}.trigger.npz")
    model = load_model(folder / f"{name}.safetensors", device="cpu", factory=FACTORY)
    clean = load_data(folder / "val.npz")
    parts = split_data(clean, held_out_fraction=0.3, guard_fraction=0.2, seed=0, test=test)
    cpu = time.process_time()
    detection = detect(
        model.differentiable(), parts.tune.x, parts.tune.y, 10, DetectionSettings(), "cpu"
    )
    detect_cpu = time.process_time() - cpu
    module = model.differentiable()
    settings = RepairSettings(FineTuneSettings(10, 0.003, 32, 0, "cosine"))
    snapshot = model.snapshot()

    def measure() -> dict[str, float]:
        return {
            "acc": accuracy(model, test, 256),
            "asr": asr_of(model.differentiable(), triggers, test.x, test.y),
        }

    results: dict[str, dict[str, float]] = {"none": measure()}
    rechecked: list[int] = []  # classes still flagged after unlearning's rounds
    rounds = 0
    repair_note = ""
    profile = collect_profile(model, "conv3", parts.tune, 256)
    for method in METHODS[1:]:
        torch.manual_seed(0)
        start = time.process_time()
        if method == "unlearn":
            chosen = detection.repair_triggers()
            if chosen:
                again = rereverser(parts.tune, ReverseSettings(), "cpu")
                recheck = rechecker(parts.tune.x, parts.tune.y, 10, DetectionSettings(), "cpu")
                outcome = unlearn(
                    model,
                    parts.tune,
                    parts.guard,
                    chosen,
                    settings,
                    256,
                    rereverse=again,
                    recheck=recheck,
                )
                rechecked = list(outcome.rechecked)
                rounds = outcome.rounds
                repair_note = outcome.note  # which back-offs, blends and retries it took
        elif method == "nc":
            flagged = [t for t in detection.triggers if t.label in detection.nc_flagged]
            if flagged:  # one round, as published
                one = replace(settings, rounds=1)
                unlearn(model, parts.tune, parts.guard, flagged, one, 256)
        elif method == "fine-prune":
            outcome = fine_prune(model, "conv3", profile, parts.tune, parts.guard, settings, 256)
            assert outcome.pruning is not None
            model.restore(snapshot)  # Table 1's "pruning only" row
            model.prune("conv3", outcome.pruning.mask())
            results["pruning"] = measure()
            model.restore(snapshot)
            fine_prune(model, "conv3", profile, parts.tune, parts.guard, settings, 256)
        else:
            fine_tune_only(model, parts.tune, parts.guard, settings, 256)
        results[method] = {**measure(), "cpu": time.process_time() - start}
        model.restore(snapshot)
    del module
    true = sorted({t.target for t in triggers})
    return {
        "name": name,
        "kind": meta["kind"],
        "params": meta["params"],
        "true_targets": true,
        "score": detection.score,
        "detected": detection.detected,
        "targets": list(detection.targets),
        "all_to_all": detection.all_to_all,
        "via_exits": detection.via_exits,
        "exits": [c.exit_to for c in detection.classes],
        "universal_destinations": list(detection.universal_destinations),
        "nc_score": max(c.nc_index for c in detection.classes),
        "nc_flagged": list(detection.nc_flagged),
        "norms": [c.norm for c in detection.classes],
        "unorms": [t.norm for t in detection.untargeted_triggers],
        "margins": [c.margin for c in detection.classes],
        "shortcut": detection.shortcut,
        "universal_norm": None
        if detection.universal_trigger is None
        else detection.universal_trigger.norm,
        "dependence": detection.dependence,
        "probe_norm": None if detection.probe_trigger is None else detection.probe_trigger.norm,
        "probe_dependence": detection.probe_dependence,
        "mapping": detection.mapping,
        "detect_cpu": detect_cpu,
        "results": results,
        "rechecked": rechecked,
        "rounds": rounds,
        "repair_note": repair_note,
    }


def rescore(record: dict[str, Any]) -> dict[str, Any]:
    """Recompute the combined score from the stored raw statistics with the current
    thresholds (so a report after a method change needs no re-run). Unlearning is
    only re-usable when the detected set did not change."""
    from modelguard.backdoor.detection import combine
    from modelguard.backdoor.margins import MarginRun
    from modelguard.backdoor.reverse import RecoveredTrigger

    def fake(label: int, norm: float, targeted: bool) -> RecoveredTrigger:
        empty = np.zeros((1, 1), np.float32)
        return RecoveredTrigger(label, targeted, empty, empty[None], norm, 1.0, True, 0)

    targeted = [fake(i, n, True) for i, n in enumerate(record["norms"])]
    untargeted = [fake(i, n, False) for i, n in enumerate(record["unorms"])]
    margins = MarginRun(np.asarray(record["margins"], np.float32), 0, 0.0, 0.0)
    universal = None
    if record.get("universal_norm") is not None:
        universal = fake(-1, record["universal_norm"], False)
    probe = None
    if record.get("probe_norm") is not None:
        probe = fake(-1, record["probe_norm"], False)
    det = combine(
        targeted,
        untargeted,
        margins,
        DetectionSettings(),
        universal=universal,
        dependence=record.get("dependence"),
        probe=probe,
        probe_dependence=record.get("probe_dependence"),
        # stored since the exits' destinations were measured (records before: None)
        exits=None if record.get("exits") is None else dict(enumerate(record["exits"])),
        universal_destinations=tuple(record.get("universal_destinations", ())),
    )
    out = dict(record)
    out.update(score=det.score, detected=det.detected, targets=list(det.targets))
    out["all_to_all"] = det.all_to_all
    # what unlearning stamps follows the all-to-all statistics either way
    same_repair = record.get("via_exits", record["all_to_all"]) == det.via_exits and (
        det.via_exits or out["targets"] == record["targets"]
    )
    if not same_repair:
        results = dict(record["results"])
        if not det.detected:
            results["unlearn"] = results["none"]  # auto repairs nothing
        else:
            results["unlearn"] = {"acc": float("nan"), "asr": float("nan")}
        out["results"] = results
    if not same_repair or out["targets"] != record["targets"]:
        out["rescored"] = True
    return out


def auroc(positive: list[float], negative: list[float]) -> float:
    if not positive or not negative:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def named(record: dict[str, Any], targets: list[int]) -> bool:
    true = record["true_targets"]
    if true == [family.ALL_TO_ALL]:
        return len(targets) == 10
    return set(true) <= set(targets) and len(targets) <= len(true) + 1


def pct(values: list[float]) -> str:
    values = [v for v in values if v == v]  # NaN: not measured under this method version
    if not values:
        return "n/a"
    return f"{100 * statistics.fmean(values):.1f} / {100 * max(values):.1f}"


def report(records: list[dict[str, Any]]) -> None:
    clean = [r for r in records if r["kind"] == "clean"]
    print(f"models: {len(records)} ({len(clean)} clean)\n")
    print("### Detection (ours: combined score >= 1; NC as published: anomaly index > 2)\n")
    print(
        "| attack | n | AUROC ours | AUROC NC | flagged ours | flagged NC "
        "| target named ours | target named NC | CPU s detect (mean/max) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    clean_flag = sum(r["detected"] for r in clean)
    clean_nc = sum(bool(r["nc_flagged"]) for r in clean)
    cpu = [r["detect_cpu"] for r in clean]
    print(
        f"| clean | {len(clean)} | | | {clean_flag}/{len(clean)} | {clean_nc}/{len(clean)} | | | "
        f"{statistics.fmean(cpu):.1f} / {max(cpu):.1f} |"
        if clean
        else "| clean | 0 |"
    )
    for kind in ATTACKS:
        rows = [r for r in records if r["kind"] == kind]
        if not rows:
            continue
        ours = auroc([r["score"] for r in rows], [r["score"] for r in clean])
        nc = auroc([r["nc_score"] for r in rows], [r["nc_score"] for r in clean])
        flagged = [r for r in rows if r["detected"]]
        nc_flagged = [r for r in rows if r["nc_flagged"]]
        named_ours = sum(named(r, r["targets"]) for r in flagged)
        named_nc = sum(named(r, r["nc_flagged"]) for r in nc_flagged)
        cpu = [r["detect_cpu"] for r in rows]
        print(
            f"| {kind} | {len(rows)} | {ours:.2f} | {nc:.2f} | {len(flagged)}/{len(rows)} "
            f"| {len(nc_flagged)}/{len(rows)} | {named_ours}/{len(flagged)} "
            f"| {named_nc}/{len(nc_flagged)} | {statistics.fmean(cpu):.1f} / {max(cpu):.1f} |"
        )
    print(
        "\n### Repair: ASR % on the test split (mean / max), clean-accuracy drop pp (mean / max)\n"
    )
    print("| attack | n | " + " | ".join(f"{m} ASR" for m in METHODS) + " | "
          + " | ".join(f"{m} drop" for m in METHODS[1:]) + " |")  # fmt: skip
    print("|---|---:|" + "---:|" * (2 * len(METHODS) - 1))
    for kind in ["clean", *ATTACKS]:
        rows = [r for r in records if r["kind"] == kind]
        if not rows:
            continue
        cells = [pct([r["results"][m]["asr"] for r in rows]) for m in METHODS]
        drops = []
        for m in METHODS[1:]:
            d = [r["results"]["none"]["acc"] - r["results"][m]["acc"] for r in rows]
            drops.append(f"{100 * statistics.fmean(d):.1f} / {100 * max(d):.1f}")
        if kind == "clean":
            cells = ["-"] * len(METHODS)
        print(f"| {kind} | {len(rows)} | " + " | ".join(cells + drops) + " |")
    print("\n### Unlearning on the flagged models only (what `--method auto` repairs)\n")
    print("| attack | flagged | ASR % (mean / max) | drop pp (mean / max) | fine-tune ASR % |")
    print("|---|---:|---:|---:|---:|")
    for kind in ATTACKS:
        rows = [r for r in records if r["kind"] == kind and r["detected"]]
        if not rows:
            continue
        d = [r["results"]["none"]["acc"] - r["results"]["unlearn"]["acc"] for r in rows]
        print(
            f"| {kind} | {len(rows)} | {pct([r['results']['unlearn']['asr'] for r in rows])} "
            f"| {100 * statistics.fmean(d):.1f} / {100 * max(d):.1f} "
            f"| {pct([r['results']['fine-tune']['asr'] for r in rows])} |"
        )
    print("\n### Table 1 shape (Liu et al.): clean acc % / ASR % on the test split, means\n")
    print("| model | none | fine-tuning | pruning | fine-pruning |")
    print("|---|---:|---:|---:|---:|")
    for kind in ("clean", "badnet", "pruneaware"):
        rows = [r for r in records if r["kind"] == kind]
        if not rows:
            continue
        cells = []
        for m in ("none", "fine-tune", "pruning", "fine-prune"):
            acc = statistics.fmean(r["results"][m]["acc"] for r in rows)
            asr = statistics.fmean(r["results"][m]["asr"] for r in rows)
            cells.append(
                f"{100 * acc:.1f} / {100 * asr:.1f}" if kind != "clean" else f"{100 * acc:.1f}"
            )
        print(f"| {kind} ({len(rows)}) | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=family.SPLITS, default="eval")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--kinds", default=",".join(family.KINDS))
    parser.add_argument(
        "--shard", default="0/1", help="I/N: analyse every N-th model from I (0 <= I < N)"
    )
    parser.add_argument("--report", action="store_true", help="print tables from the results")
    parser.add_argument(
        "--existing", action="store_true", help="only the models already trained (train none)"
    )
    args = parser.parse_args()
    try:
        index, total = (int(v) for v in args.shard.split("/"))
    except ValueError:
        parser.error(f"--shard {args.shard!r}: expected I/N, two integers")
    if total < 1:
        parser.error(f"--shard {args.shard}: N must be at least 1")
    if not 0 <= index < total:
        # shards count from 0: "2/2" would silently analyse nothing
        parser.error(f"--shard {args.shard}: I must be 0 to {total - 1}")
    folder = FIXTURES / "generated" / args.split
    results = folder / f"results-{args.split}.jsonl"
    if args.report:
        records = [json.loads(line) for line in results.read_text().splitlines() if line]
        latest = {r["name"]: rescore(r) for r in records}
        changed = [name for name, r in latest.items() if r.get("rescored")]
        if changed:
            print(f"rescored with the current thresholds, suspects changed: {changed}")
        report(list(latest.values()))
        return
    import torch

    torch.set_num_threads(1)
    data = family.split_digits()
    family.write_data(folder, data)
    kinds = tuple(args.kinds.split(","))
    names = [f"{k}_{i}" for i in range(args.count) for k in kinds]
    done = set()
    if results.exists():
        done = {json.loads(line)["name"] for line in results.read_text().splitlines() if line}
    test = load_data(folder / "test.npz")
    test = replace(test, source="test split")
    for position, name in enumerate(names):
        if position % total != index or name in done:
            continue
        kind, number = name.rsplit("_", 1)
        if args.existing and not (folder / f"{name}.json").exists():
            continue
        if not (folder / f"{name}.json").exists():
            member, model, triggers = family.build(args.split, kind, int(number), data)
            family.save_member(folder, member, model, triggers)
        record = analyse(folder, name, test)
        with results.open("a") as out:
            out.write(json.dumps(record) + "\n")
        print(
            f"{name}: score {record['score']:.2f} targets {record['targets']} (true "
            f"{record['true_targets']}) ASR none {record['results']['none']['asr']:.2f} "
            f"unlearn {record['results']['unlearn']['asr']:.2f} cpu {record['detect_cpu']:.0f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
