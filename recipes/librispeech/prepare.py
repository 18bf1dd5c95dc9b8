"""Manifests for LibriSpeech and the Libri-light limited-resource splits.

    python recipes/librispeech/prepare.py LIBRISPEECH_DIR --out data/librispeech [--libri-light DIR]

LIBRISPEECH_DIR holds the subsets as distributed (``train-clean-100/``, ``dev-clean/``, ...), each
``SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac`` with a ``SPEAKER-CHAPTER.trans.txt`` per chapter
(``UTT-ID TRANSCRIPT`` lines). The Libri-light fine-tuning folder (``librispeech_finetuning/``)
holds ``1h/{0..5}/{clean,other}/...`` (six 10-minute sets) and ``9h/{clean,other}/...`` in the
same layout.

Writes TSV manifests (``path<TAB>text<TAB>duration``, absolute paths, lower-cased text) per
LibriSpeech subset, ``pretrain.tsv`` (every ``train-*`` subset), and for Libri-light
``train_10m.tsv`` (``1h/0``), ``train_1h.tsv`` (all of ``1h``) and ``train_10h.tsv`` (``1h`` + ``9h``).
Utterances whose audio is missing are reported and left out.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from wavssl_onnx.fileio import atomic_write_text

SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other",
           "test-clean", "test-other")


@dataclass(frozen=True)
class Utterance:
    path: Path
    text: str
    duration: float


def read_transcripts(root: Path) -> tuple[list[Utterance], list[str]]:
    """Every utterance under ``root`` (any depth of SPEAKER/CHAPTER folders), sorted by path, and
    problems found (missing audio, malformed lines)."""
    utts, problems = [], []
    for trans in sorted(root.rglob("*.trans.txt")):
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            utt_id, _, text = line.strip().partition(" ")
            if not utt_id or not text:
                problems.append(f"{trans}:{number}: malformed line {line!r}")
                continue
            audio = trans.parent / f"{utt_id}.flac"
            if not audio.is_file():
                problems.append(f"{trans}:{number}: missing audio {audio}")
                continue
            info = sf.info(str(audio))
            utts.append(Utterance(audio.resolve(), text.lower(), info.frames / info.samplerate))
    return sorted(utts, key=lambda u: str(u.path)), problems


def write_manifest(path: Path, utts: list[Utterance]) -> float:
    """Write ``path`` (atomically) and return its hours of audio."""
    lines = ["path\ttext\tduration"] + [f"{u.path}\t{u.text}\t{u.duration:.3f}" for u in utts]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return sum(u.duration for u in utts) / 3600


def prepare(librispeech: Path, out: Path, libri_light: Path | None = None) -> dict[str, float]:
    """Write every manifest that the given folders allow; returns hours per manifest."""
    hours: dict[str, float] = {}
    problems: list[str] = []
    pretrain: list[Utterance] = []
    for subset in SUBSETS:
        if not (librispeech / subset).is_dir():
            continue
        utts, bad = read_transcripts(librispeech / subset)
        problems += bad
        hours[subset] = write_manifest(out / f"{subset}.tsv", utts)
        if subset.startswith("train-"):
            pretrain += utts
    if pretrain:
        hours["pretrain"] = write_manifest(out / "pretrain.tsv", pretrain)
    if libri_light is not None:
        splits = {"train_10m": [libri_light / "1h" / "0"], "train_1h": [libri_light / "1h"],
                  "train_10h": [libri_light / "1h", libri_light / "9h"]}
        for name, roots in splits.items():
            utts = []
            for root in roots:
                if not root.is_dir():
                    raise FileNotFoundError(f"{root}: missing Libri-light folder (expected librispeech_finetuning/)")
                found, bad = read_transcripts(root)
                utts += found
                problems += bad
            hours[name] = write_manifest(out / f"{name}.tsv", utts)
    if not hours:
        raise FileNotFoundError(f"{librispeech}: no LibriSpeech subset folders ({', '.join(SUBSETS)})")
    if problems:
        atomic_write_text(out / "problems.txt", "\n".join(problems) + "\n")
    return hours


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("librispeech", type=Path, help="folder holding train-clean-100/, dev-clean/, ...")
    p.add_argument("--out", type=Path, required=True, help="where the manifests go")
    p.add_argument("--libri-light", type=Path, help="Libri-light librispeech_finetuning/ folder")
    a = p.parse_args(argv)
    try:
        hours = prepare(a.librispeech, a.out, a.libri_light)
    except FileNotFoundError as e:
        print(f"prepare.py: error: {e}", file=sys.stderr)
        return 2
    for name, h in hours.items():
        print(f"{name:>16}: {h:8.2f} h -> {a.out / (name + '.tsv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
