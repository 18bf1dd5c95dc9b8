"""CTC fine-tuning, evaluation and transcription end to end on generated speech (tiny preset)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

import wavssl
from wavssl import config as C
from wavssl.data.audio import AudioError
from wavssl.data.text import read_transcribed
from wavssl.models import CTCModel, min_input_samples
from wavssl.train.asr import ctc_frames_needed, finetune
from wavssl.train.checkpoint import list_checkpoints


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "wavssl", *args]


@pytest.fixture(scope="module")
def pretrained(speech_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model pretrained for 20 updates on the generated corpus."""
    run = tmp_path_factory.mktemp("pre") / "run"
    cfg = C.resolve("tiny", assignments=["optim.max_updates=20", "data.num_workers=0", "train.tensorboard=false"])
    wavssl.pretrain(speech_dir, run, cfg, progress=False)
    return run


def _manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("path\ttext\n" + "".join(f"{p}\t{t}\n" for p, t in rows), encoding="utf-8")
    return path


def _rows(speech_dir: Path) -> list[tuple[str, str]]:
    lines = (speech_dir / "transcripts.tsv").read_text().splitlines()[1:]
    return [(str(speech_dir / p), t) for p, t in (line.split("\t") for line in lines)]


def _cfg(run: Path, *sets: str) -> C.Config:
    base = wavssl.train.checkpoint.load_config(run)
    return C.merge(C.finetune_config(base, "ctc"), C.parse_set(["optim.max_updates=30", "train.valid_every=10", "ctc.freeze_updates=5",
                                      "ctc.freeze_feature_encoder=true",  # fairseq's recipe (tiny trains it)
                                      "train.tensorboard=false", "train.checkpoint_every=10", "train.keep_last=5",
                                      *sets]))


@pytest.mark.e2e
def test_finetune_evaluate_transcribe(pretrained: Path, speech_dir: Path, tmp_path: Path) -> None:
    rows = _rows(speech_dir)
    train = _manifest(tmp_path / "train.tsv", rows[:30])
    valid = _manifest(tmp_path / "valid.tsv", rows[30:])
    out = tmp_path / "asr"
    result = finetune(pretrained, train, out, cfg=_cfg(pretrained), valid=valid, progress=False)
    assert result.train_utterances == 30 and result.state.num_updates == 30
    assert 0 <= result.state.best_update <= 30
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["tokens"][:3] == ["<blank>", "<unk>", "|"] and "e" in vocab["tokens"]
    assert (out / "best" / "vocab.json").is_file()
    # the top-level model is the best validated one
    assert (out / "model.safetensors").read_bytes() == (out / "best" / "model.safetensors").read_bytes()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in log if "valid_wer" in r] == [10.0, 20.0, 30.0]
    # the frozen feature encoder did not move; the head did
    pre = load_file(str(pretrained / "model.safetensors"))
    ft = load_file(str(out / "model.safetensors"))
    front = [k for k in pre if k.startswith("encoder.frontend.")]
    assert front and all(torch.equal(pre[k], ft[k]) for k in front)

    model = wavssl.load(out)
    assert isinstance(model, CTCModel) and model.vocab is not None
    wave, rate = sf.read(rows[0][0], dtype="float32")
    from_file, from_array = model.transcribe([rows[0][0], wave], sample_rate=rate)
    assert from_file.text == from_array.text
    assert all(w.start <= w.end for w in from_file.words)

    ev = subprocess.run(_cli("evaluate", str(out), str(valid), "--json"), capture_output=True, text=True, check=True)
    scores = json.loads(ev.stdout)
    assert scores["utterances"] == 10 and 0 <= scores["cer"] and scores["words"] > 0
    beam = subprocess.run(_cli("evaluate", str(out), str(valid), "--beam", "4", "--lm", str(train)),
                          capture_output=True, text=True, check=True)
    assert beam.stdout.startswith("WER ") and "CER" in beam.stdout

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    tr = subprocess.run(_cli("transcribe", str(out), rows[0][0], str(bad), rows[1][0], "--json"),
                        capture_output=True, text=True)
    assert tr.returncode == 1 and "bad.wav" in tr.stderr
    lines = [json.loads(x) for x in tr.stdout.splitlines()]
    assert [x["path"] for x in lines] == [rows[0][0], rows[1][0]]
    assert lines[0]["text"] == from_file.text and isinstance(lines[0]["words"], list)


