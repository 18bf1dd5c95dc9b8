"""Hardening (issue 18): no hang, no silent wrong answer, no lost run, no code from untrusted files.

Real components throughout: WAV files written with soundfile, real ``wavssl`` subprocesses, a real
crafted pickle, real ONNX Runtime sessions on small hand-built graphs that follow the model-directory
contract (an exported recognizer would cost minutes of CPU here). Only the full disk is simulated,
by making ``os.write`` fail with ENOSPC for files under the test's run directory.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import load_file, save_file

from wavssl import config as C
from wavssl.data import audio as audio_module
from wavssl.data.audio import AudioError, load_audio, scan_audio
from wavssl.data.text import read_transcribed
from wavssl.models import build_model
from wavssl.train.checkpoint import CheckpointError, latest_checkpoint, load, load_config, save_checkpoint, save_model
from wavssl.train.importers import CheckpointImportError, import_checkpoint
from wavssl.train.rundir import LOCK_FILE, RunDirLocked, RunLock
from wavssl.train.pretraining import pretrain
from wavssl.train.trainer import NoUsableData
from wavssl_onnx import Classifier, OfflineRecognizer, Vocabulary
from wavssl_onnx.model_dir import ModelDirError, ModelInfo

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--set", "data.num_workers=0", "--no-progress"]


def wavssl(*args: str, timeout: float = 180, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """``python -m wavssl ARGS`` as a user runs it (text output captured)."""
    return subprocess.run([sys.executable, "-m", "wavssl", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, **kwargs)  # type: ignore[call-overload]


def write_wavs(folder: Path, count: int, *, value: float | None = None, seconds: float = 1.0,
               prefix: str = "f") -> list[Path]:
    """``count`` float32 WAVs at 16 kHz: noise, or every sample ``value`` (NaN, Inf, 1e30...)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        n = int(16000 * seconds)
        wave = np.full(n, value, np.float32) if value is not None else (0.1 * rng.standard_normal(n)).astype(np.float32)
        path = folder / f"{prefix}{i}.wav"
        sf.write(path, wave, 16000, subtype="FLOAT")
        paths.append(path)
    return paths


def tiny_cfg(*sets: str) -> C.Config:
    return C.resolve("tiny", assignments=["data.num_workers=0", *sets])


def tiny_run(run: Path, *sets: str) -> C.Config:
    """A pretraining run directory (config + weights, no training) of the tiny preset."""
    cfg = tiny_cfg(*sets)
    save_model(run, build_model(cfg.model), cfg)
    return cfg


# ------------------------------------------------------------------------------------ 1. hangs


def test_pretraining_on_files_that_all_fail_to_decode_stops(tmp_path: Path) -> None:
    write_wavs(tmp_path / "data", 3, value=float("nan"))
    res = wavssl("pretrain", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *TINY,
                 "--set", "optim.max_updates=3", timeout=60)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "no usable audio file left: all 3 files" in res.stderr and "Traceback" not in res.stderr
    listed = (tmp_path / "run" / "skipped_files.tsv").read_text().splitlines()
    assert len(listed) == 1 + 3 and all("NaN" in row for row in listed[1:])


def test_failed_file_is_listed_once_and_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_wavs(tmp_path / "data", 2)
    write_wavs(tmp_path / "data", 2, value=float("inf"), prefix="bad")
    decoded: list[str] = []

    def counted(path: str, sample_rate: int = 16000) -> np.ndarray:  # the real decoder, counted
        decoded.append(Path(path).name)
        return load_audio(path, sample_rate)

    monkeypatch.setattr(audio_module, "load_audio", counted)
    cfg = tiny_cfg("optim.max_updates=6", "data.max_samples=16000", "data.max_batch_samples=16000")
    state = pretrain(tmp_path / "data", tmp_path / "run", cfg, progress=False)
    assert state.epoch >= 2  # several passes over the data (one file per batch)
    rows = (tmp_path / "run" / "skipped_files.tsv").read_text().splitlines()[1:]
    assert sorted(Path(r.split("\t")[0]).name for r in rows) == ["bad0.wav", "bad1.wav"]
    assert decoded.count("bad0.wav") == decoded.count("bad1.wav") == 1 and decoded.count("f0.wav") >= 2


