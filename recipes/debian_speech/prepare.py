"""A corpus of real recorded speech built from Debian bookworm packages.

    python recipes/debian_speech/prepare.py --out DIR [--debs DEBS_DIR] [--jobs N]

Packages are fetched with ``apt-get download`` (never installed) into ``DIR/debs``, or taken from
``--debs`` (then nothing is downloaded; missing packages are logged and their sources skipped),
unpacked with ``dpkg-deb -x`` into a scratch folder, and every clip is converted to 16 kHz mono FLAC
(soundfile + soxr; ffmpeg for G.722 / GSM or whatever libsndfile cannot read) under ``DIR/audio``.
Labelled sources:

- ``festvox-ru``: one male speaker reading Russian in a studio (``etc/txt.done.data``);
- ``fillets-ng-data-cs`` + ``fillets-ng-data``: acted Czech game dialogue (``*dialogs_cs.lua``);
- ``asterisk-core-sounds-{en,es,fr,it,ru}``: telephone prompts, one professional voice per language,
  audio from the ``-g722`` packages (16 kHz) or, when only that is present, ``-wav`` (8 kHz).

Every labelled language gets train (10 min, 1 h), dev and test splits; dev splits are drawn after
train and test from what those left, so adding them changed no train or test membership. Other
packages with spoken words are used unlabelled. Outputs in DIR: TSV manifests per split
(``path<TAB>text<TAB>duration``; paths relative to DIR), ``unlabeled.tsv`` (``path<TAB>duration``,
short clips packed into chunks of up to 15 s), ``summary.json`` and ``licenses/``.
Conversions are cached per source in ``DIR/cache/catalog`` (keyed by the .deb names and sizes), so
a second run only rewrites the manifests.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf
import soxr
from wavssl_onnx import normalize_text
from wavssl_onnx.audio import write_audio
from wavssl_onnx.fileio import atomic_write_text

log = logging.getLogger("debian_speech")

SR = 16000
SEED = 20240601
CATALOG_VERSION = 2
REPO = Path(__file__).resolve().parents[2]
MIN_SECONDS = 0.1
PACK_SECONDS = 15.0
PACK_GAP = 0.2
CPS_K = 3.0  # chars/s outside median +- CPS_K * 1.4826 * MAD drops the label
ASTERISK_LANGS = ("en", "es", "fr", "it", "ru")
# (language, include regex, exclude regex) on the path inside the package.
UNLABELED_RULES: dict[str, tuple[str, str, str]] = {
    "asterisk-prompt-it-menardi-wav": ("it", r"^usr/share/asterisk/sounds/.*\.wav$", r"/silence/"),
    "asterisk-prompt-es-co": ("es", r"^usr/share/asterisk/sounds/.*\.gsm$", r"/silence/"),
    "asterisk-prompt-fr-armelle": ("fr", r"^usr/share/asterisk/sounds/.*\.gsm$", r"/silence/"),
    "klettres-data": ("multi", r"^usr/share/klettres/.*\.ogg$", ""),
    "ktuberling-data": ("multi", r"^usr/share/ktuberling/sounds/[^/]+/.*\.(ogg|wav|opus)$", ""),
    "gcin-voice": ("zh", r"\.ogg$", ""),
    "kajongg": ("multi", r"^usr/share/kajongg/voices/.*\.ogg$", ""),
    "qabcs-data": ("multi", r"^usr/share/qabcs/abcs/[^/]+/sounds/.*\.ogg$", r"/abcs/all/"),
    "codec2-examples": ("en", r"^usr/share/codec2/(wav|raw)/.*\.wav$", ""),
}  # (fillets-ng-data's own sound/*/en/ files are mostly sound effects: left out)
FFMPEG_CODECS = {".g722": ("g722", 16000), ".gsm": ("gsm", 8000)}
NOT_SPOKEN = set("%*#/\\@&<>=_$€[]{}|~^+")  # a transcript with these (or digits) keeps no label


# ----------------------------------------------------------------------------- parsers (pure)

def parse_txt_done_data(text: str) -> tuple[dict[str, str], list[str]]:
    """Festival ``txt.done.data`` -> ({utterance id: text}, malformed lines).

    Lines look like ``( ru_0001 "Text, with + stress marks." )``; ``\\"`` and ``\\\\`` are unescaped.
    """
    entries: dict[str, str] = {}
    bad: list[str] = []
    pattern = re.compile(r'^\(\s*(\S+)\s+"((?:[^"\\]|\\.)*)"\s*\)$')
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = pattern.match(line)
        if m is None:
            bad.append(f"line {number}: {line[:80]!r}")
            continue
        entries[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))
    return entries, bad


_LUA_STR = r'"((?:[^"\\]|\\.)*)"'
_DIALOG = re.compile(r"dialogId\(\s*" + _LUA_STR + r"\s*,\s*" + _LUA_STR + r"\s*,\s*" + _LUA_STR
                     + r"\s*\)(\s*dialogStr\(\s*" + _LUA_STR + r"\s*\))?")


def _lua_unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": " ", "t": " "}.get(m.group(1), m.group(1)), s)


def parse_fillets_dialogs(text: str) -> list[tuple[str, str, str, str | None]]:
    """Fish Fillets ``*dialogs_<lang>.lua`` -> [(dialog id, font, source text, translation)].

    Entries are ``dialogId("id", "font", "English text")`` optionally followed by
    ``dialogStr("translated text")``; translation is None when there is no ``dialogStr``.
    """
    out = []
    for m in _DIALOG.finditer(text):
        translation = _lua_unescape(m.group(5)) if m.group(4) is not None else None
        out.append((m.group(1), m.group(2), _lua_unescape(m.group(3)), translation))
    return out


def parse_asterisk_sounds(text: str) -> dict[str, str]:
    """Asterisk ``core-sounds-<lang>.txt`` -> {sound name: text}.

    Lines are ``name: text`` (names may contain ``/``, e.g. ``digits/1``); ``;`` starts a comment.
    A repeated ``name:`` prefix (``conf-adminmenu: conf-adminmenu: ...``) is removed. Empty texts
    are kept as ``""`` so a caller can count them.
    """
    entries: dict[str, str] = {}
    for line in text.lstrip("\ufeff").splitlines():
        line = line.strip().lstrip("\ufeff")
        if not line or line.startswith(";") or ":" not in line:
            continue
        name, _, body = line.partition(":")
        name, body = name.strip(), body.strip()
        if not name or " " in name:
            continue
        while body.startswith(name + ":"):
            body = body[len(name) + 1:].strip()
        entries[name] = body
    return entries


def is_non_speech(text: str) -> bool:
    """True for an annotation of a non-speech sound such as ``[ascending tones]`` or ``<beep>``."""
    t = text.strip()
    return any(t.startswith(a) and t.endswith(b) and a not in t[1:-1] for a, b in ("[]", "<>"))


def label_problem(raw: str | None, norm: str, language: str) -> str | None:
    """Why a transcript cannot label its clip (None when it can): missing, empty after
    normalisation, or holding digits / symbols whose spoken form the text does not give."""
    if raw is None:
        return "audio without transcript"
    if not norm:
        return "empty transcript"
    for ch in raw:
        if unicodedata.category(ch) == "Nd" or (ch in NOT_SPOKEN and not (ch == "+" and language == "ru")):
            return "digits or symbols in transcript"
    return None


DIGIT_WORDS = {"en": ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")}
_LONE_DIGIT = re.compile(r"(?<!\S)([1-9])(?=$|\s|[,.;:!?](?:\s|$))")


def spell_lone_digits(raw: str, language: str) -> str | None:
    """``raw`` with every lone digit 1-9 (a word of its own: ``press 1``, ``folder 5.``) written out
    (``press one``), or None when the language has no digit words or another digit remains
    (``28.8``, ``H.323``, ``3D``, ``press 0``: zero may be said "oh"). Prompts of this form
    (``Press 1 to ...``) say the digit as its name."""
    words = DIGIT_WORDS.get(language)
    if words is None:
        return None
    spelled = _LONE_DIGIT.sub(lambda m: words[int(m.group(1)) - 1], raw)
    return None if any(unicodedata.category(ch) == "Nd" for ch in spelled) else spelled


def rate_outliers(rates: Sequence[float], k: float = CPS_K) -> tuple[list[bool], dict[str, float]]:
    """Flags for values outside median +- k * 1.4826 * MAD (MAD at least 10 % of the median),
    and the band."""
    x = np.asarray(rates, dtype=np.float64)
    if len(x) == 0:
        return [], {}
    med = float(np.median(x))
    mad = max(float(np.median(np.abs(x - med))) * 1.4826, 0.1 * abs(med))  # floor: identical rates
    low, high = med - k * mad, med + k * mad
    return [bool(v < low or v > high) for v in x], {"median": med, "mad": mad, "low": low, "high": high}


# ----------------------------------------------------------------------------- splits (pure)

T = TypeVar("T")


def hold_out(items: Sequence[T], key: Callable[[T], str], text: Callable[[T], str],
             duration: Callable[[T], float], target: float, seed: int) -> tuple[list[T], list[T], list[T]]:
    """Hold out whole groups (``key``) in seeded random order until ``target`` seconds are reached.

    Returns (held, rest, removed): ``removed`` are items of ``rest`` whose text also occurs in
    ``held`` (taken out of ``rest`` so that no sentence is shared).
    """
    sizes: dict[str, float] = defaultdict(float)
    for it in items:
        sizes[key(it)] += duration(it)
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    chosen, total = set(), 0.0
    for g in order:
        if total >= target:
            break
        chosen.add(g)
        total += sizes[g]
    held = [it for it in items if key(it) in chosen]
    texts = {text(it) for it in held}
    rest = [it for it in items if key(it) not in chosen and text(it) not in texts]
    removed = [it for it in items if key(it) not in chosen and text(it) in texts]
    return held, rest, removed


def fill(items: Sequence[T], duration: Callable[[T], float], target: float) -> list[T]:
    """Items taken in order, skipping any that would overshoot ``target`` seconds."""
    out, total = [], 0.0
    for it in items:
        d = duration(it)
        if total + d <= target:
            out.append(it)
            total += d
        if total >= target - 0.5:
            break
    return out


def nested_subsets(items: Sequence[T], duration: Callable[[T], float], targets: Sequence[float],
                   seed: int) -> list[list[T]]:
    """Subsets of ``items`` near each target duration (largest first), each inside the previous
    one (the 10 min set lies in the 1 h set), drawn in one seeded random order."""
    order = list(items)
    random.Random(seed).shuffle(order)
    out = []
    for target in targets:
        order = fill(order, duration, target)
        out.append(order)
    return out


def pack(durations: Sequence[float], max_seconds: float = PACK_SECONDS, gap: float = PACK_GAP) -> list[list[int]]:
    """Consecutive indices grouped into chunks of at most ``max_seconds`` (clips plus ``gap``
    seconds between them); a clip longer than ``max_seconds`` is a chunk of its own."""
    chunks: list[list[int]] = []
    cur: list[int] = []
    total = 0.0
    for i, d in enumerate(durations):
        if cur and total + gap + d > max_seconds:
            chunks.append(cur)
            cur, total = [], 0.0
        total += d + (gap if cur else 0.0)
        cur.append(i)
    if cur:
        chunks.append(cur)
    return chunks


# ----------------------------------------------------------------------------- audio (workers)

def _ffmpeg_decode(path: str, fmt: str | None) -> tuple[np.ndarray, int]:
    """Decode with ffmpeg to float32 mono at the file's own rate."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg not found")
    if fmt is not None:
        rate = dict(FFMPEG_CODECS.values())[fmt]
    else:
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                                "stream=sample_rate", "-of", "csv=p=0", path],
                               check=False, capture_output=True, text=True, timeout=60)
        try:
            rate = int(probe.stdout.strip().splitlines()[0])
        except (ValueError, IndexError):
            raise RuntimeError(f"ffprobe: {probe.stderr.strip()[-200:] or 'no audio stream'}") from None
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    cmd += (["-f", fmt] if fmt else []) + ["-i", path, "-f", "f32le", "-ac", "1", "-ar", str(rate), "-"]
    proc = subprocess.run(cmd, check=False, capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg: {proc.stderr.decode(errors='replace').strip()[-200:]}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy(), rate


def decode(path: str) -> tuple[np.ndarray, int]:
    """(mono float32 samples, native sample rate); soundfile first, ffmpeg for G.722 / GSM or as
    a fallback. Raises on unreadable audio."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in FFMPEG_CODECS:
        return _ffmpeg_decode(path, FFMPEG_CODECS[suffix][0])
    try:
        x, rate = sf.read(path, dtype="float32", always_2d=True)
        return x.mean(axis=1), int(rate)
    except Exception as err:  # noqa: BLE001 - libsndfile raises several types
        try:
            return _ffmpeg_decode(path, None)
        except Exception as err2:  # noqa: BLE001
            raise RuntimeError(f"soundfile: {err}; {err2}") from None


def convert_file(job: tuple[str, str]) -> tuple[float, int, str] | str:
    """Convert ``src`` to 16 kHz mono 16-bit FLAC at ``dst``; (duration, native rate, sha1 of the
    source bytes), or the reason it was skipped."""
    src, dst = job
    try:
        digest = hashlib.sha1(Path(src).read_bytes()).hexdigest()
        x, rate = decode(src)
    except Exception as err:  # noqa: BLE001
        return f"unreadable audio ({str(err)[:200]})"
    if rate <= 0 or x.size == 0:
        return "unreadable audio (no samples decoded)"
    if not np.isfinite(x).all():
        return "unreadable audio (non-finite samples)"
    if rate != SR:
        x = soxr.resample(x, rate, SR, quality="HQ")
    if len(x) < MIN_SECONDS * SR:
        return f"too short ({len(x) / SR:.3f} s)"
    if float(np.abs(x).max()) < 1e-4:
        return "silent"
    write_audio(dst, np.clip(x, -1.0, 1.0), SR, format="FLAC")
    return len(x) / SR, rate, digest


def write_chunk(job: tuple[str, list[str]]) -> float:
    """Concatenate FLAC clips with PACK_GAP seconds of silence into ``dst``; its duration."""
    dst, parts = job
    gap = np.zeros(int(PACK_GAP * SR), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for p in parts:
        if pieces:
            pieces.append(gap)
        pieces.append(sf.read(p, dtype="float32")[0])
    x = np.concatenate(pieces)
    write_audio(dst, x, SR, format="FLAC")
    return len(x) / SR


# ----------------------------------------------------------------------------- sources

@dataclass
class Clip:
    """One converted clip. ``audio`` is relative to the output folder; ``text`` the raw transcript."""

    source: str
    key: str
    file: str  # package:path, for messages
    audio: str
    lang: str
    speaker: str
    group: str
    text: str | None
    duration: float = 0.0
    rate: int = 0
    digest: str = ""


Plan = tuple[list[tuple[Clip, Path]], list[tuple[str, str]]]  # (clip, source file) pairs, (reason, file) skips


@dataclass(frozen=True)
class Source:
    """A corpus: the package holding its audio (first of the alternatives present), optional
    transcript packages, and the function listing its clips from their unpacked trees."""

    name: str
    lang: str
    audio_pkgs: tuple[str, ...]
    text_pkgs: tuple[str, ...]
    plan: Callable[[Source, Path, list[Path], str], Plan]


def _safe(rel: str) -> str:
    """ASCII file name for a package path (other characters become ``uXXXX``), suffix ``.flac``."""
    stem = os.path.splitext(rel)[0]
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")
    return "".join(c if c in ok else f"u{ord(c):04x}" for c in stem) + ".flac"


def _files(root: Path, base: str) -> list[tuple[str, Path]]:
    """(path relative to ``root``, path) of the regular files under ``root/base``; symlinks and
    symlinked folders are not followed (packages link duplicate folders)."""
    out = []
    for dirpath, _dirs, names in os.walk(root / base):
        for n in names:
            p = Path(dirpath) / n
            if not p.is_symlink() and p.is_file():
                out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def plan_festvox(src: Source, root: Path, text_roots: list[Path], pkg: str) -> Plan:
    """festvox-ru: ``wav/*.wav`` next to ``etc/txt.done.data`` in each voice folder."""
    clips: list[tuple[Clip, Path]] = []
    skipped: list[tuple[str, str]] = []
    for data in sorted((root / "usr/share/festival/voices").rglob("txt.done.data")):
        voice = data.parent.parent
        texts, bad = parse_txt_done_data(data.read_text(encoding="utf-8", errors="replace"))
        skipped += [("malformed transcript line", f"{pkg}:{data.relative_to(root)} {b}") for b in bad]
        wavs = {p.stem: (rel, p) for rel, p in _files(root, voice.relative_to(root).as_posix() + "/wav")
                if p.suffix.lower() == ".wav"}
        for key in sorted(set(texts) - set(wavs)):
            skipped.append(("transcript without audio", f"{pkg}:{data.relative_to(root)} {key}"))
        for key, (rel, p) in sorted(wavs.items()):
            clips.append((Clip(src.name, key, f"{pkg}:{rel}", f"audio/{src.name}/{_safe(key)}", src.lang,
                               voice.name, "", texts.get(key)), p))
    return clips, skipped


def plan_fillets(src: Source, root: Path, text_roots: list[Path], pkg: str) -> Plan:
    """Fish Fillets Czech voices: ``sound/<level>/cs/<id>.ogg``, text from ``dialogStr`` in
    ``script/<level>/*dialogs_cs.lua`` (looked up by level, then by a globally unique id)."""
    game = "usr/share/games/fillets-ng"
    by_level: dict[tuple[str, str], tuple[str, str]] = {}
    by_id: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for troot in text_roots:
        for lua in sorted((troot / game / "script").rglob("*dialogs_cs.lua")):
            level = lua.parent.relative_to(troot / game / "script").as_posix()
            for did, font, _en, cs in parse_fillets_dialogs(lua.read_text(encoding="utf-8", errors="replace")):
                if cs is not None and cs.strip():
                    by_level[(level, did)] = (font, cs)
                    by_id[did].add((font, cs))
    clips, skipped, used = [], [], set()
    for rel, p in _files(root, game + "/sound"):
        parts = rel.split("/")
        if p.suffix.lower() != ".ogg" or len(parts) < 3 or parts[-2] != "cs":
            continue
        level = "/".join(parts[5:-2])
        did = p.stem
        hit = by_level.get((level, did)) or by_level.get((level.split("/")[0], did))
        if hit is None and len(by_id.get(did, ())) == 1:
            hit = next(iter(by_id[did]))
        font, text = hit if hit else ("", None)
        used.add(did)
        clips.append((Clip(src.name, f"{level}/{did}", f"{pkg}:{rel}", f"audio/{src.name}/{_safe(level + '/' + did)}",
                           src.lang, font or "unknown", level, text), p))
    if clips:  # without the audio package every transcript would count as missing audio
        for level, did in sorted(by_level):
            if did not in used:
                skipped.append(("transcript without audio", f"fillets-ng-data:script/{level} {did}"))
    return clips, skipped


def plan_asterisk(src: Source, root: Path, text_roots: list[Path], pkg: str) -> Plan:
    """Asterisk core sounds: ``sounds/<voice>/<name>.{g722,wav}``, text from
    ``core-sounds-<lang>.txt[.gz]`` in any of the packages; ``silence/`` and ``[tones]`` are
    left out as non-speech."""
    texts: dict[str, str] = {}
    for r in [root, *text_roots]:
        for f in sorted((r / "usr/share/doc").glob(f"*/core-sounds-{src.lang}.txt*")):
            raw = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
            texts.update(parse_asterisk_sounds(raw.decode("utf-8", errors="replace")))
    clips, skipped, used = [], [], set()
    for rel, p in _files(root, "usr/share/asterisk/sounds"):
        parts = rel.split("/")
        if p.suffix.lower() not in (".g722", ".wav", ".gsm") or len(parts) < 6:
            continue
        voice, name = parts[4], os.path.splitext("/".join(parts[5:]))[0]
        text = texts.get(name)
        if name.startswith("silence/") or (text is not None and is_non_speech(text)):
            skipped.append(("non-speech", f"{pkg}:{rel}"))
            used.add(name)
            continue
        used.add(name)
        clips.append((Clip(src.name, name, f"{pkg}:{rel}", f"audio/{src.name}/{_safe(name)}", src.lang,
                           voice, name.rpartition("/")[0], text), p))
    if clips:
        skipped += [("transcript without audio", f"core-sounds-{src.lang}.txt {n}")
                    for n in sorted(set(texts) - used) if texts[n] and not is_non_speech(texts[n])]
    return clips, skipped


def plan_unlabeled(src: Source, root: Path, text_roots: list[Path], pkg: str) -> Plan:
    """Audio files of an unlabelled package chosen by UNLABELED_RULES."""
    _lang, include, exclude = UNLABELED_RULES[pkg]
    clips = []
    for rel, p in _files(root, "usr/share"):
        if re.search(include, rel) and not (exclude and re.search(exclude, rel)):
            clips.append((Clip(src.name, rel, f"{pkg}:{rel}", f"audio/{src.name}/{_safe(rel)}", src.lang,
                               "", os.path.dirname(rel), None), p))
    return clips, []


def sources() -> list[Source]:
    out = [Source("festvox-ru", "ru", ("festvox-ru",), (), plan_festvox),
           Source("fillets-cs", "cs", ("fillets-ng-data-cs",), ("fillets-ng-data",), plan_fillets)]
    out += [Source(f"asterisk-{lang}", lang, (f"asterisk-core-sounds-{lang}-g722", f"asterisk-core-sounds-{lang}-wav"),
                   (f"asterisk-core-sounds-{lang}",), plan_asterisk) for lang in ASTERISK_LANGS]
    out += [Source(pkg, rule[0], (pkg,), (), plan_unlabeled) for pkg, rule in UNLABELED_RULES.items()]
    return out


def wanted_packages() -> list[str]:
    """Packages to download: audio (first alternative) and transcript packages of every source."""
    names: list[str] = []
    for s in sources():
        for p in (s.audio_pkgs[0], *s.text_pkgs):
            if p not in names:
                names.append(p)
    return names


# ----------------------------------------------------------------------------- packages

def find_debs(debs: Path) -> dict[str, Path]:
    """{package name: newest .deb file} in ``debs``."""
    found: dict[str, Path] = {}
    for f in sorted(debs.glob("*.deb")):
        found[f.name.split("_", 1)[0]] = f
    return found


def download(names: Sequence[str], debs: Path) -> None:
    """``apt-get download`` the packages not yet in ``debs``; failures are logged, not fatal."""
    debs.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if n not in find_debs(debs)]
    if not missing:
        return
    log.info("downloading %d packages into %s", len(missing), debs)
    cmd = ["apt-get", "download", "-q"]
    if subprocess.run(cmd + missing, cwd=debs, check=False, capture_output=True).returncode == 0:
        return
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
    for n in missing:
        proc = subprocess.run(cmd + [n], cwd=debs, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            log.warning("cannot download %s: %s", n, proc.stderr.strip().splitlines()[-1:] or "?")


class Unpacker:
    """Extracts .deb files on first use into a scratch folder (removed by ``cleanup``)."""

    def __init__(self, debs: Mapping[str, Path], scratch: Path) -> None:
        self.debs, self.scratch = debs, scratch
        self.done: dict[str, Path] = {}

    def root(self, pkg: str) -> Path:
        if pkg not in self.done:
            target = self.scratch / pkg
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(self.debs[pkg]), str(target)], check=True,
                           capture_output=True, text=True)
            self.done[pkg] = target
        return self.done[pkg]

    def cleanup(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


# ----------------------------------------------------------------------------- pipeline

def build_catalog(src: Source, debs: Mapping[str, Path], unpacker: Unpacker, out: Path,
                  pool: Callable[[], cf.Executor]) -> dict | None:
    """Converted clips and skipped files of ``src``, from the cache when its .debs are unchanged."""
    audio_pkg = next((p for p in src.audio_pkgs if p in debs), None)
    if audio_pkg is None:
        log.info("%s: no package among %s, skipped", src.name, ", ".join(src.audio_pkgs))
        return None
    text_pkgs = [p for p in src.text_pkgs if p in debs]
    for p in src.text_pkgs:
        if p not in debs:
            log.warning("%s: transcript package %s missing, clips stay unlabelled", src.name, p)
    stamp = {"version": CATALOG_VERSION, "debs": [[debs[p].name, debs[p].stat().st_size]
                                                  for p in [audio_pkg, *text_pkgs]]}
    cache = out / "cache" / "catalog" / f"{src.name}.json"
    if cache.is_file():
        cat = json.loads(cache.read_text(encoding="utf-8"))
        if cat["stamp"] == stamp and all((out / c["audio"]).is_file() for c in cat["clips"]):
            return cat
    t0 = time.time()
    try:
        root = unpacker.root(audio_pkg)
        text_roots = [unpacker.root(p) for p in text_pkgs]
    except subprocess.CalledProcessError as err:
        log.warning("%s: cannot unpack %s (%s), skipped", src.name, err.cmd[2], err.stderr or err)
        return None
    planned, skipped = src.plan(src, root, text_roots, audio_pkg)
    shutil.rmtree(out / "audio" / src.name, ignore_errors=True)
    jobs = [(str(p), str(out / c.audio)) for c, p in planned]
    clips = []
    for (clip, _p), res in zip(planned, pool().map(convert_file, jobs, chunksize=8)):
        if isinstance(res, str):
            log.warning("skip %s: %s", clip.file, res)
            skipped.append((res.split(" (")[0], f"{clip.file}: {res}"))
        else:
            clip.duration, clip.rate, clip.digest = res
            clips.append(clip)
    cat = {"stamp": stamp, "package": audio_pkg, "clips": [asdict(c) for c in clips],
           "skipped": [list(s) for s in skipped]}
    atomic_write_text(cache, json.dumps(cat, ensure_ascii=False))
    log.info("%s: %d clips (%.2f h), %d skipped, %.0f s", src.name, len(clips),
             sum(c.duration for c in clips) / 3600, len(skipped), time.time() - t0)
    return cat


@dataclass
class Labeled:
    """A clip with a usable transcript, normalised."""

    clip: Clip
    norm: str


def make_splits(clips: Sequence[Clip], report: dict) -> dict[str, list[Labeled]]:
    """Labelled splits from the converted clips; label drops are counted in ``report``."""
    usable: dict[str, list[Labeled]] = defaultdict(list)
    bands: dict[str, dict[str, float]] = {}
    for source in sorted({c.source for c in clips}):
        group = [c for c in clips if c.source == source]
        if not any(c.text is not None for c in group):
            continue
        cand = []
        for c in group:
            norm = normalize_text(c.text, c.lang) if c.text is not None else ""
            why = label_problem(c.text, norm, c.lang)
            if why:
                report["label_dropped"][source][why] += 1
            else:
                cand.append(Labeled(c, norm))
        flags, band = rate_outliers([len(u.norm.replace(" ", "")) / u.clip.duration for u in cand])
        bands[source] = band
        report["cps_filter"][source] = {**{k: round(v, 2) for k, v in band.items()}, "k": CPS_K,
                                        "dropped": int(sum(flags))}
        if any(flags):
            report["label_dropped"][source]["chars/s outlier"] += int(sum(flags))
        usable[source] = [u for u, bad in zip(cand, flags) if not bad]

    def dur(u: Labeled) -> float:
        return u.clip.duration

    def txt(u: Labeled) -> str:
        return u.norm

    splits: dict[str, list[Labeled]] = {}
    ru = usable.get("festvox-ru", [])
    total = sum(map(dur, ru))
    splits["ru_test"], rest, _ = hold_out(ru, txt, txt, dur, min(1200.0, 0.2 * total), SEED)
    splits["ru_dev"], rest, _ = hold_out(rest, txt, txt, dur, min(600.0, 0.1 * total), SEED + 1)
    splits["ru_train_1h"], splits["ru_train_10min"] = nested_subsets(rest, dur, (3600.0, 600.0), SEED)
    splits["ru_test_otherspk"] = list(usable.get("asterisk-ru", []))

    cs = usable.get("fillets-cs", [])
    total = sum(map(dur, cs))
    splits["cs_test"], rest, removed = hold_out(cs, lambda u: u.clip.group, txt, dur, min(1200.0, 0.2 * total), SEED)
    report["label_dropped"]["fillets-cs"]["train sentence also in cs_test"] += len(removed)
    splits["cs_train_1h"], splits["cs_train_10min"] = nested_subsets(rest, dur, (3600.0, 600.0), SEED)
    # cs_dev: drawn after train and test, from what neither took (their membership is unchanged);
    # no sentence shared with either. Every level with unused clips also has training clips, so
    # cs_dev is sentence-disjoint from training but not level-disjoint (cs_test is both).
    spare = unused(rest, [splits["cs_train_1h"], splits["cs_test"]])
    splits["cs_dev"], _, _ = hold_out(spare, txt, txt, dur, min(600.0, sum(map(dur, spare))), SEED + 1)

    en = usable.get("asterisk-en", [])
    total = sum(map(dur, en))
    # the 10 min train split comes first: the test set gets what is left beyond it (at most 10 min)
    splits["en_test"], rest, _ = hold_out(en, txt, txt, dur, min(600.0, max(0.3 * total, total - 630.0)), SEED)
    (splits["en_train_10min"],) = nested_subsets(rest, dur, (600.0,), SEED)
    # en_dev: the prompts neither split took (a few), plus prompts whose label was dropped only for
    # lone digits (``Press 1 to ...``), digits spelled out; no prompt text shared with train or test
    held = [splits["en_train_10min"], splits["en_test"]]
    spelled = relabel_lone_digits([c for c in clips if c.source == "asterisk-en"], bands.get("asterisk-en"))
    splits["en_dev"] = unused([*rest, *spelled], held)
    report["dev_relabelled"]["asterisk-en"] = sum(u in spelled for u in splits["en_dev"])
    return {name: splits[name] for name in SPLIT_ORDER}


def unused(pool: Sequence[Labeled], taken: Sequence[Sequence[Labeled]]) -> list[Labeled]:
    """Items of ``pool`` in none of the ``taken`` splits whose text none of them holds either."""
    keys = {(u.clip.source, u.clip.key) for split in taken for u in split}
    texts = {u.norm for split in taken for u in split}
    return [u for u in pool if (u.clip.source, u.clip.key) not in keys and u.norm not in texts]


def relabel_lone_digits(clips: Sequence[Clip], band: Mapping[str, float] | None) -> list[Labeled]:
    """Clips whose transcript was refused only for lone digits 1-9 (:func:`spell_lone_digits`),
    relabelled with the digits spelled out, if their chars/s lie inside the source's ``band``."""
    out = []
    for c in clips:
        if c.text is None or label_problem(c.text, normalize_text(c.text, c.lang), c.lang) is None:
            continue
        spelled = spell_lone_digits(c.text, c.lang)
        if spelled is None:
            continue
        norm = normalize_text(spelled, c.lang)
        if label_problem(spelled, norm, c.lang) is not None:
            continue
        rate = len(norm.replace(" ", "")) / c.duration
        if band and not band["low"] <= rate <= band["high"]:
            continue
        out.append(Labeled(c, norm))
    return out


def oov_rate(texts: Iterable[str], train_texts: Iterable[str]) -> float:
    """Fraction of the running words of ``texts`` that never occur in ``train_texts``."""
    known = {w for t in train_texts for w in t.split()}
    words = [w for t in texts for w in t.split()]
    return sum(w not in known for w in words) / max(len(words), 1)


SPLIT_ORDER = ("ru_train_10min", "ru_train_1h", "ru_dev", "ru_test", "ru_test_otherspk",
               "cs_train_10min", "cs_train_1h", "cs_dev", "cs_test", "en_train_10min", "en_dev", "en_test")
TARGETS = {"ru_train_1h": 3600.0, "ru_train_10min": 600.0, "cs_train_1h": 3600.0, "cs_train_10min": 600.0,
           "en_train_10min": 600.0}
HELD_OUT = ("ru_test", "ru_dev", "ru_test_otherspk", "cs_test", "cs_dev", "en_test", "en_dev")
DEV_TEST = {"ru_dev": "ru_train_1h", "ru_test": "ru_train_1h", "ru_test_otherspk": "ru_train_1h",
            "cs_dev": "cs_train_1h", "cs_test": "cs_train_1h", "en_dev": "en_train_10min", "en_test": "en_train_10min"}
"""Held-out split -> the training split its out-of-vocabulary rate is measured against."""
TEST_ONLY_SOURCES = {"asterisk-ru"}  # the ru_test_otherspk speaker stays unseen


def unlabeled_clips(clips: Sequence[Clip], splits: Mapping[str, list[Labeled]], report: dict) -> list[Clip]:
    """Every speech clip not in a test or dev split, nor from a held-out level or speaker, nor
    identical (same source bytes) to one of those or to a clip already taken."""
    held = [u.clip for name in HELD_OUT for u in splits.get(name, [])]
    held_keys = {(c.source, c.key) for c in held}
    test_levels = {u.clip.group for u in splits.get("cs_test", [])}
    seen = {c.digest for c in held}
    out = []
    for c in sorted(clips, key=lambda c: (c.source, c.key)):
        if (c.source, c.key) in held_keys or c.source in TEST_ONLY_SOURCES:
            continue
        if c.source == "fillets-cs" and c.group in test_levels:
            continue
        if c.digest in seen:
            report["unlabeled_duplicates"][c.source] += 1
            continue
        seen.add(c.digest)
        out.append(c)
    return out


def write_unlabeled(out: Path, clips: Sequence[Clip],
                    pool: Callable[[], cf.Executor]) -> list[tuple[str, float, Clip]]:
    """Pack clips of the same source and folder into chunks under ``out/unlabeled``; returns
    (chunk path relative to ``out``, duration, first clip) per chunk. Existing chunks are reused."""
    by_group: dict[tuple[str, str], list[Clip]] = defaultdict(list)
    for c in clips:
        by_group[(c.source, c.group)].append(c)
    plan: list[tuple[str, list[Clip]]] = []
    for (source, group), members in sorted(by_group.items()):
        for n, idx in enumerate(pack([c.duration for c in members])):
            parts = [members[i] for i in idx]
            h = hashlib.sha1("\n".join(c.audio + c.digest for c in parts).encode()).hexdigest()[:10]
            name = _safe(group.replace("/", "_") or "all").removesuffix(".flac")
            plan.append((f"unlabeled/{source}/{name}-{n:04d}-{h}.flac", parts))
    todo = [(str(out / rel), [str(out / c.audio) for c in parts]) for rel, parts in plan if not (out / rel).is_file()]
    if todo:
        log.info("packing %d unlabelled chunks", len(todo))
        list(pool().map(write_chunk, todo, chunksize=8))
    keep = {rel for rel, _ in plan}
    for f in (out / "unlabeled").rglob("*.flac"):
        if f.relative_to(out).as_posix() not in keep:
            f.unlink()
    return [(rel, sum(c.duration for c in parts) + PACK_GAP * (len(parts) - 1), parts[0]) for rel, parts in plan]


def write_tsv(path: Path, header: str, rows: Iterable[str]) -> None:
    atomic_write_text(path, "\n".join([header, *sorted(rows)]) + "\n")


def describe(items: Sequence[Clip], seconds: float) -> dict:
    return {"count": len(items), "hours": round(seconds / 3600, 3), "minutes": round(seconds / 60, 2),
            "sample_rates_of_origin": dict(Counter(c.rate for c in items).most_common()),
            "speakers": dict(Counter(c.speaker for c in items if c.speaker).most_common()),
            "sources": dict(Counter(c.source for c in items).most_common())}


def prepare(out: Path, debs: Path | None, jobs: int) -> dict:
    """Run everything; returns the summary (also written to ``out/summary.json``)."""
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    debs_dir = debs if debs is not None else out / "debs"
    if debs is None:
        download(wanted_packages(), debs_dir)
    found = find_debs(debs_dir)
    missing = [p for p in wanted_packages() if p not in found
               and not any(p in s.audio_pkgs and any(a in found for a in s.audio_pkgs) for s in sources())]
    for p in missing:
        log.warning("package %s not available, skipped", p)
    executor: list[cf.Executor] = []

    def pool() -> cf.Executor:
        if not executor:
            executor.append(cf.ProcessPoolExecutor(max_workers=max(1, jobs)))
        return executor[0]

    unpacker = Unpacker(found, out / "cache" / "extract")
    report: dict = {"skipped": defaultdict(Counter), "skipped_examples": defaultdict(dict),
                    "label_dropped": defaultdict(Counter), "cps_filter": {}, "unlabeled_duplicates": Counter(),
                    "dev_relabelled": {}}
    clips: list[Clip] = []
    used_pkgs: list[str] = []
    skipped_sources: list[str] = []
    try:
        for src in sources():
            cat = build_catalog(src, found, unpacker, out, pool)
            if cat is None:
                skipped_sources.append(src.name)
                continue
            used_pkgs.append(cat["package"])
            clips += [Clip(**c) for c in cat["clips"]]
            for reason, file in cat["skipped"]:
                report["skipped"][src.name][reason] += 1
                report["skipped_examples"][src.name].setdefault(reason, [])
                if len(report["skipped_examples"][src.name][reason]) < 5:
                    report["skipped_examples"][src.name][reason].append(file)
        copy_licenses(found, unpacker, out / "licenses")
        names = {s.name for s in sources()}
        for old in [*(out / "audio").glob("*"), *(out / "unlabeled").glob("*"), *(out / "cache/catalog").glob("*")]:
            if old.name.removesuffix(".json") not in names:  # left by an older version of this script
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        splits = make_splits(clips, report)
        summary: dict = {"splits": {}}
        for name, items in splits.items():
            write_tsv(out / f"{name}.tsv", "path\ttext\tduration",
                      (f"{u.clip.audio}\t{u.norm}\t{u.clip.duration:.3f}" for u in items))
            summary["splits"][name] = describe([u.clip for u in items], sum(u.clip.duration for u in items))
        summary["splits"]["ru_test_otherspk"]["note"] = (
            "asterisk-core-sounds-ru (another speaker, telephone prompts); "
            + ("16 kHz G.722" if "asterisk-core-sounds-ru-g722" in used_pkgs else "8 kHz audio upsampled to 16 kHz"))
        for name, train in DEV_TEST.items():
            if splits[name] and splits[train]:
                summary["splits"][name]["oov_words_vs_" + train] = round(
                    oov_rate((u.norm for u in splits[name]), (u.norm for u in splits[train])), 4)
        for name, target in TARGETS.items():
            if summary["splits"][name]["minutes"] < 0.95 * target / 60:
                summary["splits"][name]["note"] = f"short of the {target / 60:.0f} min target: all that was left"
        members = unlabeled_clips(clips, splits, report)
        chunks = write_unlabeled(out, members, pool)
        write_tsv(out / "unlabeled.tsv", "path\tduration", (f"{rel}\t{d:.3f}" for rel, d, _ in chunks))
        summary["splits"]["unlabeled"] = describe(members, sum(d for _, d, _ in chunks))
        summary["splits"]["unlabeled"].update(clips=len(members), count=len(chunks), hours_by_source={
            s: round(sum(c.duration for c in members if c.source == s) / 3600, 3)
            for s in sorted({c.source for c in members})})
    finally:
        unpacker.cleanup()
        for e in executor:
            e.shutdown()
    summary.update(packages={"used": sorted(used_pkgs), "missing": missing, "sources_skipped": skipped_sources,
                             "debs": str(debs_dir)},
                   skipped={k: dict(v) for k, v in report["skipped"].items()},
                   skipped_examples=dict(report["skipped_examples"]),
                   label_dropped={k: dict(v) for k, v in report["label_dropped"].items()},
                   cps_filter=report["cps_filter"], unlabeled_duplicates=dict(report["unlabeled_duplicates"]),
                   dev_relabelled_lone_digits=report["dev_relabelled"],
                   seed=SEED, wall_time_s=round(time.time() - t0, 1))
    atomic_write_text(out / "summary.json", json.dumps(summary, ensure_ascii=False, indent=1) + "\n")
    return summary


def copy_licenses(debs: Mapping[str, Path], unpacker: Unpacker, dest: Path) -> None:
    """``usr/share/doc/<pkg>/copyright`` of every package used, as ``dest/<pkg>.copyright``."""
    dest.mkdir(parents=True, exist_ok=True)
    for pkg in unpacker.done:
        f = unpacker.root(pkg) / "usr/share/doc" / pkg / "copyright"
        if f.is_file() and not f.is_symlink():
            shutil.copyfile(f, dest / f"{pkg}.copyright")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "data" / "debian_speech")
    ap.add_argument("--debs", type=Path, default=None,
                    help="folder of .deb files to use instead of downloading (default: download into OUT/debs)")
    ap.add_argument("--jobs", type=int, default=2, help="conversion processes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    summary = prepare(args.out.resolve(), args.debs.resolve() if args.debs else None, args.jobs)
    for name, s in summary["splits"].items():
        log.info("%-18s %6d items %8.2f min", name, s["count"], s["minutes"])
    log.info("done in %.1f s; summary in %s", summary["wall_time_s"], args.out / "summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
