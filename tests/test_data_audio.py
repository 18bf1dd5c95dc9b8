"""Tests for wavssl.data.audio and wavssl.data.synth on real audio files (no mocks)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from wavssl.data import audio
from wavssl.data.audio import (
    AudioError,
    BucketBatchSampler,
    CropDataset,
    load_audio,
    make_loader,
    perturb,
    resampled_length,
    scan_audio,
    write_skipped,
)
from wavssl.data.synth import synthesize_corpus

SR = 16000
RAMP_STEP = 2.0**-17  # float32-exact sample values: sample k of a ramp file is (k + 1) * RAMP_STEP


def _tone(num: int, rate: int, amp: float = 0.5, freq: float = 440.0) -> np.ndarray:
    """(num,) float32 sine."""
    return (amp * np.sin(2 * np.pi * freq * np.arange(num) / rate)).astype(np.float32)


def _build_tree(root: Path) -> dict[str, Path]:
    """Nested folder with several formats, a stereo 44.1 kHz file, a 24-bit FLAC and three bad files."""
    files = {
        "wav": root / "speech" / "a.wav",
        "flac24": root / "speech" / "deep" / "b.flac",
        "ogg": root / "speech" / "deep" / "deeper" / "c.ogg",
        "opus": root / "speech" / "d.opus",
        "mp3": root / "other" / "e.mp3",
        "stereo": root / "other" / "STEREO.WAV",
        "corrupt": root / "bad" / "corrupt.wav",
        "empty": root / "bad" / "empty.wav",
        "short": root / "bad" / "short.wav",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(files["wav"], _tone(16000, SR), SR)
    sf.write(files["flac24"], _tone(12000, SR, amp=0.7), SR, subtype="PCM_24")
    sf.write(files["ogg"], _tone(24000, 48000), 48000, format="OGG", subtype="VORBIS")
    sf.write(files["opus"], _tone(9600, SR), SR, format="OGG", subtype="OPUS")
    sf.write(files["mp3"], _tone(22050, 22050), 22050, format="MP3")
    stereo = np.stack([_tone(57330, 44100, amp=0.6), _tone(57330, 44100, amp=0.2)], axis=1)
    sf.write(files["stereo"], stereo, 44100, subtype="PCM_16")
    files["corrupt"].write_bytes(np.random.default_rng(0).bytes(3000))
    files["empty"].write_bytes(b"")
    sf.write(files["short"], _tone(160, SR), SR)
    (root / "speech" / "notes.txt").write_text("not audio")
    return files


def _write_ramps(root: Path, lengths: list[int]) -> list[Path]:
    """Float WAV files whose samples are (k + 1) * RAMP_STEP, so any crop reveals its offset."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, n in enumerate(lengths):
        path = root / f"ramp{i}.wav"
        sf.write(path, ((np.arange(n) + 1) * RAMP_STEP).astype(np.float32), SR, subtype="FLOAT")
        paths.append(path)
    return paths


def _crop_offset(row: np.ndarray, num_file_samples: int) -> int:
    """Start of the contiguous ramp window ``row``; asserts it really is one."""
    ks = np.round(row / RAMP_STEP).astype(np.int64) - 1
    assert np.array_equal(ks, ks[0] + np.arange(len(ks)))
    assert 0 <= ks[0] <= num_file_samples - len(ks)
    return int(ks[0])


# ---------------------------------------------------------------- scanning and decoding


