"""Few-label sensor classification: wavssl pretrained vs the same architecture from scratch vs aeon's
MiniRocket, MultiRocket-Hydra and QUANT, on data sets that ship inside the aeon wheel (nothing is
downloaded).

Protocol, per data set:

1. Pretrain wavssl once on the training split's series, without labels (``sensor-tiny`` preset plus
   ``recipes/sensors/configs/<name>.toml``). The test split is never seen.
2. Choose the fine-tuning recipe on validation data from the TRAINING split, never the test split:
   for each wavssl method and each candidate in :data:`VARIANTS` (``classify.segments`` and
   ``classify.time_stretch`` on or off), fit on ``--val-draws`` draws of k = 1 and 2 labelled
   recordings per class of the training split (seeds 1000 + draw, apart from the test draws) and
   score on the rest of the training split; the candidate with the best mean validation accuracy is
   chosen (ties: the recipe TOML's own setting). The peers have no choices: aeon's defaults.
3. For k = 1, 2, 5, 10 labelled recordings per class and for all labels, draw 20 random training
   subsets (seed = draw number). On every draw fit
   - **wavssl-pretrained**: the pretrained encoder + pooled head, fitted with the ``[classify]``
     recipe and the candidate chosen in step 2 (statistics of every layer, a logistic head fitted
     on the frozen features, then full fine-tuning),
   - **wavssl-scratch**: the same architecture from random initialisation, with its own choice,
   - **MiniRocket**, **MultiRocketHydra**, **QUANT**: ``aeon``'s ``MiniRocketClassifier``,
     ``MultiRocketHydraClassifier`` and ``QUANTClassifier`` (default settings, ``random_state`` =
     draw) on the same recordings. They need equal lengths, so they read the equal-length versions
     aeon bundles (``<name>_eq``: resampled or padded copies of the same series, in the same order);
     wavssl reads the original variable-length series.
   Each fit is scored once on the whole test split: accuracy and macro-F1 (one implementation,
   :func:`wavssl.train.classify.classification_metrics`, for every method).
4. A k at or above the largest class size gives the same data as "all" and is skipped.

Fits run in ``--jobs`` worker processes with one thread each. Reported per method and k: mean and
standard deviation over draws of accuracy and macro-F1, and the summed seconds of its fits (CPU
seconds at one thread; wavssl-pretrained also lists its one pretraining run). Appends one JSON line
to ``benchmarks/results/sensor_fewlabel.jsonl`` (``selection`` says which split chose what) and
prints a table.

    python benchmarks/sensor_fewlabel.py                      # full protocol (~1 h on 2 cores)
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
WAVSSL = ("wavssl-pretrained", "wavssl-scratch")
PEERS = ("MiniRocket", "MultiRocketHydra", "QUANT")
"""aeon classifiers, default settings: the convolution bake-off's MiniRocket, its strongest
(MultiRocket-Hydra) and its fastest accurate one (QUANT, interval quantiles + extra trees)."""
METHODS = WAVSSL + PEERS
VARIANTS: dict[str, tuple[str, ...]] = {
    "plain": ("classify.segments=0", "classify.time_stretch=0.0"),
    "segments4": ("classify.segments=4", "classify.time_stretch=0.0"),
    "stretch": ("classify.segments=0", "classify.time_stretch=0.25"),
    "segments4+stretch": ("classify.segments=4", "classify.time_stretch=0.25"),
}
"""Candidate fine-tuning recipes the validation step chooses from (``--set`` overrides of the recipe)."""
VAL_KS = (1, 2)
"""Labelled recordings per class in the validation fits (the rest of the training split is scored)."""
VAL_SEED = 1000
"""Validation draw d uses seed VAL_SEED + d: never one of the test draws' seeds."""


def aeon_file(name: str, stem: str, split: str) -> Path:
    """Path of a .ts file bundled in the aeon wheel."""
    import aeon.datasets

    path = Path(aeon.datasets.__file__).parent / "data" / name / f"{stem}_{split}.ts"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in this aeon installation (pip install 'aeon>=1.0')")
    return path


def recipe_config(name: str) -> Any:
    """The benchmark's (and the recipe's) pretraining configuration for data set ``name``."""
    from wavssl import config as C

    return C.resolve(PRESET, CONFIGS / f"{name}.toml", ["train.tensorboard=false"])


