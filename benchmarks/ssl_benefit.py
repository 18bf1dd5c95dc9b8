"""Does pretraining pay? CER/WER of pretrained-then-fine-tuned recognizers against the same architecture
trained from scratch on the same labels for the same number of updates, on real recorded speech.

Data: the Debian speech corpus of ``recipes/debian_speech/prepare.py`` (Russian studio speech,
Czech acted game dialogue, English telephone prompts; unlabeled extras). Every labelled language
has train, dev and test splits; the protocol chooses on dev and touches test once:

1. Pretrain once on ``unlabeled.tsv`` (dev and test audio excluded by ``prepare.py``) with the
   budget's preset and ``recipes/debian_speech/conf/pretrain_<budget>.toml`` -- or reuse a finished
   pretraining run (``--pretrained RUN``).
2. For every row (label set x init) fine-tune a CTC recognizer with ``conf/finetune_<budget>.toml``:
   - **pretrained**: from the pretraining run (Transformer frozen for ``ctc.freeze_updates``);
   - **scratch**: the same architecture from random initialisation, same labels, updates and
     schedule, nothing frozen (freezing a random encoder only wastes updates).
   Every run validates on its language's dev split (``ru_dev``, ``cs_dev``, ``en_dev``) every
   ``train.valid_every`` updates and keeps the checkpoint with the best dev CER. With ``--sweep``
   (``--sweep optim.lr=0.001,0.002``) one run per combination is fine-tuned and the lowest best dev
   CER picks the recipe.
3. A character n-gram LM is estimated from the row's training transcripts only. Beam width, LM
   weight and word bonus are chosen on dev (:func:`wavssl_onnx.selection.choose_decoding_on_dev`,
   the quickstart's code).
4. Only then are the language's test splits decoded, once each: greedy and with the chosen LM
   setting; CER and WER.

Appends one JSON line to ``benchmarks/results/ssl_benefit.jsonl``: per row ``chosen_on`` (which
split chose the checkpoint, recipe, LM weight, word bonus and beam), dev and test scores greedy and
with the LM, the dev grid, and wall times of pretraining and every fine-tune. Finished runs in the
work directory are reused (delete it to start over).

    python recipes/debian_speech/prepare.py                           # once
    python benchmarks/ssl_benefit.py --budget cpu                     # every row; hours on 2 cores
    python benchmarks/ssl_benefit.py --rows ru_10min,cs_1h:scratch    # some rows
    python benchmarks/ssl_benefit.py --pretrained runs/debian_speech_cpu/pretrain --rows ru_1h
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import sys
import time
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from wavssl_onnx.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._env import append_result, cpu_name, git_commit, load_average  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ssl_benefit.jsonl"
DEV_RESULTS = ROOT / "benchmarks" / "results" / "ssl_benefit_dev.jsonl"
"""``--dev-only`` runs (recipe experiments: dev scores only, the test splits never decoded)."""
CONF = ROOT / "recipes" / "debian_speech" / "conf"
PRESETS = {"cpu": "tiny", "gpu": "small"}
LABEL_SETS = {  # name -> (language, training manifest)
    "ru_10min": ("ru", "ru_train_10min"), "ru_1h": ("ru", "ru_train_1h"),
    "cs_10min": ("cs", "cs_train_10min"), "cs_1h": ("cs", "cs_train_1h"),
    "en_10min": ("en", "en_train_10min"),
}
INITS = ("pretrained", "scratch")
TESTS = {"ru": ("ru_test", "ru_test_otherspk"), "cs": ("cs_test",), "en": ("en_test",)}
DEV = {"ru": "ru_dev", "cs": "cs_dev", "en": "en_dev"}
LM_ORDER = 6
LM_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5)
WORD_BONUSES = (0.0, 1.0)
BEAMS = (8,)
WALL_FILE = "ssl_benefit_wall.json"  # a fine-tune's own wall time, kept beside it for reuse


@dataclass(frozen=True)
class Row:
    """One line of the results table: a label set fine-tuned from one initialisation."""

    label_set: str
    init: str

    @property
    def language(self) -> str:
        return LABEL_SETS[self.label_set][0]

    @property
    def train(self) -> str:
        return LABEL_SETS[self.label_set][1]

    @property
    def dev(self) -> str:
        return DEV[self.language]

    @property
    def tests(self) -> tuple[str, ...]:
        return TESTS[self.language]


def parse_rows(spec: str | None) -> list[Row]:
    """``"ru_10min,cs_1h:scratch"`` -> rows (a label set alone means both inits); None: every row."""
    if not spec:
        return [Row(n, i) for n in LABEL_SETS for i in INITS]
    rows: list[Row] = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, _, init = item.partition(":")
        if name not in LABEL_SETS:
            raise ValueError(f"unknown label set {name!r}; choose from {', '.join(LABEL_SETS)}")
        if init and init not in INITS:
            raise ValueError(f"unknown init {init!r} in {item!r}; choose pretrained or scratch")
        rows += [Row(name, i) for i in ((init,) if init else INITS) if Row(name, i) not in rows]
    if not rows:
        raise ValueError(f"no rows in {spec!r}")
    return rows


def sweep_candidates(sweeps: list[str]) -> list[list[str]]:
    """``["optim.lr=0.001,0.002", "optim.max_updates=500,1000"]`` -> every combination as ``--set`` lists
    (``[[]]`` without sweeps: the recipe as it is)."""
    axes: list[list[str]] = []
    for sweep in sweeps:
        key, eq, values = sweep.partition("=")
        if not eq or not key.strip() or not values.strip():
            raise ValueError(f"--sweep expects section.key=v1,v2,..., got {sweep!r}")
        axes.append([f"{key.strip()}={v.strip()}" for v in values.split(",") if v.strip()])
    return [list(combo) for combo in itertools.product(*axes)]


def run_name(row: Row, sets: list[str]) -> str:
    """Run directory name of a row's candidate: ``ft_<set>_<init>`` (+ ``__key-value`` per swept key)."""
    def part(assignment: str) -> str:
        key, _, value = assignment.partition("=")
        return key.split(".")[-1] + "-" + "".join(c if c.isalnum() or c in ".-" else "_" for c in value.strip('"'))

    tag = "".join("__" + part(s) for s in sets)
    return f"ft_{row.label_set}_{row.init}{tag}"


