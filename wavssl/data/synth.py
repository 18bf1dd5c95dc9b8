"""Synthetic English speech corpus from the espeak-ng and flite command-line synthesizers.

Gives the library real (if robotic) speech to pretrain and test on without any download::

    python -m wavssl.data.synth data/speech -n 200

Each utterance is one or two sentences spoken by a voice, speed and pitch that are a deterministic
function of ``(seed, split, utterance index)``; engines alternate between utterances. Sentences are
the sixty hand-written SENTENCES and sentences drawn from a small English grammar
(:func:`grammar_sentence`: about a million distinct sentences over two hundred words).

Splits (``synthesize_corpus(..., dev=N, test=N)``): no sentence and no voice is in two splits. A
grammar sentence's split is a hash of its text (:func:`sentence_split`, so no list has to be
shared); held-out utterances speak grammar sentences only, in espeak-ng voice variants
(HELD_OUT_VARIANTS, in every accent) that training never uses. flite has four voices, too few to hold
one out and still generalise to it (measured: 55-60 % CER on an unseen flite voice against 28-31 % on
unseen espeak-ng variants), so all four train and none is tested. Output is 16-bit
mono WAV plus ``transcripts.tsv`` (the training split, ``path\\ttext``) and
``dev.tsv`` / ``test.tsv`` for the held-out splits (files under ``dev/`` and ``test/``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from wavssl_onnx.audio import write_audio
from wavssl_onnx.fileio import atomic_write_text

__all__ = ["ENGINES", "SENTENCES", "grammar_sentence", "sentence_split", "synthesize_corpus"]

SENTENCES: tuple[str, ...] = (
    "The morning train was late again, so everyone waited on the cold platform.",
    "Please put the blue folder on the shelf next to the window.",
    "My grandmother grows tomatoes, beans and peppers in her small garden.",
    "A sudden gust of wind blew the papers across the empty parking lot.",
    "We should leave early tomorrow if we want to avoid the traffic.",
    "The library closes at six on weekdays and at noon on Saturdays.",
    "He poured a glass of water and sat quietly by the fire.",
    "Seven children ran down the hill, laughing and shouting at the dogs.",
    "Could you tell me where the nearest post office is?",
    "The old bridge has been repaired and will open again next month.",
    "She painted the kitchen a bright yellow colour last summer.",
    "Thunder rolled over the valley long before the rain arrived.",
    "Our neighbours bought a new car, but they rarely drive it.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "I forgot my umbrella at the office, and of course it started to rain.",
    "The museum on the corner shows paintings by local artists.",
    "Fresh bread from the bakery smells wonderful on a winter morning.",
    "The captain announced that the ship would reach the harbour at dawn.",
    "Most birds fly south when the days grow short and cold.",
    "Turn left at the second light and follow the signs to the station.",
    "The students finished their project just before the deadline.",
    "A quiet river winds through the forest behind the farmhouse.",
    "He keeps his tools in a wooden box under the stairs.",
    "The concert was cancelled because the singer had a bad cold.",
    "Nobody expected the small team to win the championship.",
    "The price of apples has gone up since the autumn storms.",
    "Remember to switch off the lights when you leave the room.",
    "The doctor said she should rest for a few days.",
    "Clouds gathered over the mountains as the sun went down.",
    "They spent the afternoon fixing the fence around the field.",
    "The cat slept on the warm roof of the garden shed.",
    "Every Friday evening the family eats dinner together.",
    "The new road will connect the two villages by the end of the year.",
    "Her brother collects old maps and postcards from around the world.",
    "The market is busiest on Saturday mornings before ten.",
    "A loud knock at the door woke the whole house.",
    "We watched the fishing boats return with their evening catch.",
    "The teacher asked the class to read the first chapter aloud.",
    "It took three hours to climb to the top of the hill.",
    "The bus driver smiled and waved as we stepped aboard.",
    "Snow covered the roofs and the streets were strangely silent.",
    "He wrote a long letter to his friend who lives abroad.",
    "The garden gate creaks every time someone opens it.",
    "The kettle whistled while she searched for clean cups.",
    "Our flight was delayed by two hours because of fog.",
    "The farmer counted his sheep twice before closing the barn.",
    "Children played football in the park until it got dark.",
    "The lamp on the desk flickered and then went out.",
    "She carefully folded the letter and placed it in the drawer.",
    "A narrow path leads from the church down to the beach.",
    "The engineer explained how the old water mill worked.",
    "We need more chairs because twelve guests are coming tonight.",
    "The clock in the hallway is always five minutes fast.",
    "He learned to play the violin when he was very young.",
    "The shop on the corner sells newspapers, sweets and stamps.",
    "Heavy rain flooded the lower fields near the river.",
    "The scientist recorded the temperature every hour for a week.",
    "Please speak slowly so that everyone can follow the instructions.",
    "The little boat drifted gently towards the sandy shore.",
    "At the end of the day, the workers walked home together.",
)
"""Sixty plain English sentences; utterances use one or two of them."""

_SUBJECTS = ("the farmer", "my sister", "the old man", "a young girl", "the teacher", "our neighbour",
             "the doctor", "his brother", "the driver", "a small boy", "the captain", "her mother",
             "the baker", "my friend", "the children", "the students", "the workers", "a tall woman",
             "the king", "the nurse", "the pilot", "my uncle", "the cook", "a quiet man")
_VERBS = ("found", "carried", "painted", "cleaned", "opened", "closed", "sold", "bought", "moved",
          "washed", "fixed", "left", "saw", "wanted", "brought", "dropped", "pulled", "pushed", "kept",
          "watched", "covered", "filled", "counted", "lost")
_OBJECTS = ("the red box", "a heavy bag", "the green door", "an old chair", "the wooden table",
            "a black dog", "the white cat", "two cups", "the small window", "a yellow car", "the long rope",
            "three apples", "the blue boat", "a warm coat", "the broken clock", "the silver key",
            "a basket of eggs", "the new bicycle", "the dirty boots", "a bottle of milk", "the big map",
            "five letters", "the brown horse", "a bag of rice")
_PLACES = ("in the kitchen", "near the river", "behind the house", "at the station", "on the hill",
           "by the lake", "in the garden", "under the bridge", "at the market", "in the forest",
           "next to the school", "on the beach", "in the village", "at the farm", "inside the shop",
           "along the road")
_TIMES = ("this morning", "last night", "on monday", "after lunch", "before dinner", "yesterday",
          "every day", "in the evening", "at noon", "on sunday", "last week", "early today")


def grammar_sentence(rng: np.random.Generator) -> str:
    """A sentence of the form subject verb object place [time] (about 10^6 distinct sentences)."""
    words = [_SUBJECTS[rng.integers(len(_SUBJECTS))], _VERBS[rng.integers(len(_VERBS))],
             _OBJECTS[rng.integers(len(_OBJECTS))], _PLACES[rng.integers(len(_PLACES))]]
    if rng.random() < 0.5:
        words.append(_TIMES[rng.integers(len(_TIMES))])
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def sentence_split(text: str) -> str:
    """The split a grammar sentence belongs to, by a stable hash: ``dev`` and ``test`` one in ten
    each, ``train`` the rest."""
    bucket = zlib.crc32(text.encode()) % 10
    return "dev" if bucket == 0 else "test" if bucket == 5 else "train"


ENGINES: tuple[str, ...] = ("espeak-ng", "flite")
"""Supported synthesizers (also the Debian package names)."""

_ESPEAK_LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-us-nyc")
_ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5")
_FLITE_VOICES = ("slt", "rms", "awb", "kal16")
HELD_OUT_VARIANTS = ("m3", "f4")
"""espeak-ng voice variants that only the dev and test splits use (in every accent)."""
SPLITS = ("train", "dev", "test")
_ESPEAK_DEFAULT_WPM = 175
_TWO_SENTENCE_PROBABILITY = 0.25
_SUBPROCESS_TIMEOUT_S = 120


@dataclass(frozen=True)
class Utterance:
    """How to synthesize one corpus file.

    ``speed`` is a tempo factor (1.0 = engine default); ``pitch`` is espeak-ng's 0-99
    pitch and is None for flite, which has no relative pitch control.
    """

    name: str
    text: str
    engine: str
    voice: str
    speed: float
    pitch: int | None


def plan_utterance(index: int, seed: int, engines: tuple[str, ...], split: str = "train") -> Utterance:
    """Deterministic recipe for utterance ``index`` of ``split``; engines alternate by index.

    Training utterances: even indices start with the hand-written SENTENCES (a seeded permutation,
    so small corpora still cover many), odd ones with a grammar sentence, and a quarter add a second
    sentence; no held-out sentence (:func:`sentence_split`) and no held-out voice. ``dev`` and
    ``test``: one grammar sentence of their own split in a held-out espeak-ng voice.
    """
    if split not in SPLITS:
        raise ValueError(f"plan_utterance: split must be one of {SPLITS}, got {split!r}")
    held_out = split != "train"
    order = np.random.default_rng(seed).permutation(len(SENTENCES))
    rng = np.random.default_rng([seed, SPLITS.index(split), index])

    def draw() -> str:
        while True:
            text = grammar_sentence(rng)
            if sentence_split(text) == split:
                return text

    if held_out:
        sentences = [draw()]
    else:
        sentences = [SENTENCES[order[(index // 2) % len(SENTENCES)]] if index % 2 == 0 else draw()]
        if rng.random() < _TWO_SENTENCE_PROBABILITY:
            sentences.append(draw() if rng.random() < 0.5 else SENTENCES[rng.integers(len(SENTENCES))])
    if held_out and "espeak-ng" not in engines:
        raise ValueError("held-out splits are spoken by espeak-ng voices (flite has too few voices to hold one out)")
    engine = "espeak-ng" if held_out else engines[index % len(engines)]
    speed = round(float(rng.uniform(0.8, 1.15)), 2)
    if engine == "espeak-ng":
        variants = HELD_OUT_VARIANTS if held_out else tuple(v for v in _ESPEAK_VARIANTS if v not in HELD_OUT_VARIANTS)
        language = _ESPEAK_LANGUAGES[rng.integers(len(_ESPEAK_LANGUAGES))]
        variant = variants[rng.integers(len(variants))]
        voice, pitch = f"{language}+{variant}", int(rng.integers(25, 75))
    else:
        voice, pitch = _FLITE_VOICES[rng.integers(len(_FLITE_VOICES))], None
    prefix = "s" if split == "train" else split[0]
    name = f"{prefix}{seed}_{index:05d}_{engine}_{voice.replace('+', '_')}.wav"
    return Utterance(name, " ".join(sentences), engine, voice, speed, pitch)


def engine_command(utt: Utterance, out_path: Path) -> list[str]:
    """argv that makes ``utt.engine`` write ``utt.text`` as a WAV file to ``out_path``."""
    if utt.engine == "espeak-ng":
        wpm = round(_ESPEAK_DEFAULT_WPM * utt.speed)
        return ["espeak-ng", "-v", utt.voice, "-s", str(wpm), "-p", str(utt.pitch), "-w", str(out_path), utt.text]
    stretch = f"{1.0 / utt.speed:.3f}"
    return ["flite", "-voice", utt.voice, "--setf", f"duration_stretch={stretch}", "-t", utt.text, "-o", str(out_path)]


def _synthesize(utt: Utterance, out_dir: Path, scratch: Path, sample_rate: int) -> None:
    """Run the engine for ``utt`` and store the result as ``out_dir / utt.name``."""
    final = out_dir / utt.name
    raw = scratch / utt.name
    cmd = engine_command(utt, raw)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"{final}: running {utt.engine} failed ({err})") from err
    if proc.returncode != 0 or not raw.exists():
        raise RuntimeError(
            f"{final}: {utt.engine} exited with status {proc.returncode}: {proc.stderr.strip()[:500]}"
        )
    data, rate = sf.read(raw, dtype="float32", always_2d=True)
    wave = data.mean(axis=1, dtype=np.float32)
    if rate != sample_rate:
        wave = soxr.resample(wave, rate, sample_rate, quality="HQ")
    if wave.size == 0:
        raise RuntimeError(f"{final}: {utt.engine} produced no audio for {utt.text!r}")
    write_audio(final, np.clip(wave, -1.0, 1.0), sample_rate)  # 16-bit WAV, atomically
    raw.unlink()


def available_engines(engines: tuple[str, ...]) -> tuple[str, ...]:
    """The subset of ``engines`` installed on PATH, in the given order.

    Raises:
        ValueError: an engine name is not supported.
        RuntimeError: none of them is installed (the message gives the apt-get line).
    """
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise ValueError(f"synthesize_corpus: engines must be a non-empty subset of {ENGINES}, got {engines}")
    found = tuple(e for e in engines if shutil.which(e) is not None)
    if not found:
        raise RuntimeError(
            f"synthesize_corpus: none of the speech synthesizers {', '.join(engines)} is installed "
            f"(looked on PATH); install with: sudo apt-get install {' '.join(engines)}"
        )
    return found


def synthesize_corpus(
    out_dir: str | Path,
    *,
    num_utterances: int = 200,
    sample_rate: int = 16000,
    seed: int = 0,
    engines: tuple[str, ...] = ENGINES,
    dev: int = 0,
    test: int = 0,
) -> list[Path]:
    """Generate ``num_utterances`` synthesized English training utterances in ``out_dir`` (and
    ``dev`` / ``test`` held-out ones under ``out_dir/dev`` and ``out_dir/test``).

    Files are 16-bit mono WAV at ``sample_rate`` (engine output is resampled with soxr).
    Existing files are kept, so a repeated call only writes what is missing;
    ``out_dir/transcripts.tsv`` (header ``path\ttext``, paths relative to ``out_dir``; the training
    split) and, when asked for, ``dev.tsv`` and ``test.tsv`` are rewritten every call. Installed
    engines among ``engines`` alternate by utterance; synthesis runs in a small thread pool.

    Returns:
        Paths of the ``num_utterances`` training WAV files, in utterance order.
    """
    for name, value in (("num_utterances", num_utterances), ("seed", seed), ("dev", dev), ("test", test)):
        if value < 0:
            raise ValueError(f"synthesize_corpus: {name} must be >= 0, got {value}")
    installed = available_engines(tuple(engines))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {"train": (num_utterances, out_dir, "transcripts.tsv"), "dev": (dev, out_dir / "dev", "dev.tsv"),
              "test": (test, out_dir / "test", "test.tsv")}
    plans = {split: [plan_utterance(i, seed, installed, split) for i in range(n)]
             for split, (n, _, _) in splits.items() if n or split == "train"}
    todo = [(utt, splits[split][1]) for split, plan in plans.items() for utt in plan
            if not (splits[split][1] / utt.name).exists()]
    if todo:
        for folder in {folder for _, folder in todo}:
            folder.mkdir(parents=True, exist_ok=True)
        workers = min(4, max(2, os.cpu_count() or 2))
        with tempfile.TemporaryDirectory(prefix="wavssl-synth-") as scratch, ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(_synthesize, utt, folder, Path(scratch), sample_rate) for utt, folder in todo]
            for future in futures:
                future.result()
    for split, plan in plans.items():
        folder, manifest = splits[split][1], splits[split][2]
        prefix = "" if folder == out_dir else f"{folder.name}/"
        rows = ["path\ttext"] + [f"{prefix}{utt.name}\t{utt.text}" for utt in plan]
        atomic_write_text(out_dir / manifest, "\n".join(rows) + "\n")
    return [out_dir / utt.name for utt in plans["train"]]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Generate a synthetic English speech corpus (espeak-ng / flite).")
    parser.add_argument("out_dir", type=Path, help="output folder (created if missing)")
    parser.add_argument("-n", "--num-utterances", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of: " + ", ".join(ENGINES))
    args = parser.parse_args()
    paths = synthesize_corpus(
        args.out_dir,
        num_utterances=args.num_utterances,
        sample_rate=args.sample_rate,
        seed=args.seed,
        engines=tuple(e.strip() for e in args.engines.split(",") if e.strip()),
    )
    seconds = sum(sf.info(p).duration for p in paths)
    print(f"{args.out_dir}: {len(paths)} utterances, {seconds / 60:.1f} min of speech, transcripts.tsv")
