"""Few-label sensor classification: wavssl pretrained vs the same architecture from scratch vs aeon's
MiniRocket, on data sets that ship inside the aeon wheel (nothing is downloaded).

Protocol, per data set:

1. Pretrain wavssl once on the training split's series, without labels (``sensor-tiny`` preset plus
   ``recipes/sensors/configs/<name>.toml``). The test split is never seen.
2. For k = 1, 2, 5, 10 labelled recordings per class and for all labels, draw 20 random training
   subsets (seed = draw number). On every draw fit
   - **wavssl-pretrained**: the pretrained encoder + pooled head, fitted with the preset's
     ``[classify]`` recipe (statistics of every layer, a logistic head fitted on the frozen
     features, then full fine-tuning),
   - **wavssl-scratch**: the same architecture and recipe from random initialisation,
   - **MiniRocket**: ``aeon``'s ``MiniRocketClassifier`` (default settings, ``random_state`` = draw)
     on the same recordings. MiniRocket needs equal lengths, so it reads the equal-length versions
     aeon bundles (``<name>_eq``: resampled or padded copies of the same series, in the same order);
     wavssl reads the original variable-length series.
   Each fit is scored on the whole test split: accuracy and macro-F1 (one implementation,
   :func:`wavssl.train.classify.classification_metrics`, for all three).
3. A k at or above the largest class size gives the same data as "all" and is skipped.

Fits run in ``--jobs`` worker processes with one thread each. Reported per method and k: mean and
standard deviation over draws of accuracy and macro-F1, and the summed seconds of its fits (CPU
seconds at one thread; wavssl-pretrained also lists its one pretraining run). Appends one JSON line
to ``benchmarks/results/sensor_fewlabel.jsonl`` and prints a table.

    python benchmarks/sensor_fewlabel.py                      # full protocol (~30 min on 2 cores)
    python benchmarks/sensor_fewlabel.py --quick              # 3 draws, k = 1 and all
    python benchmarks/sensor_fewlabel.py --datasets BasicMotions --draws 5 --ks 1,all
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._env import append_result, cpu_flags, cpu_name, git_commit  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "sensor_fewlabel.jsonl"
CONFIGS = ROOT / "recipes" / "sensors" / "configs"
PRESET = "sensor-tiny"
DATASETS = ("JapaneseVowels", "PickupGestureWiimoteZ", "BasicMotions")
EQUAL_LENGTH = {"JapaneseVowels": "JapaneseVowels_eq", "PickupGestureWiimoteZ": "PickupGestureWiimoteZ_eq",
                "BasicMotions": "BasicMotions"}
METHODS = ("wavssl-pretrained", "wavssl-scratch", "MiniRocket")


def aeon_file(name: str, stem: str, split: str) -> Path:
    """Path of a .ts file bundled in the aeon wheel."""
    import aeon.datasets

    path = Path(aeon.datasets.__file__).parent / "data" / name / f"{stem}_{split}.ts"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in this aeon installation (pip install 'aeon>=1.0')")
    return path


def recipe_config(name: str) -> Any:
    """The benchmark's (and the recipe's) configuration for data set ``name``."""
    from wavssl import config as C

    return C.resolve(PRESET, CONFIGS / f"{name}.toml", ["train.tensorboard=false"])


# ------------------------------------------------------------------------------------------ workers

_cache: dict[str, Any] = {}


def _init_worker() -> None:
    """One thread per worker; MiniRocket's numba kernels compiled once here, outside the timings."""
    import warnings

    import torch
    from aeon.classification.convolution_based import MiniRocketClassifier

    warnings.filterwarnings("ignore", message="The value of the smallest subnormal")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    MiniRocketClassifier(random_state=0, n_jobs=1).fit(rng.normal(size=(4, 2, 40)), np.array([0, 1, 0, 1]))


@dataclass
class Job:
    """One fit: a method on one draw of k recordings per class."""

    dataset: str
    method: str
    k: int
    draw: int
    run_dir: str


def _data(dataset: str) -> dict[str, Any]:
    """Per-process cache of a data set: wavssl series, MiniRocket arrays, class names."""
    if dataset not in _cache:
        from wavssl.data.sensor import label_names, load_series

        train = load_series(aeon_file(dataset, dataset, "TRAIN"))
        test = load_series(aeon_file(dataset, dataset, "TEST"))
        eq_train = load_series(aeon_file(dataset, EQUAL_LENGTH[dataset], "TRAIN"))
        eq_test = load_series(aeon_file(dataset, EQUAL_LENGTH[dataset], "TEST"))
        assert eq_train.labels == train.labels and eq_test.labels == test.labels, "equal-length files out of order"
        _cache[dataset] = {"train": train, "test": test, "eq_train": np.stack(eq_train.series),
                           "eq_test": np.stack(eq_test.series), "names": label_names(train.labels)}
    return _cache[dataset]


