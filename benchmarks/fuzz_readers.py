"""Fuzz the readers of user files with hypothesis, for a bounded number of examples per target.

The contract checked: a reader given any file either returns a result or raises its documented
error type (``AudioError``, ``ModelDirError``, ``SeriesError`` (``SensorDataError`` is the same
class)) with a one-line message naming the file. Any
other exception (IndexError, KeyError, UnicodeDecodeError, OverflowError, MemoryError, ...) is a
crash, and so is a documented error whose message does not name the file or spans several lines.
``normalize_text`` must return a str for any str and be idempotent for every supported language
and for "" / None (any script).

Not part of the default test run: the crashes it found are fixed and kept as regression tests in
``tests/test_faults.py``.

    python benchmarks/fuzz_readers.py                      # 300 examples per target
    python benchmarks/fuzz_readers.py --examples 2000 --target sensor_ts
    python benchmarks/fuzz_readers.py --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import ROOT, append_result, cpu_flags, cpu_name, git_commit  # noqa: E402

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as seed_  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fuzz_readers.jsonl"
MEMORY_LIMIT = 6 << 30  # address space: an absurd allocation fails as MemoryError instead of swapping


@dataclass
class Crash:
    kind: str
    where: str
    example: Any
    message: str
    count: int = 0


@dataclass
class Target:
    name: str
    reader: str
    strategy: Any
    run: Callable[[Any, Path], None]
    """Writes the example under the folder, calls the reader; raises ``Bad`` on a contract breach."""
    examples: int = 0
    crashes: dict[tuple[str, str], Crash] = field(default_factory=dict)


class Bad(Exception):
    """A contract breach: kind, where, message."""


def _expect(call: Callable[[], Any], allowed: tuple[type[BaseException], ...], path: Path) -> None:
    """Run ``call``; an ``allowed`` error must be one line naming ``path``; anything else is a crash."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except allowed as e:
        message = str(e)
        if "\n" in message:
            raise Bad(type(e).__name__ + " (multi-line message)", "", message) from e
        if path.name not in message:
            raise Bad(type(e).__name__ + " (message does not name the file)", "", message) from e
    except Exception as e:  # noqa: BLE001 - every other type is what the fuzzing looks for
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if "/wavssl" in f.filename and "fuzz_readers" not in f.filename]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        raise Bad(type(e).__name__, where, str(e)[:200]) from e


# ------------------------------------------------------------------------------------------ strategies

def _lines(alphabet: str, pieces: list[str], max_lines: int = 8) -> Any:
    """Text made of lines, each a mix of grammar pieces and random characters."""
    atom = st.one_of(st.sampled_from(pieces), st.text(alphabet, max_size=6))
    line = st.lists(atom, max_size=8).map("".join)
    return st.lists(line, max_size=max_lines).map("\n".join)


def _as_bytes(text_strategy: Any) -> Any:
    """Mostly UTF-8 text, sometimes raw bytes or text in another encoding."""
    return st.one_of(
        text_strategy.map(lambda s: s.encode("utf-8")),
        text_strategy.map(lambda s: b"\xef\xbb\xbf" + s.encode("utf-8")),
        text_strategy.map(lambda s: s.encode("latin-1", "replace")),
        st.binary(max_size=64),
    )


ANY = "\t ,:;()@#%\"'\\\r\x00é\u00a0\ufeff0123456789.-+eEnaN?xyzPt"
MANIFEST = _as_bytes(_lines(ANY, ["path", "text", "PATH", "\t", "a.wav", "../x.flac", "/", "\"", "hello"]))
TS_PIECES = ["@problemName x", "@timeStamps true", "@timeStamps false", "@classLabel true a b",
             "@classLabel false", "@classLabel true", "@targetLabel true", "@univariate true",
             "@dimensions 2", "@dimensions ²", "@dimensions 0", "@data", ":", ",", "(", ")", "1.5", "-2",
             "?", "nan", "inf", "1e400", "(2020-01-01 00:00:00,1.0)", "(1,2)", "a", "b"]