@pytest.mark.e2e
def test_bad_manifest_lines_are_reported_with_line_numbers(pretrained: Path, speech_dir: Path, tmp_path: Path) -> None:
    rows = _rows(speech_dir)[:12]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt garbage")
    manifest = _manifest(tmp_path / "train.tsv", rows[:5] + [
        (str(tmp_path / "missing.wav"), "a missing file"),  # line 7
        (rows[5][0], ""),  # line 8: empty text
        (str(corrupt), "unreadable audio"),  # line 9
        (rows[6][0], "?!."),  # line 10: nothing left after normalisation
    ] + rows[7:])
    data = read_transcribed(manifest, language="en")
    assert len(data) == 10
    reasons = {where.rsplit(":", 1)[1]: why for where, why in data.skipped}
    assert set(reasons) == {"7", "8", "9", "10"}
    assert "not found" in reasons["7"] and "empty transcript" in reasons["8"]
    assert "unreadable" in reasons["9"] and "after normalisation" in reasons["10"]

    out = tmp_path / "asr"
    finetune(pretrained, manifest, out, cfg=_cfg(pretrained, "optim.max_updates=4", "train.valid_every=0"),
             progress=False)
    listed = (out / "skipped_lines.tsv").read_text()
    for line in ("train.tsv:7", "train.tsv:8", "train.tsv:9", "train.tsv:10"):
        assert line in listed

    header_only = tmp_path / "empty.tsv"
    header_only.write_text("path\ttext\n")
    with pytest.raises(AudioError, match="empty.tsv"):
        read_transcribed(header_only)
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("file\tsentence\nx.wav\thello\n")
    with pytest.raises(AudioError, match="'path' and 'text'"):
        read_transcribed(wrong)


def test_folder_of_audio_and_txt_pairs(speech_dir: Path, tmp_path: Path) -> None:
    for i, (path, text) in enumerate(_rows(speech_dir)[:3]):
        shutil.copy(path, tmp_path / f"u{i}.wav")
        (tmp_path / f"u{i}.txt").write_text(text + "\n")
    shutil.copy(_rows(speech_dir)[3][0], tmp_path / "orphan.wav")
    data = read_transcribed(tmp_path, language="en")
    assert len(data) == 3 and data.items[0].text == data.items[0].text.lower()
    assert len(data.skipped) == 1 and "orphan.wav" in data.skipped[0][1]


@pytest.mark.e2e
def test_resume_continues_exactly(pretrained: Path, speech_dir: Path, tmp_path: Path) -> None:
    train = _manifest(tmp_path / "train.tsv", _rows(speech_dir)[:16])
    cfg = _cfg(pretrained, "optim.max_updates=20", "train.valid_every=0", "data.max_batch_samples=200000",
               "data.max_samples=200000")
    ref = tmp_path / "ref"
    finetune(pretrained, train, ref, cfg=cfg, progress=False)
    run = tmp_path / "run"
    finetune(pretrained, train, run, cfg=cfg, progress=False)
    for ckpt in list_checkpoints(run)[1:]:  # as if killed right after the update-10 checkpoint
        shutil.rmtree(ckpt)
    with pytest.raises(Exception, match="--resume"):
        finetune(pretrained, train, run, cfg=cfg, progress=False)
    result = finetune(pretrained, train, run, cfg=cfg, resume=True, progress=False)
    assert result.state.num_updates == 20
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.e2e
def test_scratch_uses_the_same_architecture(pretrained: Path, speech_dir: Path, tmp_path: Path) -> None:
    train = _manifest(tmp_path / "train.tsv", _rows(speech_dir)[:8])
    out = tmp_path / "scratch"
    subprocess.run(_cli("finetune", str(pretrained), "--train", str(train), "--out", str(out), "--scratch",
                        "--no-progress", "--set", "optim.max_updates=3", "--set", "train.tensorboard=false"),
                   check=True, capture_output=True)
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert summary["pretrained"] is None and summary["num_updates"] == 3
    pre, ft = load_file(str(pretrained / "model.safetensors")), load_file(str(out / "model.safetensors"))
    key = "encoder.context.layers.0.fc1.weight"
    assert pre[key].shape == ft[key].shape and not torch.equal(pre[key], ft[key])