def test_scan_finds_formats_and_skips_bad_files(tmp_path: Path) -> None:
    files = _build_tree(tmp_path)
    result = scan_audio(tmp_path, min_samples=1600)

    good = ["wav", "flac24", "ogg", "opus", "mp3", "stereo"]
    assert [it.path for it in result.items] == sorted(str(files[k].absolute()) for k in good)
    by_path = {it.path: it for it in result.items}
    expected = {"wav": 16000, "flac24": 12000, "ogg": 8000, "opus": 9600, "mp3": 16000, "stereo": 20800}
    for key, num in expected.items():
        item = by_path[str(files[key])]
        assert item.num_samples == num, key
        assert len(load_audio(item.path)) == item.num_samples, key
    assert by_path[str(files["stereo"])].channels == 2
    assert by_path[str(files["stereo"])].sample_rate == 44100

    reasons = dict(result.skipped)
    assert sorted(reasons) == sorted(str(files[k]) for k in ("corrupt", "empty", "short"))
    assert "empty file" in reasons[str(files["empty"])]
    assert "not a readable audio file" in reasons[str(files["corrupt"])]
    assert "too short" in reasons[str(files["short"])]
    assert len(set(reasons.values())) == 3

    without_minimum = scan_audio(tmp_path)
    assert str(files["short"]) in {it.path for it in without_minimum.items}


def test_load_audio_downmixes_and_resamples_stereo(tmp_path: Path) -> None:
    files = _build_tree(tmp_path)
    wave = load_audio(files["stereo"])
    assert wave.dtype == np.float32 and wave.shape == (20800,)
    expected = _tone(20800, SR, amp=0.4)  # mean of the 0.6 and 0.2 amplitude channels
    assert np.abs(wave[500:-500] - expected[500:-500]).max() < 1e-2


def test_load_audio_reads_24bit_flac(tmp_path: Path) -> None:
    files = _build_tree(tmp_path)
    assert sf.info(files["flac24"]).subtype == "PCM_24"
    wave = load_audio(files["flac24"])
    assert wave.dtype == np.float32 and wave.shape == (12000,)
    assert np.abs(wave - _tone(12000, SR, amp=0.7)).max() < 2.0**-22


@pytest.mark.parametrize("key", ["corrupt", "empty", "missing"])
def test_load_audio_errors_name_the_file(tmp_path: Path, key: str) -> None:
    files = _build_tree(tmp_path)
    path = files.get(key, tmp_path / "missing.wav")
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert str(info.value).startswith(f"{path}: ")
    assert info.value.reason


@pytest.mark.parametrize("native", [8000, 11025, 22050, 44100, 48000])
def test_resampled_length_matches_soxr(native: int) -> None:
    for num in (1, 7, 441, 12345, 100003):
        produced = soxr.resample(np.zeros(num, np.float32), native, SR, quality="HQ")
        assert resampled_length(num, native, SR) == len(produced)


def test_scan_cache_skips_probing_and_reprobes_changed_files(tmp_path: Path, monkeypatch) -> None:
    files = _build_tree(tmp_path / "tree")
    cache = tmp_path / "cache" / "scan.json"
    first = scan_audio(tmp_path / "tree", min_samples=1600, cache_path=cache)
    assert json.loads(cache.read_text())["entries"]

    probed: list[str] = []
    real_info = sf.info  # the probe imports soundfile where it reads a header

    def spy(path, *args, **kwargs):
        probed.append(str(path))
        return real_info(path, *args, **kwargs)

    monkeypatch.setattr(sf, "info", spy)
    second = scan_audio(tmp_path / "tree", min_samples=1600, cache_path=cache)
    assert probed == []
    assert second == first
    assert set(first.items) < set(scan_audio(tmp_path / "tree", min_samples=0, cache_path=cache).items)
    assert probed == []

    sf.write(files["flac24"], _tone(30000, SR), SR, subtype="PCM_24")
    third = scan_audio(tmp_path / "tree", min_samples=1600, cache_path=cache)
    assert probed == [str(files["flac24"])]
    assert {it.path: it.num_samples for it in third.items}[str(files["flac24"])] == 30000
    assert os.listdir(cache.parent) == ["scan.json"]