NUMBER = st.one_of(st.sampled_from(["1", "-2.5", "?", "nan", "NaN", "inf", "1e400", "", " 3 ", "x", "1e9", "1e308"]),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
TS_HEADER = st.lists(st.sampled_from([p for p in TS_PIECES if p.startswith("@") and p != "@data"]), max_size=4)
TS_ROW = st.lists(st.lists(NUMBER, max_size=4).map(",".join), min_size=1, max_size=3).map(":".join)
TS_STRUCTURED = st.tuples(TS_HEADER, TS_ROW.flatmap(lambda r: st.sampled_from([r, r + ":a", r + ":b", "(1," + r + ")"])),
                          st.lists(TS_ROW, max_size=3)).map(lambda t: "\n".join([*t[0], "@data", t[1], *t[2]]))
SENSOR_TS = st.one_of(_as_bytes(_lines(ANY, TS_PIECES, 10)), _as_bytes(TS_STRUCTURED))
CSV_PIECES = ["time", "t", "x", "y", "label", ",", "\t", "0", "1", "0.5", "1e9", "1e300", "-1", "nan", "?",
              "inf", "", "\"", "2.5e-3"]
CSV_STRUCTURED = st.tuples(
    st.sampled_from(["", "time,x\n", "t,x,y\n", "x,y\n", "time\n", "seconds,x\n", "time,time\n"]),
    st.integers(1, 3).flatmap(lambda w: st.lists(st.lists(NUMBER, min_size=w, max_size=w).map(",".join),
                                                  min_size=1, max_size=5)),
).map(lambda t: t[0] + "\n".join(t[1]) + "\n")
SENSOR_CSV = st.one_of(_as_bytes(_lines(ANY, CSV_PIECES, 8)), _as_bytes(CSV_STRUCTURED))

JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([0, 1, -1, 16000, 320])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
    | st.sampled_from(["fp32", "model.onnx", "../x", "/abs", "a\\b", "ctc", "classify", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
VALID_INFO: dict[str, Any] = {
    "format": "wavssl-onnx", "format_version": 1, "kind": "ctc", "sample_rate": 16000, "frame_shift": 0.02,
    "frame_shift_samples": 320, "min_samples": 400, "in_channels": 1, "normalize_audio": False,
    "inputs": ["audio"], "outputs": ["logits"], "files": {"fp32": "model.onnx"},
    "vocabulary": {"tokens": ["<pad>", "<unk>", "|", "a"], "blank": "<pad>", "unk": "<unk>", "word_delimiter": "|"},
    "blank_id": 0, "delimiter_id": 2, "language": "", "class_names": ["a", "b"], "export": {},
}
STREAMING = {"chunk_frames": 8, "left_chunks": 2, "lookahead_frames": 0, "frame_shift_samples": 320,
             "left_samples": 640, "right_samples": 0, "frame_dim": 4, "frontend_inputs": ["audio"],
             "frontend_outputs": ["frames"], "states": [{"name": "s", "output": "s_out", "shape": [1, 2],
                                                         "dtype": "float32"}]}


def _mutated_info(draw: Any) -> bytes:
    data = json.loads(json.dumps(VALID_INFO))
    if draw(st.booleans()):
        data.update(format_version=2, streaming=json.loads(json.dumps(STREAMING)),
                    files={"fp32": "model.onnx", "frontend": "frontend.onnx"})
    for _ in range(draw(st.integers(0, 3))):
        target = data
        if draw(st.integers(0, 3)) == 0 and "streaming" in data:
            target = data["streaming"]
        key = draw(st.sampled_from(sorted(target) + ["extra"]))
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(JSON_VALUE)
    text = json.dumps(data, allow_nan=True)
    return text.encode("utf-8")


MODEL_JSON = st.one_of(
    st.composite(_mutated_info)(),
    st.composite(_mutated_info)().map(lambda b: b[: len(b) // 2]),
    st.sampled_from([b"[" * 100000 + b"]" * 100000, b'{"format": 1e400}', b"\xff\xfe{}", b"", b"null"]),
    st.binary(max_size=32),
)


# ------------------------------------------------------------------------------------------ runners

def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _audio_manifest(data: bytes, folder: Path) -> None:
    from wavssl.data.audio import AudioError, scan_audio

    path = _write(folder, "fuzz.tsv", data)
    _expect(lambda: scan_audio(path), (AudioError,), path)


def _transcribed(data: bytes, folder: Path) -> None:
    from wavssl.data.audio import AudioError
    from wavssl.data.text import read_transcribed

    path = _write(folder, "fuzz.tsv", data)
    _expect(lambda: read_transcribed(path), (AudioError,), path)


def _runtime_manifest(data: bytes, folder: Path) -> None:
    from wavssl_onnx.audio import AudioError
    from wavssl_onnx.manifest import read_manifest

    path = _write(folder, "fuzz.tsv", data)
    _expect(lambda: read_manifest(path, text=True), (AudioError,), path)


def _model_json(data: bytes, folder: Path) -> None:
    from wavssl_onnx.model_dir import ModelDirError, load_model_info

    model = folder / "model"
    model.mkdir(exist_ok=True)
    for name in ("model.onnx", "frontend.onnx"):
        (model / name).write_bytes(b"")
    path = _write(model, "wavssl.json", data)
    _expect(lambda: load_model_info(model), (ModelDirError,), path)


def _sensor(suffix: str) -> Callable[[bytes, Path], None]:
    def run(data: bytes, folder: Path) -> None:
        from wavssl.data.sensor import SensorDataError, load_series

        path = _write(folder, "fuzz" + suffix, data)
        _expect(lambda: load_series(path), (SensorDataError,), path)
    return run


def _runtime_series(data: bytes, folder: Path) -> None:
    from wavssl_onnx.classifier import SeriesError, load_series

    path = _write(folder, "fuzz.csv", data)
    _expect(lambda: load_series(path), (SeriesError,), path)


def _normalizer(example: tuple[str, str | None], folder: Path) -> None:
    from wavssl_onnx.text import normalize_text

    text, language = example
    try:
        once = normalize_text(text, language)
        twice = normalize_text(once, language)
    except Exception as e:  # noqa: BLE001
        raise Bad(type(e).__name__, "text.py", str(e)[:200]) from e
    if not isinstance(once, str):
        raise Bad("not a str", "text.py", repr(once))
    if twice != once:
        raise Bad("not idempotent", "text.py", f"{once!r} -> {twice!r}")


def _languages() -> list[str | None]:
    from wavssl_onnx.text import SUPPORTED_LANGUAGES

    return [None, *SUPPORTED_LANGUAGES]


NORMALIZER_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from("aeiouAEIOU ёЁеЕйЙиИ'’`ʼ-\u0301\u0300\u0308\u0306\u00a0ßİıǅﬁ.Σς'0١"), max_size=20),
)


def targets() -> list[Target]:
    return [
        Target("audio_manifest", "wavssl.data.audio.scan_audio (.tsv manifest)", MANIFEST, _audio_manifest),
        Target("transcribed_manifest", "wavssl.data.text.read_transcribed (.tsv)", MANIFEST, _transcribed),
        Target("runtime_manifest", "wavssl_onnx.manifest.read_manifest (evaluate)", MANIFEST, _runtime_manifest),
        Target("model_json", "wavssl_onnx.model_dir.load_model_info (wavssl.json)", MODEL_JSON, _model_json),
        Target("sensor_ts", "wavssl.data.sensor.load_series (.ts)", SENSOR_TS, _sensor(".ts")),
        Target("sensor_csv", "wavssl.data.sensor.load_series (.csv)", SENSOR_CSV, _sensor(".csv")),
        Target("sensor_tsv", "wavssl.data.sensor.load_series (.tsv)", SENSOR_CSV.map(lambda b: b.replace(b",", b"\t")),
               _sensor(".tsv")),
        Target("runtime_series", "wavssl_onnx.classifier.load_series (.csv)", SENSOR_CSV, _runtime_series),
        Target("normalize_text", "wavssl_onnx.text.normalize_text (str, idempotent)",
               st.tuples(NORMALIZER_TEXT, st.sampled_from(_languages())), _normalizer),
    ]


def fuzz(target: Target, examples: int, seed: int) -> None:
    """Run ``examples`` inputs through the target, keeping the shortest input of every distinct crash."""
    with tempfile.TemporaryDirectory(prefix="fuzz_readers_") as tmp:
        folder = Path(tmp)

        @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(target.strategy)
        def check(example: Any) -> None:
            target.examples += 1
            try:
                target.run(example, folder)
            except Bad as bad:
                kind, where, message = bad.args
                crash = target.crashes.setdefault((kind, where), Crash(kind, where, example, message))
                crash.count += 1
                if len(repr(example)) < len(repr(crash.example)):
                    crash.example, crash.message = example, message

        seed_(seed)(check)()  # the seed makes a run repeatable


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=300, help="inputs per target (default 300)")
    p.add_argument("--target", action="append", help="run only these targets (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="do not append to benchmarks/results/fuzz_readers.jsonl")
    a = p.parse_args()
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ValueError, OSError):
        pass
    sys.setrecursionlimit(3000)
    import wavssl.data.sensor  # noqa: F401 - import torch once, outside the timings
    import wavssl.data.text  # noqa: F401

    chosen = [t for t in targets() if not a.target or t.name in a.target]
    start = time.perf_counter()
    rows = []
    for t in chosen:
        t0 = time.perf_counter()
        fuzz(t, a.examples, a.seed)
        seconds = time.perf_counter() - t0
        print(f"{t.name:22s} {t.examples:5d} examples {seconds:6.1f} s  {len(t.crashes)} crash kind(s)   [{t.reader}]")
        for c in sorted(t.crashes.values(), key=lambda c: -c.count):
            shown = repr(c.example)
            shown = shown if len(shown) <= 160 else shown[:160] + "..."
            print(f"    {c.kind} at {c.where or '-'} (x{c.count}): {c.message[:120]!r}\n        minimal: {shown}")
        rows.append({"target": t.name, "reader": t.reader, "examples": t.examples, "seconds": round(seconds, 2),
                     "crashes": [{"kind": c.kind, "where": c.where, "count": c.count, "message": c.message[:200],
                                  "example": repr(c.example)[:300]} for c in t.crashes.values()]})
    total = time.perf_counter() - start
    print(f"total {sum(t.examples for t in chosen)} examples in {total:.1f} s; "
          f"{sum(len(t.crashes) for t in chosen)} crash kind(s)")
    if not a.no_write:
        import hypothesis

        append_result(RESULTS, {
            "script": "fuzz_readers", "commit": git_commit("wavssl", "export/wavssl_onnx"), "cpu": cpu_name(),
            "cpu_flags": cpu_flags(), "hypothesis": hypothesis.__version__, "python": sys.version.split()[0],
            "examples_per_target": a.examples, "seed": a.seed, "seconds": round(total, 1), "targets": rows,
        })
        print(f"appended to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
