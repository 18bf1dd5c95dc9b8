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
    state = pretrain(a.audio, a.out, cfg.validate(), resume=a.resume, device=a.device, progress=not a.no_progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"[wavssl] done: {state.num_updates} updates, {state.nonfinite_total} non-finite steps skipped -> {a.out}")
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

    p = sub.add_parser("pretrain", help="pretrain on a folder (or TSV manifest) of unlabeled audio")
    p.add_argument("audio", type=Path, help="folder scanned recursively, or a TSV manifest with a path column")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pretrain)

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
