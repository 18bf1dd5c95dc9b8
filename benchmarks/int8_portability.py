"""How closely int8 follows fp32 on each CPU kind, for each int8 weight scheme.

ONNX Runtime picks its uint8 x int8 kernel by the CPU: VNNI and AMX accumulate every product in int32,
AVX2 without VNNI sums pairs of products in a saturating int16 (``wavssl_onnx.cpu``). This exports a
fine-tuned recognizer once to fp32, quantizes it twice (``wavssl export --int8``'s weights within +-64,
and full-range weights within +-127, the scheme before), and runs both int8 graphs on a transcribed
set on this CPU and on an emulated AVX2-only CPU (``qemu-x86_64 -cpu Haswell``: AVX2, no AVX-512, no
VNNI; Debian package qemu-user). Reported per scheme and CPU: the share of frames whose best token
matches fp32, the share of identical transcripts, mean |p_int8 - p_fp32|, and CER of fp32 and int8
against the references. Emulated timings mean nothing; only agreement is measured there.

    python benchmarks/int8_portability.py RUN data.tsv [--limit 40]

Appends one JSON line to ``benchmarks/results/int8_portability.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._env import append_result, cpu_flags, cpu_name, git_commit, load_average  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "int8_portability.jsonl"
SCHEMES = {"s8 within +-64 (wavssl export --int8)": 64, "s8 within +-127 (full range, before)": 127}

_CHILD = """
import json, sys
import numpy as np
from wavssl_onnx import OfflineRecognizer, read_audio
model_dir, files, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
rec = OfflineRecognizer.from_dir(model_dir, threads=1, int8=True)
waves = [read_audio(f, 16000) for f in files]
np.savez(out, *rec.log_probs(waves))
"""


def _log_probs(model_dir: Path, files: list[str], out: Path, *, emulate_avx2: bool) -> list[np.ndarray]:
    """int8 log-probabilities of ``files``, computed in a child process (under qemu when asked)."""
    python = [os.path.realpath(sys.executable)]
    if emulate_avx2:
        python = ["qemu-x86_64", "-cpu", "Haswell", *python]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*sys.path[1:], str(ROOT), str(ROOT / "export")]),
               OMP_NUM_THREADS="1")
    run = subprocess.run([*python, "-c", _CHILD, str(model_dir), json.dumps(files), str(out)], env=env,
                         capture_output=True, text=True, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(f"int8 run failed ({'emulated AVX2' if emulate_avx2 else 'native'}): {run.stderr[-1500:]}")
    with np.load(out) as z:
        return [z[f"arr_{i}"] for i in range(len(files))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="fine-tuned recognizer run directory")
    p.add_argument("data", type=Path, help="transcribed set (manifest .tsv with path and text)")
    p.add_argument("--limit", type=int, default=40, help="first N utterances of DATA")
    a = p.parse_args()

    from wavssl_onnx import OfflineRecognizer, Vocabulary, cer, greedy_decode, read_audio

    from wavssl.data.text import read_transcribed
    from wavssl_onnx.model_dir import load_model_info

    from wavssl.export import export, quantize_int8
    from wavssl.train.checkpoint import load_config

    cfg = load_config(a.run)
    items = read_transcribed(a.data, language=cfg.ctc.language).items[: a.limit]
    files, refs = [str(i.path) for i in items], [i.text for i in items]
    emulate = shutil.which("qemu-x86_64") is not None and platform.machine() == "x86_64"
    record: dict[str, object] = {
        "benchmark": "int8_portability", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(), "cpu": cpu_name(), "cpu_flags": cpu_flags(), "load_average": load_average(),
        "run": str(a.run), "data": str(a.data), "utterances": len(files), "schemes": {}}
    with tempfile.TemporaryDirectory(prefix="int8-portability-") as tmp:
        model_dir = Path(tmp) / "model"
        export(a.run, model_dir, int8=True, log=None)
        fp32_rec = OfflineRecognizer.from_dir(model_dir, threads=1)
        vocab: Vocabulary = fp32_rec.vocab
        fp32 = fp32_rec.log_probs([read_audio(f, 16000) for f in files])

        def text(lp: np.ndarray) -> str:
            return greedy_decode(lp, vocab).text

        fp32_text = [text(lp) for lp in fp32]
        record["fp32_cer"] = cer(refs, fp32_text).rate
        info = load_model_info(model_dir)
        for scheme, limit in SCHEMES.items():
            quantize_int8(model_dir / "model.onnx", model_dir / "model.int8.onnx", info, weight_limit=limit)
            rows = {}
            for kind, emulated in (("native", False), ("emulated AVX2 (qemu Haswell)", True)):
                if emulated and not emulate:
                    rows[kind] = "not measured: needs qemu-user on an x86-64 host"
                    continue
                got = _log_probs(model_dir, files, Path(tmp) / "lp.npz", emulate_avx2=emulated)
                a_all, b_all = np.concatenate(fp32), np.concatenate(got)
                hyp = [text(lp) for lp in got]
                rows[kind] = {
                    "best_token_agreement": round(float((a_all.argmax(1) == b_all.argmax(1)).mean()), 4),
                    "same_transcript": round(float(np.mean([x == y for x, y in zip(hyp, fp32_text)])), 4),
                    "mean_abs_prob_diff": round(float(np.abs(np.exp(a_all) - np.exp(b_all)).mean()), 5),
                    "int8_cer": round(cer(refs, hyp).rate, 4),
                }
                print(f"{scheme:42s} {kind:30s} {rows[kind]}", flush=True)
            record["schemes"][scheme] = rows  # type: ignore[index]
    print(f"fp32 CER {record['fp32_cer']:.4f}")
    append_result(RESULTS, record)


if __name__ == "__main__":
    main()