def test_scan_with_unreadable_cache_warns_and_rebuilds(tmp_path: Path) -> None:
    _build_tree(tmp_path / "tree")
    cache = tmp_path / "scan.json"
    cache.write_text("{not json")
    with pytest.warns(UserWarning, match="scan.json"):
        result = scan_audio(tmp_path / "tree", cache_path=cache)
    assert result == scan_audio(tmp_path / "tree")
    assert json.loads(cache.read_text())["version"] == 1


def test_scan_manifest_tsv(tmp_path: Path) -> None:
    files = _build_tree(tmp_path)
    manifest = tmp_path / "train.tsv"
    manifest.write_text(
        f"path\tnote\n{files['stereo']}\tabsolute\nspeech/a.wav\trelative\nbad/empty.wav\t\nnope.wav\tmissing\n"
    )
    result = scan_audio(manifest)
    from_dir = {it.path: it for it in scan_audio(tmp_path).items}
    assert result.items == [from_dir[str(files["stereo"])], from_dir[str(files["wav"])]]
    reasons = dict(result.skipped)
    assert "empty file" in reasons[str(files["empty"])]
    assert reasons[str(tmp_path / "nope.wav")] == "file not found"

    bad = tmp_path / "bad.tsv"
    bad.write_text("file\tnote\nspeech/a.wav\tx\n")
    with pytest.raises(AudioError, match="bad.tsv: manifest header"):
        scan_audio(bad)


def test_write_skipped_tsv(tmp_path: Path) -> None:
    out = tmp_path / "logs" / "skipped.tsv"
    out.parent.mkdir()
    write_skipped(out, [("/a/b.wav", "empty file (0 bytes)"), ("/c\td.wav", "bad\nreason")])
    assert out.read_text().splitlines() == ["path\treason", "/a/b.wav\tempty file (0 bytes)", "/c d.wav\tbad reason"]
    assert os.listdir(out.parent) == ["skipped.tsv"]


# ---------------------------------------------------------------- bucket batch sampler

LENGTHS = np.random.default_rng(1).integers(2000, 120000, size=301).tolist()


