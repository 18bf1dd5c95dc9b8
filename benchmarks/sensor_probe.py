"""What a sensor pretraining run's representation carries: a linear-probe sweep over pretraining
settings, with MiniRocket on the same draws.

The few-label benchmark (``sensor_fewlabel.py``) takes half an hour and mixes the representation
with fine-tuning. This one isolates the representation, so a pretraining setting can be judged in
about a minute:

1. For each variant (the recipe, or the recipe with ``key=value`` overrides), pretrain on the data
   set's training split without labels (2 threads).
2. On each of ``--draws`` random draws of k labelled recordings per class (the few-label benchmark's
   draws), fit the recipe's head on frozen features, and nothing else: the pooled statistics of
   every layer and a logistic head (:func:`wavssl.train.classify.fit_logistic_head`,
   ``optim.max_updates = 0``). Score it on the whole test split.
3. The same head on the same architecture with random weights ("untrained"): what pretraining adds.
4. In the same run, fit aeon's ``MiniRocketClassifier`` on the same draws (the peer).

``--diagnostic-pretrain-on-test`` adds a variant pretrained on the training *and test* series. It
breaks the protocol on purpose (the test series are never pretrained on in a real comparison): it
is an upper bound on what twice the in-domain unlabelled data could give the probe, and is marked
as such in the output.

    python benchmarks/sensor_probe.py                                  # PickupGestureWiimoteZ, built-in variants
    python benchmarks/sensor_probe.py --dataset JapaneseVowels --variant recipe \\
        --variant "L4 model.context.num_layers=4"                      # your own variants

Appends one JSON line to ``benchmarks/results/sensor_probe.jsonl`` and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sensor_fewlabel as fewlabel  # noqa: E402  (the data, draws and MiniRocket fits of the few-label benchmark)

RESULTS = HERE / "results" / "sensor_probe.jsonl"
DIAGNOSTIC = "train+test (diagnostic)"
UNTRAINED = "untrained (random weights)"
VARIANTS = (
    "recipe",
    "mask0.65 model.masking.mask_prob=0.65",
    "span1 model.masking.mask_length=1 model.masking.mask_prob=0.3",
    "negatives20+60 model.masking.num_negatives=20 model.masking.cross_sample_negatives=60",
    "codes64 model.quantizer.entries=64",
    "final64 model.final_dim=64",
    "layers4 model.context.num_layers=4",
    "no-dropout model.context.dropout=0.0 model.context.dropout_input=0.0 model.context.dropout_features=0.0",
    "lr5e-3 optim.lr=0.005",
    "kernel9 model.frontend.conv_layers=[[64,9,2],[64,9,2]]",
    "conv4 model.frontend.conv_layers=[[64,3,1],[64,3,2],[64,3,1],[64,3,2]]",
)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"TAG key=value ..."`` -> (TAG, assignments)."""
    tag, *assign = text.split()
    bad = [a for a in assign if "=" not in a]
    if bad:
        raise ValueError(f"variant {tag!r}: {bad} are not key=value assignments")
    return tag, assign


def combined_series_file(dataset: str, out: Path) -> Path:
    """A .ts file holding the training split's series followed by the test split's (diagnostic only)."""
    train = fewlabel.aeon_file(dataset, dataset, "TRAIN").read_text()
    test = fewlabel.aeon_file(dataset, dataset, "TEST").read_text().splitlines()
    start = next(i for i, line in enumerate(test) if line.strip().lower() == "@data") + 1
    out.write_text(train.rstrip("\n") + "\n" + "\n".join(test[start:]) + "\n")
    return out


def pretrain_variant(dataset: str, assign: list[str], source: Path, run_dir: Path) -> dict[str, Any]:
    """Pretrain the recipe with ``assign`` on ``source``; returns facts of the run."""
    from wavssl import config as C
    from wavssl.train.pretraining import pretrain

    cfg = C.resolve(fewlabel.PRESET, fewlabel.CONFIGS / f"{dataset}.toml", ["train.tensorboard=false", *assign])
    t0 = time.perf_counter()
    state = pretrain(source, run_dir, cfg, progress=False, device="cpu")
    last = json.loads((run_dir / "train_log.jsonl").read_text().splitlines()[-1])
    return {"seconds": time.perf_counter() - t0, "updates": state.num_updates,
            "final_accuracy": last["accuracy"], "final_code_perplexity": last["code_perplexity"]}


def untrained_model(dataset: str) -> Any:
    """The recipe's SSL model with random weights (seed 0) and its input normalisation fitted on the
    training split, as pretraining would fit it: the probe's floor."""
    import torch

    from wavssl.models import build_model

    torch.manual_seed(0)
    model = build_model(fewlabel.recipe_config(dataset).model)
    model.encoder.frontend.fit_normalization([torch.from_numpy(s) for s in fewlabel._data(dataset)["train"].series])
    return model


def probe_scores(dataset: str, run_dir: Path | None, ks: list[int], draws: int) -> dict[str, list[float]]:
    """Test accuracy of the frozen-feature logistic head per k (str, "0" = all) and draw, on the
    run's encoder (None: :func:`untrained_model`)."""
    import torch

    from wavssl import config as C
    from wavssl.data.sensor import draw_per_class
    from wavssl.train.checkpoint import load
    from wavssl.train.classify import fit_classifier, new_classifier, score

    d = fewlabel._data(dataset)
    if run_dir is None:
        pretrained, base = untrained_model(dataset), fewlabel.recipe_config(dataset)
    else:
        pretrained, base = load(run_dir), C.load_json(run_dir / "config.json")
    cfg = C.merge(C.finetune_config(base, "classify"), {"optim": {"max_updates": 0}}).validate()
    out: dict[str, list[float]] = {}
    for k in ks:
        for draw in range(draws):
            train = d["train"].subset(draw_per_class(d["train"], k, seed=draw))
            torch.manual_seed(draw)
            model = new_classifier(cfg, d["names"], train, pretrained=pretrained)
            fit_classifier(model, train, d["names"], cfg)
            out.setdefault(str(k), []).append(score(model, d["test"], d["names"]).accuracy)
    return out