def finetune_overrides(name: str) -> dict[str, Any]:
    """The recipe's fine-tuning overrides for data set ``name`` (``configs/finetune/NAME.toml``, if any)."""
    from wavssl import config as C

    path = CONFIGS / "finetune" / f"{name}.toml"
    return C.load_toml(path) if path.is_file() else {}


# ------------------------------------------------------------------------------------------ workers

_cache: dict[str, Any] = {}


def peer(method: str, seed: int) -> Any:
    """An unfitted aeon classifier ``method`` (one of :data:`PEERS`), default settings, one thread."""
    if method == "MiniRocket":
        from aeon.classification.convolution_based import MiniRocketClassifier

        return MiniRocketClassifier(random_state=seed, n_jobs=1)
    if method == "MultiRocketHydra":
        from aeon.classification.convolution_based import MultiRocketHydraClassifier

        return MultiRocketHydraClassifier(random_state=seed, n_jobs=1)
    if method == "QUANT":
        from aeon.classification.interval_based import QUANTClassifier

        return QUANTClassifier(random_state=seed)  # its extra trees use one thread by default
    raise ValueError(f"unknown peer {method!r}; choose from {list(PEERS)}")


def _init_worker() -> None:
    """One thread per worker; the peers' numba kernels compiled once here, outside the timings."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", message="The value of the smallest subnormal")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for method in PEERS:
        peer(method, 0).fit(rng.normal(size=(4, 2, 40)), np.array([0, 1, 0, 1]))


@dataclass
class Job:
    """One fit: a method on one draw of k recordings per class, scored on the test split or (``split =
    "validation"``, wavssl methods only) on the training split's recordings outside the draw."""

    dataset: str
    method: str
    k: int
    draw: int
    run_dir: str
    split: str = "test"
    variant: str = ""
    """Key of :data:`VARIANTS` whose overrides apply (wavssl methods; "" for none)."""


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


def job_config(job: Job) -> Any:
    """The fine-tuning config of a wavssl job: the pretraining run's preset's classifier recipe with
    the run's ``[classify]`` head, the recipe's fine-tuning overrides, the job's variant overrides, the
    draw as seed."""
    from wavssl import config as C

    cfg = C.finetune_config(C.load_json(Path(job.run_dir) / "config.json"), "classify")
    cfg = C.merge(C.merge(cfg, finetune_overrides(job.dataset)), {"train": {"seed": job.draw}})
    if job.variant:
        cfg = C.merge(cfg, C.parse_set(list(VARIANTS[job.variant])))
    return cfg.validate()


def split_indices(train: Any, job: Job) -> tuple[np.ndarray, np.ndarray | None]:
    """(indices fitted on, indices of the training split scored instead of the test split or None)."""
    from wavssl.data.sensor import draw_per_class

    idx = draw_per_class(train, job.k, seed=job.draw)
    if job.split == "test":
        return idx, None
    if job.split != "validation" or job.method not in WAVSSL:
        raise ValueError(f"{job}: only wavssl methods are validated (split 'validation' or 'test')")
    return idx, np.setdiff1d(np.arange(len(train)), idx)