def _epoch(sampler: BucketBatchSampler, epoch: int) -> list[tuple[int, list[int]]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def _sampler(**kwargs) -> BucketBatchSampler:
    options = {"max_batch_samples": 400_000, "max_samples": 50_000, "seed": 3} | kwargs
    return BucketBatchSampler(LENGTHS, **options)


@pytest.mark.parametrize("options", [{}, {"max_batch_size": 4}, {"max_batch_samples": 30_000}, {"shuffle": False}])
def test_sampler_covers_every_index_once_within_budget(options: dict) -> None:
    sampler = _sampler(**options)
    for epoch in (0, 1):
        batches = [indices for _, indices in _epoch(sampler, epoch)]
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
        for b in batches:
            cost = len(b) * min(max(LENGTHS[i] for i in b), sampler.max_samples)
            assert len(b) == 1 or cost <= sampler.max_batch_samples
            assert len(b) <= options.get("max_batch_size", len(LENGTHS))
    if options.get("max_batch_samples") == 30_000:
        assert any(len(b) == 1 and LENGTHS[b[0]] > 30_000 for b in batches)
    if options.get("shuffle") is False:
        flat = [min(LENGTHS[i], sampler.max_samples) for b in batches for i in b]
        assert flat == sorted(flat)


def test_sampler_is_deterministic_per_seed_and_epoch() -> None:
    first = _epoch(_sampler(), 0)
    assert first == _epoch(_sampler(), 0)
    assert first != _epoch(_sampler(), 1)
    assert first != _epoch(_sampler(seed=4), 0)
    seeds = [seed for seed, _ in first]
    assert len(set(seeds)) == len(seeds)


def test_sampler_set_start_skips_exactly_the_first_batches() -> None:
    sampler = _sampler()
    full = _epoch(sampler, 3)
    sampler.set_epoch(3)
    sampler.set_start(5)
    assert list(sampler) == full[5:]
    assert len(sampler) == len(full)
    sampler.set_epoch(3)
    assert list(sampler) == full
    with pytest.raises(ValueError, match="batches_done"):
        sampler.set_start(len(full) + 1)


@pytest.mark.parametrize("num_replicas", [2, 3])
def test_sampler_replicas_split_the_same_batch_list(num_replicas: int) -> None:
    single = _epoch(_sampler(), 2)
    per_rank = [_epoch(_sampler(num_replicas=num_replicas, rank=r), 2) for r in range(num_replicas)]
    assert len({len(batches) for batches in per_rank}) == 1
    assert len(per_rank[0]) == len(_sampler(num_replicas=num_replicas))

    interleaved = [batch for group in zip(*per_rank) for batch in group]
    padding = -len(single) % num_replicas
    assert interleaved[: len(single)] == single
    assert [b for _, b in interleaved[len(single) :]] == [b for _, b in single[:padding]]

    covered = sorted(i for batches in per_rank for _, b in batches for i in b)
    assert set(covered) == set(range(len(LENGTHS)))
    rank_sets = [{tuple(b) for _, b in batches} for batches in per_rank]
    repeated = {tuple(b) for _, b in single[:padding]}
    for r in range(num_replicas):
        for q in range(r + 1, num_replicas):
            assert rank_sets[r] & rank_sets[q] <= repeated


# ---------------------------------------------------------------- crop dataset and loader

RAMP_LENGTHS = [12000, 20000, 30000, 45000, 8000]


@pytest.fixture()
def ramp_items(tmp_path: Path) -> list[audio.AudioItem]:
    _write_ramps(tmp_path, RAMP_LENGTHS)
    return scan_audio(tmp_path).items


def test_crop_without_padding_cuts_to_the_shortest(ramp_items) -> None:
    dataset = CropDataset(ramp_items, max_samples=25000)
    batch = dataset[(11, [0, 1, 2, 3])]
    assert batch.waveforms.shape == (4, 12000) and batch.waveforms.dtype == torch.float32
    assert batch.lengths.tolist() == [12000] * 4 and batch.lengths.dtype == torch.int64
    assert batch.paths == [ramp_items[i].path for i in range(4)] and batch.failed == []
    for row, i in zip(batch.waveforms.numpy(), range(4)):
        _crop_offset(row, RAMP_LENGTHS[i])

    again = dataset[(11, [0, 1, 2, 3])]
    assert torch.equal(again.waveforms, batch.waveforms)
    assert not torch.equal(dataset[(12, [0, 1, 2, 3])].waveforms, batch.waveforms)
    assert dataset[(11, [2, 3])].lengths.tolist() == [25000, 25000]


def test_crop_with_padding_reports_lengths(ramp_items) -> None:
    dataset = CropDataset(ramp_items, max_samples=25000, pad=True)
    batch = dataset[(5, [4, 0, 3])]
    expected = [8000, 12000, 25000]
    assert batch.lengths.tolist() == expected
    assert batch.waveforms.shape == (3, 25000)
    for row, length, i in zip(batch.waveforms.numpy(), expected, [4, 0, 3]):
        assert _crop_offset(row[:length], RAMP_LENGTHS[i]) >= 0
        assert not row[length:].any()


def test_crop_normalize_gives_zero_mean_unit_variance(ramp_items) -> None:
    dataset = CropDataset(ramp_items, max_samples=10**6, pad=True, normalize=True)
    batch = dataset[(0, [0, 1, 2])]
    for row, length in zip(batch.waveforms.double(), batch.lengths.tolist()):
        assert abs(row[:length].mean().item()) < 1e-4
        assert abs(row[:length].std(correction=0).item() - 1) < 1e-3


def test_crop_reports_files_broken_after_the_scan(ramp_items) -> None:
    Path(ramp_items[1].path).write_bytes(b"RIFF garbage that is not audio")
    Path(ramp_items[2].path).unlink()
    dataset = CropDataset(ramp_items, max_samples=25000)
    batch = dataset[(0, [0, 1, 2, 3])]
    assert batch.paths == [ramp_items[0].path, ramp_items[3].path]
    assert batch.waveforms.shape == (2, 12000)
    assert [p for p, _ in batch.failed] == [ramp_items[1].path, ramp_items[2].path]
    assert all(reason for _, reason in batch.failed)

    empty = dataset[(0, [1, 2])]
    assert empty.waveforms.shape == (0, 0) and empty.lengths.shape == (0,)
    assert empty.paths == [] and len(empty.failed) == 2


def test_loader_with_workers_matches_single_process(speech_dir: Path) -> None:
    items = scan_audio(speech_dir, min_samples=8000).items
    dataset = CropDataset(items, max_samples=48000, normalize=True)
    sampler = BucketBatchSampler(
        [it.num_samples for it in items], max_batch_samples=200_000, max_samples=48000, seed=7
    )
    serial = make_loader(dataset, sampler)
    parallel = make_loader(dataset, sampler, num_workers=2, prefetch_factor=2)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        expected = list(serial)
        got = list(parallel)
        assert len(got) == len(expected) == len(sampler)
        for a, b in zip(expected, got):
            assert a.paths == b.paths
            assert torch.equal(a.waveforms, b.waveforms)
            assert torch.equal(a.lengths, b.lengths)
    assert sorted(p for batch in expected for p in batch.paths) == sorted(it.path for it in items)


# ---------------------------------------------------------------- synthetic speech


def test_speech_dir_fixture_holds_16k_speech_and_transcripts(speech_dir: Path) -> None:
    wavs = sorted(speech_dir.glob("*.wav"))
    assert len(wavs) == 40
    for path in wavs:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.duration > 0.5
    rows = (speech_dir / "transcripts.tsv").read_text().splitlines()
    assert rows[0] == "path\ttext"
    listed = [row.split("\t") for row in rows[1:]]
    assert sorted(p for p, _ in listed) == [p.name for p in wavs]
    assert all(text.strip() for _, text in listed)

    scanned = scan_audio(speech_dir / "transcripts.tsv")
    assert len(scanned.items) == 40 and scanned.skipped == []


def test_synthesize_corpus_is_idempotent(speech_dir: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in speech_dir.glob("*.wav")}
    paths = synthesize_corpus(speech_dir, num_utterances=40, seed=0)
    assert sorted(paths) == sorted(before)
    assert {p: p.stat().st_mtime_ns for p in paths} == before


def test_synthesize_corpus_names_missing_programs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"espeak-ng, flite.*apt-get install espeak-ng flite"):
        synthesize_corpus(tmp_path / "out", num_utterances=2)
    with pytest.raises(ValueError, match="engines"):
        synthesize_corpus(tmp_path / "out", engines=("say",))