def choose_candidate(candidates: list[dict[str, object]]) -> dict[str, object]:
    """The candidate with the lowest best dev CER; ties go to the earlier one."""
    return min(candidates, key=lambda c: (float(c["best_dev_cer"]), candidates.index(c)))  # type: ignore[arg-type]


def manifest_hours(path: Path) -> float:
    lines = path.read_text(encoding="utf-8").splitlines()
    col = lines[0].split("\t").index("duration")
    return sum(float(x.split("\t")[col]) for x in lines[1:] if x.strip()) / 3600


def _finished(run: Path, updates: int) -> bool:
    from wavssl.train.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run)
    return ckpt is not None and ckpt.name.endswith(f"{updates:08d}") and (run / "model.safetensors").is_file()


def pretrain(data: Path, work: Path, budget: str, device: str, *, reuse: Path | None,
             sets: list[str]) -> tuple[Path, dict[str, object]]:
    """Pretrain (or reuse) the budget's model on ``data/unlabeled.tsv``; (run, compute summary)."""
    import wavssl
    from wavssl import config as C

    run = reuse if reuse is not None else work / "pretrain"
    summary_path = run / "pretrain_summary.json"
    if reuse is not None:
        if not (run / "model.safetensors").is_file():
            raise SystemExit(f"--pretrained {run}: not a finished pretraining run (no model.safetensors)")
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {
            "wall_seconds": None, "note": "no pretrain_summary.json: wall time unknown"}
        return run, {**summary, "run": str(run), "reused": True}
    cfg = C.resolve(PRESETS[budget], CONF / f"pretrain_{budget}.toml", sets)
    if _finished(run, cfg.optim.max_updates) and summary_path.is_file():
        return run, {**json.loads(summary_path.read_text()), "run": str(run), "reused": True}
    state = wavssl.pretrain(data / "unlabeled.tsv", run, cfg, resume=True, device=device, progress=False)
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    speeds = sorted(r["audio_hours_per_s"] for r in log if "audio_hours_per_s" in r)
    summary = {
        "preset": PRESETS[budget], "sets": sets, "updates": state.num_updates,
        "parameters": sum(p.numel() for p in wavssl.load(run).parameters()),
        "wall_seconds": state.wall_seconds,  # summed over resumed sessions
        "unlabeled_hours": manifest_hours(data / "unlabeled.tsv"),
        "median_audio_hours_per_s": speeds[len(speeds) // 2] if speeds else None,
        "final_accuracy": next((r["accuracy"] for r in reversed(log) if "accuracy" in r), None),
    }
    atomic_write_text(summary_path, json.dumps(summary, indent=1) + "\n")
    return run, {**summary, "run": str(run), "reused": False}


def finetune_candidate(data: Path, pre: Path, out: Path, row: Row, budget: str, sets: list[str],
                       device: str) -> dict[str, object]:
    """Fine-tune one candidate (or reuse it), validating on the row's dev split; its dev summary."""
    from wavssl import config as C
    from wavssl.train.asr import finetune
    from wavssl.train.checkpoint import load_config

    cfg = C.merge(C.finetune_config(load_config(pre), "ctc"), C.load_toml(CONF / f"finetune_{budget}.toml"))
    base = [f"ctc.language={json.dumps(row.language)}", 'train.best_metric="cer"']
    if row.init == "scratch":
        base += ["ctc.freeze_updates=0", "ctc.freeze_feature_encoder=false"]
    cfg = C.merge(cfg, C.parse_set(base + sets)).validate()
    if cfg.train.valid_every <= 0:
        raise SystemExit("train.valid_every must be > 0: the checkpoint is chosen on dev")
    if _finished(out, cfg.optim.max_updates):
        check_reusable(out, cfg)
    else:
        result = finetune(pre if row.init == "pretrained" else None, data / f"{row.train}.tsv", out, cfg=cfg,
                          valid=data / f"{row.dev}.tsv", resume=True, device=device, progress=False)
        atomic_write_text(out / WALL_FILE, json.dumps({"wall_seconds": result.state.wall_seconds}) + "\n")
    summary = json.loads((out / "finetune_summary.json").read_text())
    wall = json.loads((out / WALL_FILE).read_text())["wall_seconds"] if (out / WALL_FILE).is_file() else None
    return {"run": str(out), "sets": sets, "best_update": summary["best_update"],
            "best_dev_cer": summary.get("best_valid_cer"), "updates": summary["num_updates"],
            "train_minutes": summary["train_seconds"] / 60, "wall_seconds": wall}


def _run_settings(cfg: Any) -> dict[str, object]:
    """The fine-tuning settings a finished run must share to be reused, as dotted keys."""
    from wavssl import config as C

    d = C.to_dict(cfg)
    flat = {f"{s}.{k}": v for s in ("ctc", "optim", "data") for k, v in d[s].items()}
    return flat | {f"train.{k}": d["train"][k] for k in ("valid_every", "best_metric", "seed")}


def check_reusable(out: Path, cfg: Any) -> None:
    """A finished run is reused only if it was fine-tuned with these settings (head, optimiser,
    batching, validation) and validated on dev (an older benchmark's run kept its last checkpoint
    for cs / en); else SystemExit."""
    import math

    from wavssl.train.checkpoint import load_config

    summary = json.loads((out / "finetune_summary.json").read_text())
    best = summary.get("best_valid_cer")
    old, new = _run_settings(load_config(out)), _run_settings(cfg)
    if old != new:
        changed = sorted(k for k, v in old.items() if new.get(k) != v)
        raise SystemExit(f"{out}: finished with other settings ({', '.join(changed)}); delete it or use another "
                         "--workdir")
    if best is None or not math.isfinite(best) or summary.get("best_update", -1) < 0:
        raise SystemExit(f"{out}: finished without dev validation (no best dev CER); delete it or use another --workdir")


def log_probs(model, data_path: Path, language: str) -> tuple[list, list[str]]:
    """(F_i, V) log-probabilities of a transcribed set's utterances and their references."""
    from wavssl.data.text import read_transcribed

    from wavssl.recognition import model_waveform, recognize

    data = read_transcribed(data_path, sample_rate=model.sample_rate, language=language)
    waves = [model_waveform(model, item.path, model.sample_rate) for item in data.items]
    return recognize(model, waves), [item.text for item in data.items]


def score_row(data: Path, row: Row, chosen: dict[str, object], device: str, *, lm_weights: tuple[float, ...],
              word_bonuses: tuple[float, ...], beams: tuple[int, ...], dev_only: bool = False) -> dict[str, object]:
    """Dev choices of decoding for the chosen run, then the test splits decoded once each (none with
    ``dev_only``)."""
    import wavssl
    from wavssl.data.text import read_transcribed
    from wavssl_onnx import NGramLM
    from wavssl_onnx.selection import Setting, choose_decoding_on_dev, decode_texts, grid, score

    model = wavssl.load(Path(str(chosen["run"])), device)  # the top-level weights are the best dev checkpoint
    train_texts = [item.text for item in read_transcribed(data / f"{row.train}.tsv", language=row.language).items]
    lm = NGramLM.from_lines(train_texts, order=LM_ORDER, level="char")
    t0 = time.perf_counter()
    dev_lp, dev_refs = log_probs(model, data / f"{row.dev}.tsv", row.language)
    choice = choose_decoding_on_dev(dev_lp, dev_refs, model.vocab, lm, grid(lm_weights, word_bonuses, beams),
                                    language=row.language, frame_shift=model.frame_shift)
    dev_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    tests: dict[str, object] = {}
    for test in () if dev_only else row.tests:  # touched once, after every choice above
        lps, refs = log_probs(model, data / f"{test}.tsv", row.language)
        greedy = decode_texts(lps, model.vocab, Setting(), None, language=row.language, frame_shift=model.frame_shift)
        fused = decode_texts(lps, model.vocab, choice.best, lm, language=row.language, frame_shift=model.frame_shift)
        tests[test] = {"greedy": score(refs, greedy).to_dict(), "lm": score(refs, fused).to_dict(),
                       "examples": [list(x) for x in zip(refs[:3], greedy[:3], fused[:3])]}
    return {"decoding": choice.best.to_dict(), "lm": {"order": LM_ORDER, "level": "char", "trained_on": row.train,
                                                       "lines": len(train_texts)},
            "dev": {"split": row.dev, "greedy": choice.dev[Setting()].to_dict(), "lm": choice.best_scores.to_dict(),
                    "grid": choice.grid(), "decode_seconds": dev_seconds},
            "tests": tests, "test_decode_seconds": time.perf_counter() - t0}


def run_row(data: Path, work: Path, pre: Path, row: Row, budget: str, sweeps: list[str], finetune_sets: list[str],
            device: str, **grid_args: tuple) -> dict[str, object]:
    """Fine-tune a row's candidates, choose on dev, score test once; the row's JSON record."""
    candidates = [finetune_candidate(data, pre, work / run_name(row, sets), row, budget, finetune_sets + sets, device)
                  for sets in sweep_candidates(sweeps)]
    chosen = choose_candidate(candidates)
    scored = score_row(data, row, chosen, device, **grid_args)  # type: ignore[arg-type]
    dec = scored["decoding"]
    assert isinstance(dec, dict)
    return {
        "label_set": row.label_set, "init": row.init, "language": row.language, "train": row.train,
        "chosen_on": {"checkpoint": row.dev, "recipe": row.dev if len(candidates) > 1 else "fixed (conf file)",
                      "lm_weight": row.dev, "word_bonus": row.dev, "beam": row.dev},
        "chosen": {"run": chosen["run"], "sets": chosen["sets"], "best_update": chosen["best_update"], **dec},
        "candidates": candidates, "updates": chosen["updates"], "train_minutes": chosen["train_minutes"],
        "finetune_wall_seconds": [c["wall_seconds"] for c in candidates], **scored,
    }


def dev_table(rows: list[dict[str, object]]) -> str:
    """Markdown of a ``--dev-only`` run: per row and candidate, the best dev CER of fine-tuning, and
    the chosen candidate's dev CER greedy / with the LM."""
    lines = ["| labels | init | candidate (sets) | best dev CER (update) | dev CER greedy / LM |", "|---|---|---|---|---|"]
    for r in rows:
        dev = r["dev"]
        assert isinstance(dev, dict)
        for c in r["candidates"]:  # type: ignore[attr-defined]
            chosen = c["run"] == r["chosen"]["run"]  # type: ignore[index]
            lines.append(f"| {r['label_set']} | {r['init']} | {' '.join(c['sets']) or '-'} | "
                         f"{100 * c['best_dev_cer']:.1f} ({c['best_update']}) | "
                         + (f"{100 * dev['greedy']['cer']:.1f} / {100 * dev['lm']['cer']:.1f} |" if chosen else "- |"))
    return "\n".join(lines)


def table(rows: list[dict[str, object]]) -> str:
    """Markdown: per label set and test split, pretrained vs scratch CER (greedy / LM) and WER (LM)."""
    by = {(r["label_set"], r["init"]): r for r in rows}
    lines = ["| labels | test | CER pretrained greedy / LM | CER scratch greedy / LM | WER pretrained LM | WER scratch LM |",
             "|---|---|---|---|---|---|"]

    def cell(r: dict | None, test: str, key: str, kind: str) -> str:
        return "-" if r is None else f"{100 * r['tests'][test][kind][key]:.1f}"

    for name in LABEL_SETS:
        p, s = by.get((name, "pretrained")), by.get((name, "scratch"))
        if p is None and s is None:
            continue
        for test in TESTS[LABEL_SETS[name][0]]:
            lines.append(f"| {name} | {test} | {cell(p, test, 'cer', 'greedy')} / {cell(p, test, 'cer', 'lm')} | "
                         f"{cell(s, test, 'cer', 'greedy')} / {cell(s, test, 'cer', 'lm')} | "
                         f"{cell(p, test, 'wer', 'lm')} | {cell(s, test, 'wer', 'lm')} |")
    return "\n".join(lines)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "data" / "debian_speech", help="prepare.py's output")
    p.add_argument("--budget", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--workdir", type=Path, help="runs go here (default: runs/debian_speech_<budget>)")
    p.add_argument("--rows", "--only", dest="rows",
                   help=f"comma-separated rows NAME[:pretrained|scratch], NAME from {', '.join(LABEL_SETS)} "
                        "(a name alone: both inits; default: every row)")
    p.add_argument("--pretrained", type=Path, metavar="RUN", help="reuse this finished pretraining run")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override of the pretraining config (e.g. optim.max_updates=20 for a smoke run)")
    p.add_argument("--finetune-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override of conf/finetune_<budget>.toml for every row")
    p.add_argument("--sweep", action="append", default=[], metavar="SECTION.KEY=V1,V2",
                   help="fine-tune one run per value (per combination of several --sweep); dev CER chooses")
    p.add_argument("--lm-weights", type=_floats, default=LM_WEIGHTS, help="LM weights tried on dev (0: greedy)")
    p.add_argument("--word-bonuses", type=_floats, default=WORD_BONUSES, help="word bonuses tried on dev")
    p.add_argument("--beams", type=lambda t: tuple(int(x) for x in t.split(",")), default=BEAMS,
                   help="beam widths tried on dev")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--dev-only", action="store_true",
                   help="recipe experiments: score dev only, never decode a test split (written to "
                        f"{DEV_RESULTS.relative_to(ROOT)} unless --out)")
    p.add_argument("--out", type=Path, help=f"results file the JSON line is appended to (default {RESULTS.relative_to(ROOT)})")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    try:
        rows = parse_rows(a.rows)
        sweep_candidates(a.sweep)
    except ValueError as e:
        p.error(str(e))
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    needed = dict.fromkeys(["unlabeled"] + [n for r in rows for n in (r.train, r.dev, *r.tests)])
    missing = [n for n in needed if not (a.data / f"{n}.tsv").is_file()]
    if missing:
        print(f"{a.data}: no {', '.join(m + '.tsv' for m in missing)}; run python recipes/debian_speech/prepare.py "
              "first", file=sys.stderr)
        return 2
    device = "cuda" if a.device == "auto" and torch.cuda.is_available() else ("cpu" if a.device == "auto" else a.device)
    work = a.workdir or ROOT / "runs" / f"debian_speech_{a.budget}"
    t0 = time.perf_counter()
    print(f"[bench] pretraining ({a.budget} budget, preset {PRESETS[a.budget]}) ...", flush=True)
    pre, pre_summary = pretrain(a.data, work, a.budget, device, reuse=a.pretrained, sets=a.pretrain_set)
    print(f"[bench] pretrained: {json.dumps(pre_summary)}", flush=True)
    records = []
    for row in rows:
        rec = run_row(a.data, work, pre, row, a.budget, a.sweep, a.finetune_set, device,
                      lm_weights=a.lm_weights, word_bonuses=a.word_bonuses, beams=a.beams, dev_only=a.dev_only)
        records.append(rec)
        dev = rec["dev"]
        print(f"[bench] {row.label_set} {row.init}: dev {dev['split']} CER {100 * dev['greedy']['cer']:.1f} greedy, "
              f"{100 * dev['lm']['cer']:.1f} LM {json.dumps(rec['decoding'])}; "
              + ", ".join(f"{t} CER {100 * v['greedy']['cer']:.1f} / {100 * v['lm']['cer']:.1f}"
                          for t, v in rec["tests"].items()), flush=True)
    print(dev_table(records) if a.dev_only else table(records))
    record = {
        "benchmark": "ssl_benefit", "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit("wavssl", "export", "benchmarks/ssl_benefit.py", "recipes/debian_speech") or "unknown",
        "budget": a.budget, "device": device, "cpu": cpu_name(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "load_average": load_average(), "argv": sys.argv[1:] if argv is None else argv,
        "protocol": "checkpoint, recipe and decoding chosen on each language's dev split; "
                    + ("dev only: no test split decoded" if a.dev_only else "test decoded once at the end"),
        "dev_only": a.dev_only,
        "pretraining": pre_summary, "runs": records, "wall_seconds": time.perf_counter() - t0,
    }
    if not a.no_write:
        append_result(a.out or (DEV_RESULTS if a.dev_only else RESULTS), record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