def run_job(job: Job) -> dict[str, Any]:
    """Fit and score one job; returns its scores and seconds."""
    d = _data(job.dataset)
    idx, held_out = split_indices(d["train"], job)
    key = f"ssl:{job.run_dir}"
    if job.method == "wavssl-pretrained" and key not in _cache:
        from wavssl.train.checkpoint import load

        _cache[key] = load(job.run_dir)
    t0 = time.perf_counter()
    if job.method in PEERS:
        from wavssl.train.classify import classification_metrics

        labels = np.array(d["train"].labels)
        clf = peer(job.method, job.draw).fit(d["eq_train"][idx], labels[idx])
        index = {n: i for i, n in enumerate(d["names"])}
        predicted = np.array([index[str(p)] for p in clf.predict(d["eq_test"])])
        metrics = classification_metrics(np.array([index[y] for y in d["test"].labels]), predicted, d["names"])
    else:
        import torch

        from wavssl.train.classify import fit_classifier, new_classifier, score

        cfg = job_config(job)
        train = d["train"].subset(idx)
        torch.manual_seed(job.draw)
        model = new_classifier(cfg, d["names"], train,
                               pretrained=_cache[key] if job.method == "wavssl-pretrained" else None)
        fit_classifier(model, train, d["names"], cfg)
        scored = d["test"] if held_out is None else d["train"].subset(held_out)
        metrics = score(model, scored, d["names"], where="validation data" if held_out is not None else "test data")
    return {"dataset": job.dataset, "method": job.method, "k": job.k, "draw": job.draw, "split": job.split,
            "variant": job.variant, "accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1,
            "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------ main


def pretrain_dataset(name: str, workdir: str) -> dict[str, Any]:
    """Pretrain on the training split's series (no labels); returns the run directory and facts."""
    import torch

    from wavssl.train.pretraining import pretrain

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


def val_ks_for(name: str) -> list[int]:
    """The validation ks that leave at least one recording of every class of the training split out."""
    d = _data(name)
    smallest = min(np.unique(np.array(d["train"].labels), return_counts=True)[1])
    return [k for k in VAL_KS if k < smallest]


def recipe_variant(name: str) -> str:
    """The :data:`VARIANTS` key that the recipe TOML's ``[classify]`` section sets ("" if none)."""
    from wavssl import config as C

    c = recipe_config(name).classify
    for key, sets in VARIANTS.items():
        v = C.parse_set(list(sets))["classify"]
        if v["segments"] == c.segments and float(v["time_stretch"]) == c.time_stretch:
            return key
    return ""


def candidates(name: str) -> list[str]:
    """Variants to validate for data set ``name``, the recipe's own first (it wins ties)."""
    own = recipe_variant(name)
    return ([own] if own else []) + [v for v in VARIANTS if v != own]


def choose(results: list[dict[str, Any]], datasets: list[str], val_draws: int) -> dict[str, Any]:
    """Per data set and wavssl method, the variant with the best mean validation accuracy (over the
    validation ks and draws); ties go to the earlier candidate (the recipe's own)."""
    out: dict[str, Any] = {}
    for ds in datasets:
        for method in WAVSSL:
            rows = [r for r in results if r["split"] == "validation" and r["dataset"] == ds and r["method"] == method]
            if not rows:
                continue
            order = [v for v in candidates(ds) if any(r["variant"] == v for r in rows)]
            mean = {v: statistics.fmean(r["accuracy"] for r in rows if r["variant"] == v) for v in order}
            per_k = {v: {str(k): statistics.fmean(r["accuracy"] for r in rows if r["variant"] == v and r["k"] == k)
                         for k in sorted({r["k"] for r in rows})} for v in order}
            chosen = max(order, key=lambda v: mean[v])  # first of equals: the recipe's own
            out.setdefault(ds, {})[method] = {
                "chosen": chosen, "overrides": list(VARIANTS[chosen]), "recipe_variant": recipe_variant(ds),
                "validation_accuracy": mean, "validation_accuracy_per_k": per_k,
                "chosen_on": (f"validation: {val_draws} draws of k = {sorted({r['k'] for r in rows})} labelled "
                              "recordings per class from the TRAINING split, scored on the rest of the training "
                              "split; the test split is not used"),
                "seconds": sum(r["seconds"] for r in rows)}
    return out


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Test-split results: data set -> k -> method -> accuracy / macro-F1 (mean, sd, draws), seconds."""
    out: dict[str, Any] = {}
    for r in results:
        if r.get("split", "test") != "test":
            continue
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


def target_checks(summary: dict[str, Any]) -> list[str]:
    """The targets, one line each: pretrained >= every other method at every k on every data set."""
    checks = []
    for ds, per_k in summary.items():
        for k, cells in sorted(per_k.items(), key=lambda kv: (int(kv[0]) == 0, int(kv[0]))):
            pre = cells.get("wavssl-pretrained", {}).get("accuracy", {}).get("mean")
            if pre is None:
                continue
            for other in METHODS[1:]:
                o = cells.get(other, {}).get("accuracy", {}).get("mean")
                if o is not None:
                    checks.append(f"{ds} k={'all' if k == '0' else k}: pretrained {pre:.3f} {'>=' if pre >= o else '<'} "
                                  f"{other} {o:.3f}")
            if ds == "JapaneseVowels" and k == "1":
                checks.append(f"JapaneseVowels k=1: pretrained {pre:.3f} {'>=' if pre >= 0.70 else '<'} 0.70")
    return checks


def print_table(summary: dict[str, Any], pretraining: dict[str, Any],
                selection: dict[str, Any] | None = None) -> list[str]:
    """The results table (also returned as lines) and the target checks."""
    lines = [f"{'data set':22s} {'k':>4s}  " + "  ".join(f"{m:>29s}" for m in METHODS),
             f"{'':22s} {'':>4s}  " + "  ".join(f"{'acc':>13s} {'macro-F1':>13s} {'s':>1s}" for _ in METHODS)]
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
    for ds, per_method in (selection or {}).items():
        lines.append(f"chosen on validation from the training split, {ds}: " + "; ".join(
            f"{m} {c['chosen']} (" + ", ".join(f"{v} {a:.3f}" for v, a in c["validation_accuracy"].items()) + ")"
            for m, c in per_method.items()))
    for ds, p in pretraining.items():
        lines.append(f"pretraining {ds}: {p['updates']} updates in {p['seconds']:.0f}s, final contrastive accuracy "
                     f"{p['final_accuracy']:.3f}")
    print("\n".join(lines))
    print("\ntargets:")
    print("\n".join("  " + c for c in target_checks(summary)))
    return lines


def markdown_table(record: dict[str, Any]) -> list[str]:
    """The README table of a result line: accuracy mean +- sd per data set, k and method (the best
    mean of a row in bold), the recipe variant each wavssl method chose on validation, and where
    pretrained wavssl falls short of another method."""
    methods = [m for m in METHODS if any(m in cells for per_k in record["results"].values()
                                         for cells in per_k.values())]
    lines = ["| data set | k | " + " | ".join(methods) + " | pretrained short of |",
             "|---" * (len(methods) + 3) + "|"]
    for ds, per_k in record["results"].items():
        for i, (k, cells) in enumerate(sorted(per_k.items(), key=lambda kv: (int(kv[0]) == 0, int(kv[0])))):
            means = {m: cells[m]["accuracy"]["mean"] for m in methods if m in cells}
            best = max(means.values())
            row = [f"**{means[m]:.3f}** +- {cells[m]['accuracy']['sd']:.3f}" if means.get(m) == best
                   else (f"{means[m]:.3f} +- {cells[m]['accuracy']['sd']:.3f}" if m in means else "-")
                   for m in methods]
            pre = means.get("wavssl-pretrained")
            short = [f"{m} (-{means[m] - pre:.3f})" for m in methods if pre is not None and means[m] > pre]
            lines.append(f"| {ds if i == 0 else ''} | {'all' if k == '0' else k} | " + " | ".join(row)
                         + f" | {', '.join(short) or 'none'} |")
    lines.append("")
    for ds, per_method in record.get("selection", {}).items():
        lines.append(f"- {ds}: chosen on validation from the training split: " + "; ".join(
            f"{m} `{c['chosen']}` (" + ", ".join(f"{v} {a:.3f}" for v, a in c["validation_accuracy"].items()) + ")"
            for m, c in per_method.items()))
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
    p.add_argument("--draws", type=int, default=20, help="random draws per k (test split)")
    p.add_argument("--val-draws", type=int, default=3,
                   help="validation draws per k and candidate recipe (training split; 0 = no selection, "
                        "the recipe TOML as it is)")
    p.add_argument("--ks", default="1,2,5,10,all", help="labelled recordings per class; 'all' for every label")
    p.add_argument("--quick", action="store_true", help="3 draws, k = 1 and all, 1 validation draw (a few minutes)")
    p.add_argument("--jobs", type=int, default=max(min(os.cpu_count() or 1, 2), 1), help="worker processes (1 thread each)")
    p.add_argument("--workdir", type=Path, help="where pretraining runs go (default: a temporary folder)")
    p.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    p.add_argument("--markdown", action="store_true",
                   help=f"print the README table of the last line of {RESULTS.relative_to(ROOT)} and exit")
    a = p.parse_args()
    if a.markdown:
        last = [line for line in RESULTS.read_text().splitlines() if line.strip()][-1]
        print("\n".join(markdown_table(json.loads(last))))
        return
    if a.quick:
        a.draws, a.ks, a.val_draws = 3, "1,all", 1
    datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        p.error(f"unknown data set(s) {unknown}; choose from {list(DATASETS)}")
    ks = [0 if k.strip() == "all" else int(k) for k in a.ks.split(",")]
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()

    def run_all(pool: Any, jobs: list[Job], what: str) -> list[dict[str, Any]]:
        jobs = sorted(jobs, key=lambda j: (j.method in WAVSSL, j.k == 0, j.k), reverse=True)  # longest first
        print(f"[bench] {len(jobs)} {what} fits on {a.jobs} worker(s) ...", flush=True)
        done = []
        for i, r in enumerate(pool.imap_unordered(run_job, jobs), 1):
            done.append(r)
            if i % 50 == 0 or i == len(jobs):
                print(f"[bench] {i}/{len(jobs)} {what} fits done ({time.perf_counter() - t_start:.0f}s)", flush=True)
        return done

    with tempfile.TemporaryDirectory(prefix="sensor_fewlabel_") as tmp:
        workdir = str(a.workdir or tmp)
        skipped: dict[str, list[int]] = {}
        with mp.get_context("spawn").Pool(a.jobs, initializer=_init_worker) as pool:
            print(f"[bench] pretraining on {', '.join(datasets)} (training splits, no labels) ...", flush=True)
            runs = pool.starmap(pretrain_dataset, [(ds, workdir) for ds in datasets], chunksize=1)
            pretraining = dict(zip(datasets, runs))
            print(f"[bench] pretrained in {time.perf_counter() - t_start:.0f}s", flush=True)
            use = {ds: ks_for(ds, ks) for ds in datasets}
            skipped = {ds: [k for k in ks if k not in use[ds]] for ds in datasets}
            # 1. the recipe choices, on validation draws from the training split (+ the peers' test fits,
            # which choose nothing, to keep the workers busy)
            first = [Job(ds, m, k, VAL_SEED + d, pretraining[ds]["run_dir"], "validation", v)
                     for ds in datasets for m in WAVSSL for v in (candidates(ds) if a.val_draws > 0 else [])
                     for k in val_ks_for(ds) for d in range(a.val_draws)]
            first += [Job(ds, m, k, d, pretraining[ds]["run_dir"]) for ds in datasets for k in use[ds]
                      for d in range(a.draws) for m in PEERS]
            results = run_all(pool, first, "validation + peer")
            selection = choose(results, datasets, a.val_draws)
            # 2. the test split, scored once per fit with the chosen recipe
            chosen = {(ds, m): selection.get(ds, {}).get(m, {}).get("chosen", "") for ds in datasets for m in WAVSSL}
            second = [Job(ds, m, k, d, pretraining[ds]["run_dir"], "test", chosen[ds, m]) for ds in datasets
                      for k in use[ds] for d in range(a.draws) for m in WAVSSL]
            results += run_all(pool, second, "wavssl test")
    wall = time.perf_counter() - t_start
    summary = summarise(results)
    print()
    table = print_table(summary, pretraining, selection)
    print(f"\ntotal wall time {wall:.0f}s ({a.jobs} worker processes)")
    record = {
        "benchmark": "sensor_fewlabel", "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": PRESET, "configs": {ds: (CONFIGS / f"{ds}.toml").read_text() for ds in datasets},
        "finetune_configs": {ds: (CONFIGS / "finetune" / f"{ds}.toml").read_text() for ds in datasets
                             if (CONFIGS / "finetune" / f"{ds}.toml").is_file()},
        "protocol": ("wavssl fine-tuning variant chosen per data set and method on validation draws from the "
                     "training split (k labelled recordings per class fitted, the rest of the training split "
                     "scored); peers at aeon's defaults (nothing chosen); the test split scored once per fit"),
        "variants": {v: list(o) for v, o in VARIANTS.items()}, "val_draws": a.val_draws, "val_seed": VAL_SEED,
        "selection": selection, "draws": a.draws, "ks": ks, "skipped_ks": skipped, "jobs": a.jobs,
        "wall_seconds": wall,
        "pretraining": {ds: {k: v for k, v in p.items() if k != "run_dir"} for ds, p in pretraining.items()},
        "results": summary, "table": table, "targets": target_checks(summary), "load_average_start": load_start,
        "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, **environment(),
    }
    if not a.no_write:
        append_result(RESULTS, record)
        print(f"[bench] appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
