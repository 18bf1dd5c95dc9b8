"""Does pretraining pay? CER/WER of pretrained-then-fine-tuned recognizers against the same architecture
trained from scratch on the same labels for the same number of updates, on real recorded speech.

Data: the Debian speech corpus of ``recipes/debian_speech/prepare.py`` (Russian studio speech,
Czech acted game dialogue, English/other telephone prompts; unlabeled extras). Protocol:

1. Pretrain once on ``unlabeled.tsv`` (test and dev audio excluded by ``prepare.py``) with the
   budget's preset and ``recipes/debian_speech/conf/pretrain_<budget>.toml``.
2. For every label set (``ru`` 10 min and 1 h, ``cs`` 10 min and 1 h, ``en`` 10 min) fine-tune a CTC
   recognizer twice with ``conf/finetune_<budget>.toml``:
   - **pretrained**: from the pretraining run (Transformer frozen for ``ctc.freeze_updates``);
   - **scratch**: the same architecture from random initialisation, same labels, same number of
     updates, same schedule, but nothing frozen (freezing a random encoder would only waste updates).
   With a dev split (Russian) the best checkpoint by dev WER is kept; otherwise the last one, for both.
3. Score greedy CTC output (no LM) on the language's test splits: WER and CER.

Appends one JSON line to ``benchmarks/results/ssl_benefit.jsonl`` and prints a table. Finished runs in
the work directory are reused (delete it to start over).

    python recipes/debian_speech/prepare.py                       # once
    python benchmarks/ssl_benefit.py --budget cpu                 # ~1 h on 2 cores
    python benchmarks/ssl_benefit.py --budget gpu                 # one GPU
    python benchmarks/ssl_benefit.py --only ru_10min --budget cpu # one label set
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._env import git_commit  # noqa: E402

import torch  # noqa: E402

import wavssl  # noqa: E402
from wavssl import config as C  # noqa: E402
from wavssl.data.text import read_transcribed  # noqa: E402
from wavssl.train.asr import evaluate, finetune  # noqa: E402
from wavssl.train.checkpoint import latest_checkpoint, load_config  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ssl_benefit.jsonl"
CONF = ROOT / "recipes" / "debian_speech" / "conf"
PRESETS = {"cpu": "tiny", "gpu": "small"}
LABEL_SETS = {  # name -> (language, training manifest)
    "ru_10min": ("ru", "ru_train_10min"), "ru_1h": ("ru", "ru_train_1h"),
    "cs_10min": ("cs", "cs_train_10min"), "cs_1h": ("cs", "cs_train_1h"),
    "en_10min": ("en", "en_train_10min"),
}
TESTS = {"ru": ("ru_test", "ru_test_otherspk"), "cs": ("cs_test",), "en": ("en_test",)}
DEV = {"ru": "ru_dev"}


def _finished(run: Path, updates: int) -> bool:
    ckpt = latest_checkpoint(run)
    return ckpt is not None and ckpt.name.endswith(f"{updates:08d}") and (run / "model.safetensors").is_file()


def pretrain(data: Path, work: Path, budget: str, device: str) -> dict[str, float]:
    """Pretrain (or reuse) the budget's model on ``data/unlabeled.tsv``; returns its compute summary."""
    run = work / "pretrain"
    cfg = C.resolve(PRESETS[budget], CONF / f"pretrain_{budget}.toml")
    summary_path = run / "pretrain_summary.json"
    if _finished(run, cfg.optim.max_updates) and summary_path.is_file():
        return json.loads(summary_path.read_text())
    t0 = time.perf_counter()
    state = wavssl.pretrain(data / "unlabeled.tsv", run, cfg, resume=True, device=device, progress=False)
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    seconds_per_update = [r["audio_hours_per_s"] for r in log if "audio_hours_per_s" in r]
    index = json.loads((run / "audio_index.json").read_text()) if (run / "audio_index.json").is_file() else None
    summary = {
        "preset": PRESETS[budget], "updates": state.num_updates,
        "parameters": sum(p.numel() for p in wavssl.load(run).parameters()),
        "wall_seconds": time.perf_counter() - t0,
        "unlabeled_hours": _manifest_hours(data / "unlabeled.tsv"),
        "median_audio_hours_per_s": sorted(seconds_per_update)[len(seconds_per_update) // 2] if seconds_per_update else None,
        "final_accuracy": next((r["accuracy"] for r in reversed(log) if "accuracy" in r), None),
        "audio_index_cached": index is not None,
    }
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _manifest_hours(path: Path) -> float:
    lines = path.read_text(encoding="utf-8").splitlines()
    col = lines[0].split("\t").index("duration")
    return sum(float(x.split("\t")[col]) for x in lines[1:] if x.strip()) / 3600


def finetune_and_score(data: Path, work: Path, budget: str, name: str, init: str, device: str) -> dict[str, object]:
    """Fine-tune one recognizer (or reuse it) and score it on its language's test splits."""
    language, manifest = LABEL_SETS[name]
    pre = work / "pretrain"
    cfg = C.merge(load_config(pre), C.load_toml(CONF / f"finetune_{budget}.toml"))
    sets = [f"ctc.language={json.dumps(language)}"]
    if init == "scratch":
        sets += ["ctc.freeze_updates=0", "ctc.freeze_feature_encoder=false"]
    cfg = C.merge(cfg, C.parse_set(sets)).validate()
    out = work / f"ft_{name}_{init}"
    dev = data / f"{DEV[language]}.tsv" if language in DEV else None
    t0 = time.perf_counter()
    if not _finished(out, cfg.ctc.max_updates):
        finetune(pre if init == "pretrained" else None, data / f"{manifest}.tsv", out, cfg=cfg, valid=dev,
                 resume=True, device=device, progress=False)
    seconds = time.perf_counter() - t0
    summary = json.loads((out / "finetune_summary.json").read_text())
    model = wavssl.load(out, device)
    scores = {}
    for test in TESTS[language]:
        ev = evaluate(model, read_transcribed(data / f"{test}.tsv", sample_rate=model.sample_rate, language=language))
        scores[test] = {"cer": ev.cer.rate, "wer": ev.wer.rate, "utterances": len(ev.references),
                        "examples": [[r, h] for r, h in list(zip(ev.references, ev.hypotheses))[:3]]}
    return {"label_set": name, "init": init, "train_minutes": summary["train_seconds"] / 60,
            "updates": summary["num_updates"], "best_update": summary["best_update"],
            "wall_seconds": seconds, "tests": scores}


def table(rows: list[dict[str, object]]) -> str:
    """Markdown table: one line per label set and test split, pretrained vs scratch side by side."""
    by = {(r["label_set"], r["init"]): r for r in rows}
    lines = ["| labels | test | CER pretrained | CER scratch | WER pretrained | WER scratch |",
             "|---|---|---|---|---|---|"]
    for name in LABEL_SETS:
        if (name, "pretrained") not in by or (name, "scratch") not in by:
            continue
        p, s = by[(name, "pretrained")]["tests"], by[(name, "scratch")]["tests"]
        for test in p:  # type: ignore[union-attr]
            lines.append(f"| {name} | {test} | {100 * p[test]['cer']:.1f} | {100 * s[test]['cer']:.1f} | "
                         f"{100 * p[test]['wer']:.1f} | {100 * s[test]['wer']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "data" / "debian_speech", help="prepare.py's output")
    p.add_argument("--budget", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--workdir", type=Path, help="runs go here (default: runs/debian_speech_<budget>)")
    p.add_argument("--only", help=f"comma-separated label sets, from {', '.join(LABEL_SETS)}")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if not (a.data / "unlabeled.tsv").is_file():
        print(f"{a.data}: no prepared corpus; run python recipes/debian_speech/prepare.py first", file=sys.stderr)
        return 2
    device = "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    work = a.workdir or ROOT / "runs" / f"debian_speech_{a.budget}"
    names = a.only.split(",") if a.only else list(LABEL_SETS)
    unknown = [n for n in names if n not in LABEL_SETS]
    if unknown:
        p.error(f"unknown label set(s) {unknown}")
    t0 = time.perf_counter()
    print(f"[bench] pretraining ({a.budget} budget, preset {PRESETS[a.budget]}) on {a.data / 'unlabeled.tsv'} ...",
          flush=True)
    pre = pretrain(a.data, work, a.budget, device)
    print(f"[bench] pretrained: {json.dumps(pre)}", flush=True)
    rows = []
    for name in names:
        for init in ("pretrained", "scratch"):
            row = finetune_and_score(a.data, work, a.budget, name, init, device)
            rows.append(row)
            print(f"[bench] {name} {init}: " + ", ".join(f"{t} CER {100 * v['cer']:.1f} WER {100 * v['wer']:.1f}"
                                                         for t, v in row["tests"].items()), flush=True)
    print(table(rows))
    record = {
        "benchmark": "ssl_benefit", "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit() or "unknown", "budget": a.budget, "device": device,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "load_average": os.getloadavg(), "pretraining": pre, "runs": rows,
        "wall_seconds": time.perf_counter() - t0,
    }
    if not a.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