def test_finetuning_on_utterances_that_all_fail_to_decode_stops(tmp_path: Path) -> None:
    tiny_run(tmp_path / "pre")
    for path in write_wavs(tmp_path / "data", 3, value=float("nan")):
        path.with_suffix(".txt").write_text("a b\n")
    res = wavssl("finetune", str(tmp_path / "pre"), "--train", str(tmp_path / "data"), "--out",
                 str(tmp_path / "asr"), "--set", "optim.max_updates=3", "--no-progress", timeout=60)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "no usable utterance left" in res.stderr and "Traceback" not in res.stderr
    listed = tmp_path / "asr" / "skipped_lines.tsv"
    assert str(listed) in res.stderr and len(listed.read_text().splitlines()) == 1 + 3


# ------------------------------------------------------------------------- 2. one run, one writer


def _hold_lock(run: Path) -> subprocess.Popen[str]:
    """A separate process holding the run directory's lock until killed."""
    code = ("import sys, time; from wavssl.train.rundir import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_on_a_run_directory_is_refused(tmp_path: Path) -> None:
    write_wavs(tmp_path / "data", 2)
    holder = _hold_lock(tmp_path / "run")
    try:
        res = wavssl("pretrain", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *TINY,
                     "--set", "optim.max_updates=1", timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 2, res.stdout[-1000:] + res.stderr[-2000:]
    assert f"in use by pid {holder.pid}" in res.stderr and "done" not in res.stdout
    assert latest_checkpoint(tmp_path / "run") is None


def test_lock_of_a_killed_process_is_stale(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path / "run")
    with pytest.raises(RunDirLocked, match=f"pid {holder.pid}"):
        RunLock(tmp_path / "run").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    notices: list[str] = []
    with RunLock(tmp_path / "run", notice=notices.append):
        assert len(notices) == 1 and f"stale lock of pid {holder.pid}" in notices[0]
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""  # released cleanly: not stale next time
    with RunLock(tmp_path / "run", notice=notices.append):
        assert len(notices) == 1


# ------------------------------------------------------------------- 3. code in a checkpoint file


class _Payload:
    """Unpickling this creates ``marker`` (the stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_crafted_fairseq_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": {"w": torch.zeros(2)}, "args": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointImportError, match=r"evil\.pt: refused: it pickles io\.open.*--trust-checkpoint"):
        import_checkpoint(tmp_path / "evil.pt", tmp_path / "run")
    res = wavssl("import-checkpoint", str(tmp_path / "evil.pt"), str(tmp_path / "run"))
    assert res.returncode == 2 and "--trust-checkpoint" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not marker.exists()


# ------------------------------------------------------------------------ 4. silent wrong answers


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path: Path) -> None:
    tiny_run(tmp_path / "run")
    weights = tmp_path / "run" / "model.safetensors"
    state = load_file(str(weights))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[3]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: tensor '{name}' holds 1 NaN"):
        load(tmp_path / "run")


def test_absurd_sample_range_is_reported_and_missing_file_named(tmp_path: Path) -> None:
    (path,) = write_wavs(tmp_path, 1, value=1e30)
    with pytest.raises(AudioError, match=r"sample values reach 1e\+30, far outside the \[-1, 1\] range"):
        load_audio(path)
    with pytest.raises(AudioError, match=r"nope\.wav: no such file"):
        load_audio(tmp_path / "nope.wav")


def _ctc_model_dir(root: Path, *, corrupt: bool = False) -> Path:
    """A CTC model directory whose graph follows the runtime contract: one frame per sample,
    log_probs = log_softmax(waveform * w), frame_lengths = lengths (w NaN when ``corrupt``)."""
    vocab = Vocabulary.build(["ab"])
    info = ModelInfo(kind="ctc", sample_rate=16000, frame_shift=1 / 16000, frame_shift_samples=1, min_samples=1,
                     inputs=["waveform", "lengths"], outputs=["log_probs", "frame_lengths"],
                     files={"fp32": "model.onnx"}, vocabulary=vocab)
    w = np.linspace(-1, 1, len(vocab), dtype=np.float32)[None]
    if corrupt:
        w[0, 2] = np.nan
    nodes = [helper.make_node("Unsqueeze", ["waveform", "axis"], ["x"]),
             helper.make_node("Mul", ["x", "w"], ["logits"]),
             helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=-1),
             helper.make_node("Identity", ["lengths"], ["frame_lengths"])]
    graph = helper.make_graph(
        nodes, "ctc", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["B", "T"]),
                       helper.make_tensor_value_info("lengths", TensorProto.INT64, ["B"])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["B", "T", len(vocab)]),
         helper.make_tensor_value_info("frame_lengths", TensorProto.INT64, ["B"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([-1], np.int64), "axis")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for key, value in info.metadata_props().items():
        model.metadata_props.add(key=key, value=value)
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(model, root / "model.onnx")
    info.save(root)
    return root


def test_non_finite_model_output_is_an_error_for_that_input(tmp_path: Path) -> None:
    good = write_wavs(tmp_path, 1)[0]
    ok = OfflineRecognizer.from_dir(_ctc_model_dir(tmp_path / "ok")).run([str(good)])
    assert ok[0].error is None
    broken = OfflineRecognizer.from_dir(_ctc_model_dir(tmp_path / "corrupt", corrupt=True))
    (result,) = broken.run([str(good)])
    assert result.hypothesis is None and "non-finite (NaN or infinite) log-probabilities" in str(result.error)
    absurd = write_wavs(tmp_path / "absurd", 1, value=1e30)[0]
    results = OfflineRecognizer.from_dir(tmp_path / "ok").run([str(absurd), str(good)])
    assert "far outside the [-1, 1] range" in str(results[0].error) and results[1].error is None


def test_wavssl_json_disagreeing_with_graph_metadata_is_refused(tmp_path: Path) -> None:
    root = _ctc_model_dir(tmp_path / "m")
    for key, value in (("sample_rate", 8000), ("frame_shift", 0.02)):
        data = json.loads((root / "wavssl.json").read_text())
        original = data[key]
        data[key] = value
        (root / "wavssl.json").write_text(json.dumps(data))
        with pytest.raises(ModelDirError, match=rf"model\.onnx: metadata {key}=.* disagrees with wavssl\.json"):
            OfflineRecognizer.from_dir(root)
        data[key] = original
        (root / "wavssl.json").write_text(json.dumps(data))
    OfflineRecognizer.from_dir(root)


def test_all_missing_sensor_series_is_refused(tmp_path: Path) -> None:
    info = ModelInfo(kind="classify", sample_rate=50, frame_shift=0.02, frame_shift_samples=1, min_samples=1,
                     inputs=["series", "lengths"], outputs=["log_probs"], files={"fp32": "model.onnx"},
                     class_names=["a", "b"], in_channels=2)
    nodes = [helper.make_node("ReduceSum", ["series", "axes"], ["pooled"], keepdims=0),  # (B, C)
             helper.make_node("LogSoftmax", ["pooled"], ["log_probs"], axis=-1)]
    graph = helper.make_graph(
        nodes, "classify", [helper.make_tensor_value_info("series", TensorProto.FLOAT, ["B", 2, "T"]),
                            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["B"])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["B", 2])],
        [numpy_helper.from_array(np.array([2], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for key, value in info.metadata_props().items():
        model.metadata_props.add(key=key, value=value)
    (tmp_path / "m").mkdir()
    onnx.save(model, tmp_path / "m" / "model.onnx")
    info.save(tmp_path / "m")
    np.save(tmp_path / "missing.npy", np.full((2, 40), np.nan, np.float32))
    np.save(tmp_path / "fine.npy", np.ones((2, 40), np.float32))
    missing, fine = Classifier.from_dir(tmp_path / "m").run([tmp_path / "missing.npy", tmp_path / "fine.npy"])
    assert missing.label is None and "no observed value" in str(missing.error)
    assert fine.error is None and fine.label is not None


# ------------------------------------------------------------------------------------ 5. messages


def test_full_disk_during_checkpoint_names_file_and_intact_checkpoint(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    cfg = tiny_run(run)
    model = build_model(cfg.model)
    first = save_checkpoint(run, model, cfg, {"trainer": {}}, 1)
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(run)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(run, model, cfg, {"trainer": {}}, 2)
    monkeypatch.undo()
    assert str(err.value).startswith(f"no space left writing {run / 'checkpoints'}")
    assert f"the previous checkpoint {first} is intact" in str(err.value)
    assert latest_checkpoint(run) == first and load(first) is not None
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp_")]


@pytest.mark.parametrize(("content", "problem"), [
    ("[1, 2]", "expected a JSON object, got a list"),
    (json.dumps({"model": {}}), "lacks 'task'"),
    (json.dumps({"task": "pretrain"}), "lacks 'model'"),
])
def test_malformed_config_json_is_one_line(tmp_path: Path, content: str, problem: str) -> None:
    tiny_run(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=problem):
        load_config(tmp_path / "run")
    if problem.startswith("expected"):  # once through the command line
        res = wavssl("transcribe", str(tmp_path / "run"), str(tmp_path / "a.wav"))
        assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
        assert f"{tmp_path / 'run' / 'config.json'}: {problem}" in res.stderr


def test_pickle_in_model_safetensors_is_one_line(tmp_path: Path) -> None:
    tiny_run(tmp_path / "run")
    torch.save({"w": torch.zeros(1)}, tmp_path / "run" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load(tmp_path / "run")


def test_closed_pipe_gives_no_broken_pipe_error() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "wavssl", "config", "--preset", "base"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head` that already exited
    _, err = proc.communicate(timeout=60)
    assert "BrokenPipeError" not in err and "Traceback" not in err, err


# --------------------------------------------------------------------------------------- 6. smaller


def test_list_named_by_the_error_exists(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "empty.wav").write_bytes(b"")
    with pytest.raises(NoUsableData, match="see the list in") as err:
        pretrain(tmp_path / "data", tmp_path / "run", tiny_cfg(), progress=False)
    listed = Path(str(err.value).rsplit("see the list in ", 1)[1].rstrip(")"))
    assert listed.is_file() and "empty.wav" in listed.read_text()


def test_manifests_with_byte_order_mark_and_any_column_order(tmp_path: Path) -> None:
    paths = write_wavs(tmp_path, 2)
    (tmp_path / "audio.tsv").write_text("\ufeffduration\tpath\n" + "".join(f"1.0\t{p.name}\n" for p in paths),
                                        encoding="utf-8")
    assert len(scan_audio(tmp_path / "audio.tsv").items) == 2
    (tmp_path / "text.tsv").write_text("\ufefftext\tpath\n" + "".join(f"a b\t{p.name}\n" for p in paths),
                                       encoding="utf-8")
    assert len(read_transcribed(tmp_path / "text.tsv").items) == 2


def test_model_shaping_flags_with_resume_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_run(run)
    save_checkpoint(run, build_model(cfg.model), cfg, {"trainer": {}}, 1)
    write_wavs(tmp_path / "data", 1)
    for flags in (["--preset", "base"], ["--set", "model.context.num_layers=5"]):
        res = wavssl("pretrain", str(tmp_path / "data"), "--out", str(run), "--resume", "--no-progress", *flags)
        assert res.returncode == 2, res.stderr[-2000:]
        assert "--resume continues the run's own model" in res.stderr and "change its architecture" in res.stderr


def test_runtime_refuses_file_names_leaving_the_model_directory(tmp_path: Path) -> None:
    root = _ctc_model_dir(tmp_path / "m")
    data = json.loads((root / "wavssl.json").read_text())
    for name in ("../outside.onnx", "/etc/passwd", "sub/../../x.onnx"):
        data["files"] = {"fp32": name}
        with pytest.raises(ModelDirError, match="leaves the model directory"):
            ModelInfo.from_dict(data)


def test_orphans_removed_and_outputs_readable_by_group_and_world(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / ".tmp_dead").mkdir(parents=True)
    (run / ".model.safetensors.x1y2.tmp").write_bytes(b"half")
    write_wavs(tmp_path / "data", 2)
    old = os.umask(0o022)
    try:
        pretrain(tmp_path / "data", run, tiny_cfg("optim.max_updates=1"), progress=False)
        ModelInfo.from_dict(json.loads((_ctc_model_dir(tmp_path / "m") / "wavssl.json").read_text()))
    finally:
        os.umask(old)
    assert not (run / "checkpoints" / ".tmp_dead").exists() and not (run / ".model.safetensors.x1y2.tmp").exists()
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    for path in (run / "model.safetensors", run / "config.json", ckpt / "trainer_state.pt", tmp_path / "m" / "wavssl.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755


# --------------------------------------------------------------------------------------- 7. friction


def test_help_does_not_import_torch() -> None:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "wavssl", "pretrain", "--help"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0 and "--resume" in res.stdout
    assert not [line for line in res.stderr.splitlines() if line.split("|")[-1].strip() == "torch"]
    assert time.perf_counter() - start < 30


# ------------------------------------------------------------------- 8. fuzzed readers (fuzz_readers.py)


def test_fuzzed_manifests_raise_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    from wavssl.data.audio import scan_audio
    from wavssl_onnx.cli import read_manifest

    bad = tmp_path / "latin1.tsv"
    bad.write_bytes(b"\x8c")
    with pytest.raises(ValueError, match="latin1.tsv: cannot read manifest"):
        read_manifest(bad)
    nul = tmp_path / "nul.tsv"
    nul.write_bytes(b"path\na\x00b.wav\n")
    result = scan_audio(nul)
    assert not result.items and "NUL" in result.skipped[0][1]


def test_fuzzed_wavssl_json_raises_model_dir_error(tmp_path: Path) -> None:
    from wavssl_onnx.model_dir import ModelDirError, load_model_info

    (tmp_path / "model.onnx").write_bytes(b"")
    base = {"format": "wavssl-onnx", "format_version": 1, "kind": "classify", "sample_rate": 16000,
            "frame_shift": 0.02, "frame_shift_samples": 320, "min_samples": 400, "inputs": ["audio"],
            "outputs": ["logits"], "files": {"fp32": "model.onnx"}, "class_names": ["a"]}
    for text in ("[" * 100000 + "]" * 100000, json.dumps({**base, "sample_rate": float("inf")}),
                 json.dumps({**base, "frame_shift": float("nan")})):
        (tmp_path / "wavssl.json").write_text(text)
        with pytest.raises(ModelDirError, match="wavssl.json"):
            load_model_info(tmp_path)


def test_fuzzed_sensor_files_raise_sensor_data_error(tmp_path: Path) -> None:
    from wavssl.data.sensor import SensorDataError, load_series

    cases = {"dims.ts": "@dimensions \u00b2\n@data\n1,2\n",  # a non-ASCII digit: no dimension check, no crash
             "label.ts": "@targetLabel true\n@data\n3.5\n", "span.csv": "time,x\n0,1\n1e9,2\n",
             "overflow.csv": "time,x\n-1e308,1\n1e308,2\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert load_series(tmp_path / "dims.ts").series[0].shape == (1, 2)
    for name in ("label.ts", "span.csv", "overflow.csv"):
        with pytest.raises(SensorDataError, match=name):
            load_series(tmp_path / name)


def test_normalize_text_is_idempotent_around_apostrophes() -> None:
    from wavssl_onnx.text import SUPPORTED_LANGUAGES, normalize_text

    for text in ("\u0131\u2019\u02bcO\u0130\u0415\u0451", "a''b", "\u00e9\u2019s x\u2019\u02bcy"):
        for language in (None, *SUPPORTED_LANGUAGES):
            once = normalize_text(text, language)
            assert normalize_text(once, language) == once, (text, language)