def minirocket_scores(dataset: str, ks: list[int], draws: int) -> dict[str, list[float]]:
    """Test accuracy of MiniRocket per k and draw (the few-label benchmark's fits)."""
    out: dict[str, list[float]] = {}
    for k in ks:
        for draw in range(draws):
            r = fewlabel.run_job(fewlabel.Job(dataset, "MiniRocket", k, draw, ""))
            out.setdefault(str(k), []).append(r["accuracy"])
    return out


def mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.pstdev(values) if len(values) > 1 else 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="PickupGestureWiimoteZ", choices=fewlabel.DATASETS)
    p.add_argument("--variant", action="append", metavar='"TAG key=value ..."',
                   help="a pretraining variant (repeatable; default: the built-in sweep, the recipe first)")
    p.add_argument("--draws", type=int, default=20, help="random draws per k")
    p.add_argument("--ks", default="1,2,all", help="labelled recordings per class; 'all' for every label")
    p.add_argument("--diagnostic-pretrain-on-test", action="store_true",
                   help="also pretrain the recipe on the training and test series (breaks the protocol; an upper "
                        "bound on twice the unlabelled data)")
    p.add_argument("--workdir", type=Path, help="where pretraining runs go (default: a temporary folder)")
    p.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS.relative_to(HERE.parent)}")
    a = p.parse_args()

    import torch

    torch.set_num_threads(min(os.cpu_count() or 1, 2))
    variants = [parse_variant(v) for v in (a.variant or VARIANTS)]
    ks = fewlabel.ks_for(a.dataset, [0 if k.strip() == "all" else int(k) for k in a.ks.split(",")])
    t_start = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sensor_probe_") as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        train_file = fewlabel.aeon_file(a.dataset, a.dataset, "TRAIN")
        jobs = [(tag, assign, train_file) for tag, assign in variants]
        if a.diagnostic_pretrain_on_test:
            jobs.append((DIAGNOSTIC, [], combined_series_file(a.dataset, work / "train_and_test.ts")))
        for i, (tag, assign, source) in enumerate(jobs):
            run_dir = work / f"run{i}"
            facts = pretrain_variant(a.dataset, assign, source, run_dir)
            t0 = time.perf_counter()
            scores = probe_scores(a.dataset, run_dir, ks, a.draws)
            rows[tag] = {"assign": assign, "pretraining": facts, "probe_seconds": time.perf_counter() - t0,
                         "accuracy": {k: {**mean_sd(v), "draws": v} for k, v in scores.items()}}
            print(f"[probe] {tag}: " + "  ".join(f"k={'all' if k == '0' else k} {v['mean']:.3f}"
                                                   for k, v in rows[tag]["accuracy"].items())
                  + f"  (pretrained {facts['seconds']:.0f}s)", flush=True)
    fewlabel._init_worker()  # after the torch work: MiniRocket's numba threads would compete with it
    t0 = time.perf_counter()
    scores = probe_scores(a.dataset, None, ks, a.draws)
    rows[UNTRAINED] = {"assign": [], "pretraining": None, "probe_seconds": time.perf_counter() - t0,
                       "accuracy": {k: {**mean_sd(v), "draws": v} for k, v in scores.items()}}
    t0 = time.perf_counter()
    peer = minirocket_scores(a.dataset, ks, a.draws)
    peer_row = {"seconds": time.perf_counter() - t0, "accuracy": {k: {**mean_sd(v), "draws": v} for k, v in peer.items()}}
    wall = time.perf_counter() - t_start

    names = [f"k={'all' if k == 0 else k}" for k in ks]
    table = [f"{a.dataset}: test accuracy, mean over {a.draws} draws",
             f"{'pretraining variant':28s} " + " ".join(f"{n:>13s}" for n in names)]
    for tag, row in [*rows.items(), ("MiniRocket (peer)", peer_row)]:
        table.append(f"{tag:28s} " + " ".join(f"{row['accuracy'][str(k)]['mean']:.3f}+-{row['accuracy'][str(k)]['sd']:.3f}"
                                              for k in ks))
    print("\n" + "\n".join(table))
    recipe = [r for t, r in rows.items() if t not in (DIAGNOSTIC, UNTRAINED)]
    if recipe:
        for k, n in zip(ks, names):
            means = [r["accuracy"][str(k)]["mean"] for r in recipe]
            print(f"{n}: variants span {min(means):.3f}-{max(means):.3f}, MiniRocket {peer_row['accuracy'][str(k)]['mean']:.3f}")
    print(f"total wall time {wall:.0f}s")
    record = {"benchmark": "sensor_probe", "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "dataset": a.dataset, "preset": fewlabel.PRESET,
              "config": (fewlabel.CONFIGS / f"{a.dataset}.toml").read_text(), "draws": a.draws, "ks": ks,
              "variants": rows, "MiniRocket": peer_row, "table": table, "wall_seconds": wall,
              "diagnostic_pretrain_on_test": a.diagnostic_pretrain_on_test, **fewlabel.environment()}
    if not a.no_write:
        fewlabel.append_result(RESULTS, record)
        print(f"[probe] appended to {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
