"""``wavssl`` command line: thin subcommands over the library API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import config as C


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", choices=sorted(C.PRESETS), help="starting configuration")
    p.add_argument("--config", type=Path, help="TOML file of overrides applied over the preset")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one field, e.g. --set optim.max_updates=1000 (repeatable)")


def _cmd_pretrain(a: argparse.Namespace) -> int:
    from .train.checkpoint import latest_checkpoint, load_config
    from .train.tasks import pretrain

    if a.resume and latest_checkpoint(a.out) is not None:
        cfg = load_config(a.out)  # a run continues with its own config; --set may still extend it
        if a.config:
            cfg = C.merge(cfg, C.load_toml(a.config))
        if a.assignments:
            cfg = C.merge(cfg, C.parse_set(a.assignments))
    else:
        cfg = C.resolve(a.preset, a.config, a.assignments)
    state = pretrain(a.data, a.out, cfg.validate(), resume=a.resume, device=a.device, progress=not a.no_progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"[wavssl] done: {state.num_updates} updates, {state.nonfinite_total} non-finite steps skipped -> {a.out}")
    return 0


def _cmd_finetune(a: argparse.Namespace) -> int:
    from .data.sensor import draw_per_class
    from .train.checkpoint import load_config
    from .train.classify import finetune
    from .train.tasks import load_sensor_data

    cfg = load_config(a.run)
    if cfg.task != "pretrain":
        raise ValueError(f"{a.run}: a {cfg.task!r} run; fine-tune from a pretraining run")
    if cfg.model.frontend.kind != "sensor":
        raise ValueError(f"{a.run}: --task {a.task} needs a sensor model (this run's front end is "
                         f"{cfg.model.frontend.kind!r})")
    if a.config:
        cfg = C.merge(cfg, C.load_toml(a.config))
    sets = list(a.assignments) + [f"train.seed={a.seed}"] + (["classify.linear_probe=true"] if a.linear_probe else [])
    cfg = C.merge(cfg, C.parse_set(sets)).validate()
    train = load_sensor_data(a.train, cfg, labels=a.train_labels)
    if a.k_per_class > 0:
        train = train.subset(draw_per_class(train, a.k_per_class, a.seed))
    valid = load_sensor_data(a.valid, cfg, labels=a.valid_labels) if a.valid is not None else None
    metrics = finetune(a.run, train, a.out, cfg=cfg, valid=valid, scratch=a.scratch, device=a.device,
                       progress=not a.no_progress)
    if metrics is not None:
        print(f"[wavssl] validation: accuracy {metrics.accuracy:.4f}  macro-F1 {metrics.macro_f1:.4f}  "
              f"({metrics.count} recordings)")
    print(f"[wavssl] done -> {a.out}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    import dataclasses
    import json

    from .data.sensor import check_series
    from .train.checkpoint import load, load_config
    from .train.classify import score
    from .train.tasks import load_sensor_data
    from .train.trainer import Distributed, resolve_device

    cfg = load_config(a.run)
    if cfg.task != "classify":
        raise ValueError(f"{a.run}: a {cfg.task!r} run; evaluate a classifier run (wavssl finetune --task classify)")
    model = load(a.run, resolve_device(a.device, Distributed()))
    data = load_sensor_data(a.data, cfg, labels=a.labels)
    check_series(data, channels=cfg.model.frontend.in_channels, min_length=model.encoder.frontend.receptive_field,
                 expected_by=f"the checkpoint {a.run}")
    metrics = score(model, data, model.class_names, where=str(a.data), device=next(model.parameters()).device)
    if a.json:
        print(json.dumps({"run": str(a.run), "data": str(a.data), **dataclasses.asdict(metrics)}))
    else:
        print(f"accuracy {metrics.accuracy:.4f}  macro-F1 {metrics.macro_f1:.4f}  ({metrics.count} recordings)")
    return 0


def _cmd_import(a: argparse.Namespace) -> int:
    from .train.importers import import_checkpoint

    out = import_checkpoint(a.src, a.out)
    print(f"[wavssl] imported {a.src} -> {out}")
    return 0


def _cmd_config(a: argparse.Namespace) -> int:
    print(C.dump_toml(C.resolve(a.preset, a.config, a.assignments)))
    return 0


def _cmd_synth(a: argparse.Namespace) -> int:
    from .data.synth import synthesize_corpus

    files = synthesize_corpus(a.out, num_utterances=a.num, seed=a.seed)
    print(f"[wavssl] {len(files)} synthetic utterances in {a.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wavssl", description="Self-supervised speech and sensor learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain on unlabeled audio or sensor series (the preset's front end decides)")
    p.add_argument("data", type=Path, help="audio: folder scanned recursively, or a TSV manifest with a path column; "
                   "sensor presets: a .npy/.npz/.csv/.ts file or a folder of them")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a pretrained run for a task (classify: sensor series)")
    p.add_argument("run", type=Path, help="pretraining run directory")
    p.add_argument("--task", required=True, choices=["classify"], help="what to fine-tune for")
    p.add_argument("--train", type=Path, required=True,
                   help="labelled series: a .ts file with class labels, .npy/.npz (+ --train-labels), or a folder of "
                        "CSV files (+ labels.tsv inside or --train-labels)")
    p.add_argument("--train-labels", type=Path, help="labels CSV/TSV for --train")
    p.add_argument("--valid", type=Path, help="labelled series scored at the end")
    p.add_argument("--valid-labels", type=Path, help="labels CSV/TSV for --valid")
    p.add_argument("--out", type=Path, required=True, help="classifier run directory")
    p.add_argument("--k-per-class", type=int, default=0, metavar="K",
                   help="train on K random recordings per class of --train (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw, the head's initialisation and batches")
    p.add_argument("--linear-probe", action="store_true", help="freeze the encoder; train only pooling + head")
    p.add_argument("--scratch", action="store_true", help="train the run's architecture from random initialisation")
    p.add_argument("--config", type=Path, help="TOML file of overrides (e.g. a [classify] table)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one field, e.g. --set classify.max_updates=500 (repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("evaluate", help="score a fine-tuned classifier on labelled data: accuracy and macro-F1")
    p.add_argument("run", type=Path, help="classifier run directory")
    p.add_argument("data", type=Path, help="labelled series (same forms as finetune --train)")
    p.add_argument("--labels", type=Path, help="labels CSV/TSV for DATA")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("import-checkpoint", help="convert a transformers or fairseq wav2vec2 checkpoint")
    p.add_argument("src", type=Path, help="transformers model directory or fairseq .pt file")
    p.add_argument("out", type=Path, help="wavssl run directory to write")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("config", help="print the resolved configuration as TOML")
    _config_args(p)
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("synth-corpus", help="write a built-in synthetic English speech corpus (espeak-ng / flite)")
    p.add_argument("out", type=Path)
    p.add_argument("-n", "--num", type=int, default=200, help="number of utterances")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data.audio import AudioError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (C.ConfigError, AudioError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"wavssl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