def test_held_out_splits_share_no_sentence_and_no_voice_with_training(tmp_path: Path) -> None:
    """dev and test speak grammar sentences that training never speaks, in voices it never hears, and
    dev and test share no sentence; the manifests point at the files."""
    from wavssl.data.synth import ENGINES, plan_utterance

    plans = {split: [plan_utterance(i, 0, ENGINES, split) for i in range(n)]
             for split, n in (("train", 2000), ("dev", 200), ("test", 200))}
    sentences = {split: {u.text for u in plan} for split, plan in plans.items()}
    voices = {split: {u.voice for u in plan} for split, plan in plans.items()}
    train_parts = {part.strip().rstrip(".") for text in sentences["train"] for part in text.split(".") if part.strip()}
    for held_out in ("dev", "test"):
        assert not {t.rstrip(".") for t in sentences[held_out]} & train_parts
        assert not voices[held_out] & voices["train"]
        assert len(sentences[held_out]) > 150  # mostly distinct sentences
    assert not sentences["dev"] & sentences["test"]
    assert {u.engine for u in plans["test"]} == {"espeak-ng"} and {u.engine for u in plans["train"]} == set(ENGINES)

    synthesize_corpus(tmp_path, num_utterances=2, dev=2, test=2)
    for manifest, folder in (("dev.tsv", "dev"), ("test.tsv", "test")):
        rows = (tmp_path / manifest).read_text().splitlines()
        assert rows[0] == "path\ttext" and len(rows) == 3
        assert all((tmp_path / row.split("\t")[0]).is_file() and row.startswith(f"{folder}/") for row in rows[1:])
    assert len((tmp_path / "transcripts.tsv").read_text().splitlines()) == 3