def test_ctc_geometry_helpers() -> None:
    assert ctc_frames_needed([1, 2, 2, 3, 3, 3]) == 9
    assert ctc_frames_needed([]) == 0
    model = wavssl.models.build_recognizer(C.tiny().model, C.tiny().ctc, 5)
    n = min_input_samples(model.encoder.frontend)
    fe = model.encoder.frontend
    assert int(fe.output_lengths(torch.tensor([n]))[0]) >= 1 > int(fe.output_lengths(torch.tensor([n - 1]))[0])
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert out.logits.shape[-1] == 5 and out.lengths.tolist() == fe.output_lengths(torch.tensor([16000, 8000])).tolist()
    assert np.isclose(model.frame_shift, 0.02)


def test_speed_perturbed_batches_are_reproducible_and_keep_transcripts_alignable(speech_dir: Path,
                                                                                tmp_path: Path) -> None:
    from wavssl.modules.frontend import as_frontend
    from wavssl.train.asr import CTCTask
    from wavssl_onnx import Vocabulary

    rows = _rows(speech_dir)[:12]
    cfg = C.resolve("tiny", assignments=["data.speed_perturb=0.1", "data.gain_perturb_db=3"])
    fe = as_frontend(wavssl.models.build_encoder(cfg.model).frontend)
    # one utterance whose transcript needs nearly all of its frames: slowing down is fine, speeding up is not
    frames = int(fe.output_lengths(torch.tensor([int(read_transcribed(_manifest(tmp_path / "one.tsv", rows[:1]),
                                                                      language="en").lengths[0])]))[0])
    tight = rows[0][0], ("ab" * frames)[: frames - 3]
    assert frames - 3 > frames / 1.1 + 2
    data = read_transcribed(_manifest(tmp_path / "train.tsv", rows + [tight]), language="en")
    task = CTCTask(data, Vocabulary.build(data.texts), cfg, fe)
    plain = CTCTask(data, Vocabulary.build(data.texts), C.resolve("tiny"), fe)

    first, again = list(task.batches(0, 0)), list(task.batches(0, 0))
    assert all(torch.equal(a.waveforms, b.waveforms) for a, b in zip(first, again))
    assert list(task.batches(0, 2))[0].waveforms.equal(first[2].waveforms)  # a resumed epoch repeats its draws
    original = dict(enumerate(task.data.lengths.tolist()))
    ratios = {round(original[i] / n, 2) for b in first for i, n in zip(b.indices, b.lengths.tolist())}
    assert ratios <= {0.9, 1.0, 1.1} and len(ratios) > 1
    assert sum(len(b.indices) for b in first) == len(data) == sum(len(b.indices) for b in plain.batches(0, 0))
    for epoch in range(6):
        for b in task.batches(epoch, 0):
            for i, n in zip(b.indices, b.lengths.tolist()):  # never sped past what its transcript needs
                assert ctc_frames_needed(task.ids[i]) <= int(fe.output_lengths(torch.tensor([n]))[0])
    assert max(int(b.lengths.sum()) for b in first) <= cfg.data.max_batch_samples