def run_job(job: Job) -> dict[str, Any]:
    """Fit and score one job; returns its scores and seconds."""
    from wavssl.data.sensor import draw_per_class

    d = _data(job.dataset)
    idx = draw_per_class(d["train"], job.k, seed=job.draw)
    key = f"ssl:{job.run_dir}"
    if job.method == "wavssl-pretrained" and key not in _cache:
        from wavssl.train.checkpoint import load

        _cache[key] = load(job.run_dir)
    t0 = time.perf_counter()
    if job.method == "MiniRocket":
        from aeon.classification.convolution_based import MiniRocketClassifier

        from wavssl.train.classify import classification_metrics

        labels = np.array(d["train"].labels)
        clf = MiniRocketClassifier(random_state=job.draw, n_jobs=1).fit(d["eq_train"][idx], labels[idx])
        index = {n: i for i, n in enumerate(d["names"])}
        predicted = np.array([index[str(p)] for p in clf.predict(d["eq_test"])])
        metrics = classification_metrics(np.array([index[y] for y in d["test"].labels]), predicted, d["names"])
    else:
        import torch

        from wavssl import config as C
        from wavssl.train.classify import finetune_config, fit_classifier, new_classifier, score

        cfg = finetune_config(C.merge(C.load_json(Path(job.run_dir) / "config.json"),
                                      {"train": {"seed": job.draw}}))
        train = d["train"].subset(idx)
        torch.manual_seed(job.draw)
        model = new_classifier(cfg, d["names"], train,
                               pretrained=_cache[key] if job.method == "wavssl-pretrained" else None)
        fit_classifier(model, train, d["names"], cfg)
        metrics = score(model, d["test"], d["names"])
    return {"dataset": job.dataset, "method": job.method, "k": job.k, "draw": job.draw,
            "accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1, "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------ main


def pretrain_dataset(name: str, workdir: str) -> dict[str, Any]:
    """Pretrain on the training split's series (no labels); returns the run directory and facts."""
    import torch

    from wavssl.train.tasks import pretrain

    run_dir = Path(workdir) / f"{name}_ssl"
    t0 = time.perf_counter()
    state = pretrain(aeon_file(name, name, "TRAIN"), run_dir, recipe_config(name), progress=False, device="cpu")
    seconds = time.perf_counter() - t0
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return {"run_dir": str(run_dir), "seconds": seconds, "updates": state.num_updates,
            "final_loss": log[-1]["loss"], "final_accuracy": log[-1]["accuracy"],
            "final_code_perplexity": log[-1]["code_perplexity"], "threads": torch.get_num_threads()}


def ks_for(name: str, ks: list[int]) -> list[int]:
    """The ks that differ from "all" (0) for this data set, plus 0 when asked for."""
    d = _data(name)
    largest = max(np.unique(np.array(d["train"].labels), return_counts=True)[1])
    return [k for k in ks if k == 0 or k < largest]


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in results:
        cell = out.setdefault(r["dataset"], {}).setdefault(str(r["k"]), {}).setdefault(
            r["method"], {"accuracy": [], "macro_f1": [], "seconds": 0.0})
        cell["accuracy"].append(r["accuracy"])
        cell["macro_f1"].append(r["macro_f1"])
        cell["seconds"] += r["seconds"]
    for ds in out.values():
        for per_k in ds.values():
            for cell in per_k.values():
                for key in ("accuracy", "macro_f1"):
                    values = cell.pop(key)
                    cell[key] = {"mean": statistics.fmean(values),
                                 "sd": statistics.pstdev(values) if len(values) > 1 else 0.0, "draws": values}
    return out


def print_table(summary: dict[str, Any], pretraining: dict[str, Any]) -> list[str]:
    """The results table (also returned as lines) and the target checks."""
    lines = [f"{'data set':22s} {'k':>4s}  " + "  ".join(f"{m:>29s}" for m in METHODS),
             f"{'':22s} {'':>4s}  " + "  ".join(f"{'acc':>13s} {'macro-F1':>13s} {'s':>1s}" for _ in METHODS)]
    checks = []
    for ds, per_k in summary.items():
        for k, cells in sorted(per_k.items(), key=lambda kv: (int(kv[0]) == 0, int(kv[0]))):
            row = f"{ds:22s} {('all' if k == '0' else k):>4s}  "
            parts = []
            for m in METHODS:
                c = cells.get(m)
                if c is None:
                    parts.append(f"{'-':>29s}")
                    continue
                a, f = c["accuracy"], c["macro_f1"]
                parts.append(f"{a['mean']:.3f}+-{a['sd']:.3f} {f['mean']:.3f}+-{f['sd']:.3f} {c['seconds']:4.0f}s")
            lines.append(row + "  ".join(parts))
            pre, scr, mr = (cells.get(m, {}).get("accuracy", {}).get("mean") for m in METHODS)
            if pre is not None and mr is not None and ds != "BasicMotions":
                checks.append(f"{ds} k={'all' if k == '0' else k}: pretrained {pre:.3f} {'>=' if pre >= mr else '<'} "
                              f"MiniRocket {mr:.3f}")
            if pre is not None and scr is not None:
                checks.append(f"{ds} k={'all' if k == '0' else k}: pretrained {pre:.3f} {'>=' if pre >= scr else '<'} "
                              f"scratch {scr:.3f}")
            if ds == "JapaneseVowels" and k == "1" and pre is not None:
                checks.append(f"JapaneseVowels k=1: pretrained {pre:.3f} {'>=' if pre >= 0.70 else '<'} 0.70")
    for ds, p in pretraining.items():
        lines.append(f"pretraining {ds}: {p['updates']} updates in {p['seconds']:.0f}s, final contrastive accuracy "
                     f"{p['final_accuracy']:.3f}")
    print("\n".join(lines))
    print("\ntargets:")
    print("\n".join("  " + c for c in checks))
    return lines


def environment() -> dict[str, Any]:
    """Versions, CPU and the commit (``+dirty`` when the library, the sensor recipes or scripts changed)."""
    import aeon
    import torch

    commit = git_commit("wavssl", "recipes/sensors", "benchmarks/sensor_fewlabel.py", "benchmarks/sensor_probe.py")
    return {"commit": commit or "unknown", "torch": torch.__version__, "aeon": aeon.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "cpu": cpu_name(), "cpu_flags": cpu_flags(),
            "cpu_count": os.cpu_count()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, from {', '.join(DATASETS)}")
    p.add_argument("--draws", type=int, default=20, help="random draws per k")
    p.add_argument("--ks", default="1,2,5,10,all", help="labelled recordings per class; 'all' for every label")
    p.add_argument("--quick", action="store_true", help="3 draws, k = 1 and all (a few minutes)")
    p.add_argument("--jobs", type=int, default=max(min(os.cpu_count() or 1, 2), 1), help="worker processes (1 thread each)")
    p.add_argument("--workdir", type=Path, help="where pretraining runs go (default: a temporary folder)")
    p.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    a = p.parse_args()
    if a.quick:
        a.draws, a.ks = 3, "1,all"
    datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        p.error(f"unknown data set(s) {unknown}; choose from {list(DATASETS)}")
    ks = [0 if k.strip() == "all" else int(k) for k in a.ks.split(",")]
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sensor_fewlabel_") as tmp:
        workdir = str(a.workdir or tmp)
        jobs: list[Job] = []
        skipped: dict[str, list[int]] = {}
        results: list[dict[str, Any]] = []
        with mp.get_context("spawn").Pool(a.jobs, initializer=_init_worker) as pool:
            print(f"[bench] pretraining on {', '.join(datasets)} (training splits, no labels) ...", flush=True)
            runs = pool.starmap(pretrain_dataset, [(ds, workdir) for ds in datasets], chunksize=1)
            pretraining = dict(zip(datasets, runs))
            for ds in datasets:
                use = ks_for(ds, ks)
                skipped[ds] = [k for k in ks if k not in use]
                jobs += [Job(ds, m, k, d, pretraining[ds]["run_dir"]) for k in use for d in range(a.draws)
                         for m in METHODS]
            print(f"[bench] pretrained in {time.perf_counter() - t_start:.0f}s; {len(jobs)} fits on {a.jobs} "
                  f"worker(s) ...", flush=True)
            jobs.sort(key=lambda j: (j.k == 0, j.k), reverse=True)  # the longest fits first
            for i, r in enumerate(pool.imap_unordered(run_job, jobs), 1):
                results.append(r)
                if i % 50 == 0 or i == len(jobs):
                    print(f"[bench] {i}/{len(jobs)} fits done ({time.perf_counter() - t_start:.0f}s)", flush=True)
    wall = time.perf_counter() - t_start
    summary = summarise(results)
    print()
    table = print_table(summary, pretraining)
    print(f"\ntotal wall time {wall:.0f}s ({a.jobs} worker processes)")
    record = {
        "benchmark": "sensor_fewlabel", "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": PRESET, "configs": {ds: (CONFIGS / f"{ds}.toml").read_text() for ds in datasets},
        "draws": a.draws, "ks": ks, "skipped_ks": skipped, "jobs": a.jobs, "wall_seconds": wall,
        "pretraining": {ds: {k: v for k, v in p.items() if k != "run_dir"} for ds, p in pretraining.items()},
        "results": summary, "table": table, "load_average_start": load_start,
        "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, **environment(),
    }
    if not a.no_write:
        append_result(RESULTS, record)
        print(f"[bench] appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