def test_one_manifest_rule_set_for_training_and_runtime(tmp_path: Path) -> None:
    """``wavssl_onnx.manifest.read_manifest`` is the parser of every TSV manifest: byte-order mark,
    any column order, extra columns, blank lines, CRLF, short rows, quotes kept as text."""
    from wavssl_onnx.manifest import read_manifest

    absolute = tmp_path / "elsewhere" / "b.wav"
    tsv = tmp_path / "sub" / "m.tsv"
    tsv.parent.mkdir()
    tsv.write_bytes("\ufeffNote\tText\tPath\r\nx\t\"quoted\" words\ta.wav\r\n\r\n\t \t\ny\tshort\n"
                    f"z\tabs\t{absolute}\n".encode())
    rows = read_manifest(tsv, text=True)
    assert [(r.where.rsplit(":", 1)[1], r.path, r.text) for r in rows] == [
        ("2", str(tsv.parent.absolute() / "a.wav"), '"quoted" words'), ("5", "", "short"), ("6", str(absolute), "abs")]
    assert [r.text for r in read_manifest(tsv)] == [r.text for r in rows]
    (tmp_path / "paths.tsv").write_text("path\na.wav\n")
    assert read_manifest(tmp_path / "paths.tsv")[0].text == ""
    with pytest.raises(AudioError, match=r"paths.tsv: manifest header must name 'path' and 'text' columns"):
        read_manifest(tmp_path / "paths.tsv", text=True)
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(AudioError, match=r"empty.tsv: manifest header must name 'path' column, got '<empty file>'"):
        read_manifest(tmp_path / "empty.tsv")


def test_write_audio_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``wavssl_onnx.audio.write_audio`` (synth corpus, recipes) replaces a file in one rename: no
    temporary file stays, and a write that fails leaves the old file as it was."""
    from wavssl_onnx.audio import write_audio

    wave = np.sin(np.linspace(0, 100, 1600)).astype(np.float32) * 0.5
    target = write_audio(tmp_path / "a.flac", wave, 16000, format="FLAC")
    back, rate = sf.read(target, dtype="float32")
    assert rate == 16000 and np.abs(back - wave).max() < 1e-4 and [p.name for p in tmp_path.iterdir()] == ["a.flac"]
    import wavssl_onnx.fileio

    def failing_fsync(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(wavssl_onnx.fileio.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk gone"):
        write_audio(target, np.zeros(800, np.float32), 16000, format="FLAC")
    assert np.array_equal(sf.read(target, dtype="float32")[0], back) and len(list(tmp_path.iterdir())) == 1


def test_one_standardisation_for_training_and_the_exported_graph() -> None:
    """Per-utterance standardisation is ``wavssl_onnx.audio.standardize`` (training, PyTorch
    inference); the exported graph's in-graph version uses the same variance floor and agrees."""
    import torch
    from wavssl.onnx_graph import NORMALIZE_EPS, standardize as graph_standardize
    from wavssl_onnx.audio import STANDARDIZE_EPS, standardize

    assert NORMALIZE_EPS == STANDARDIZE_EPS
    rng = np.random.default_rng(3)
    waves = [rng.normal(0.1, 0.3, 700).astype(np.float32), np.full(400, 1e-6, np.float32)]  # loud; near silent
    batch = np.zeros((2, 700), np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    graph = graph_standardize(torch.from_numpy(batch), torch.tensor([700, 400])).numpy()
    for i, w in enumerate(waves):
        np.testing.assert_allclose(graph[i, : len(w)], standardize(w), atol=1e-4)
        assert not graph[i, len(w):].any()


def test_one_pad_stack_and_length_grouping() -> None:
    """``wavssl_onnx.batching``: the padding and length grouping of the runtime and training."""
    from wavssl_onnx.batching import group_by_budget, pad_stack

    batch, lengths = pad_stack([np.ones((2, 3)), np.full((2, 5), 2.0)])
    assert batch.shape == (2, 2, 5) and batch.dtype == np.float32 and lengths.tolist() == [3, 5]
    assert batch[0, :, 3:].sum() == 0 and (batch[1] == 2).all()
    frames, counts = pad_stack([np.ones((4, 3)), np.ones((1, 3))], axis=0, size=6)
    assert frames.shape == (2, 6, 3) and counts.tolist() == [4, 1] and frames[1, 1:].sum() == 0
    assert pad_stack([])[0].shape == (0, 0)
    sizes = [5, 1, 3, 3, 9]
    order = np.argsort(sizes, kind="stable")
    assert group_by_budget(order, sizes, 10, None) == [[1, 2, 3], [0], [4]]
    assert group_by_budget(order, sizes, None, 2) == [[1, 2], [3, 0], [4]]


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[np.argmax(spectrum)])


def test_speed_perturbation_changes_tempo_and_pitch_together() -> None:
    rate, tone = 16000, _tone(16000, 16000, freq=1000.0)
    seen: dict[int, float] = {}
    rng = np.random.default_rng(0)
    for _ in range(40):
        out = perturb(tone, rng, sample_rate=rate, speed=0.1)
        assert out.dtype == np.float32
        seen[out.shape[0]] = _peak_hz(out, rate)
    # 1 s at 0.9x / 1x / 1.1x speed: the 1 kHz tone lasts longer and drops, or shortens and rises
    assert sorted(seen) == [14545, 16000, 17778]
    assert abs(seen[17778] - 900) < 5 and abs(seen[16000] - 1000) < 5 and abs(seen[14545] - 1100) < 5


def test_gain_perturbation_stays_within_its_decibels_and_off_draws_nothing() -> None:
    tone = _tone(4000, 16000)
    rng = np.random.default_rng(1)
    gains = [20 * np.log10(np.abs(perturb(tone, rng, sample_rate=16000, gain_db=6.0)).max() / np.abs(tone).max())
             for _ in range(200)]
    assert -6.0 <= min(gains) < -4.0 and 4.0 < max(gains) <= 6.0
    rng, ref = np.random.default_rng(2), np.random.default_rng(2)
    assert perturb(tone, rng, sample_rate=16000) is tone
    assert rng.integers(1 << 30) == ref.integers(1 << 30)


def test_crop_dataset_perturbs_reproducibly_per_batch_seed(ramp_items) -> None:
    plain = CropDataset(ramp_items, max_samples=10**6, pad=True)
    dataset = CropDataset(ramp_items, max_samples=10**6, pad=True, speed_perturb=0.1, gain_perturb_db=3.0)
    lengths = {tuple(dataset[(seed, [0, 1, 2])].lengths.tolist()) for seed in range(12)}
    expected = [plain[(0, [i])].lengths.item() for i in range(3)]
    assert len(lengths) > 3 and all(
        any(abs(n - round(e / f)) <= 1 for f in (0.9, 1.0, 1.1)) for row in lengths for n, e in zip(row, expected))
    assert torch.equal(dataset[(7, [0, 1, 2])].waveforms, dataset[(7, [0, 1, 2])].waveforms)
