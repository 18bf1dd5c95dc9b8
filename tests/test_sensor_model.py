"""Sensor model: shared classes with speech, front-end handling of NaNs / constant channels / short
series, pretraining steps on CPU, the classifier and its freezing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wavssl import config as C
from wavssl import losses, models, objectives
from wavssl.data.sensor import SeriesSet, SensorDataError, collate
from wavssl.models import Encoder, SequenceClassifier, build_classifier, build_model
from wavssl.modules.context import ContextEncoder
from wavssl.modules.frontend import SensorEncoder, interpolate_gaps, robust_center_scale
from wavssl.modules.quantizer import GumbelQuantizer
from wavssl.train.classify import (ClassifyTask, fit_classifier, new_classifier, pooled_features,
                                   score)
from wavssl.train.pretraining import SensorPretrainTask, pretrain


def _series(n: int = 24, channels: int = 3, seed: int = 0) -> SeriesSet:
    """Sinusoids whose frequency depends on the class (2 classes), lengths 20..40, plus noise."""
    rng = np.random.default_rng(seed)
    out, labels = [], []
    for i in range(n):
        t = np.arange(rng.integers(20, 41))
        freq = 0.08 if i % 2 == 0 else 0.2
        phase = rng.uniform(0, 6.3, size=(channels, 1))
        out.append((np.sin(2 * np.pi * freq * t + phase) + 0.1 * rng.normal(size=(channels, len(t)))).astype(np.float32))
        labels.append("slow" if i % 2 == 0 else "fast")
    return SeriesSet(out, labels, [f"gen[{i}]" for i in range(n)], list(range(n)))


def _cfg(*sets: str) -> C.Config:
    return C.resolve("sensor-tiny", assignments=["model.frontend.in_channels=3", "train.tensorboard=false", *sets])


def _ft(*sets: str) -> C.Config:
    """A classifier run's config: the sensor-tiny recipe with ``sets`` over it."""
    return C.merge(C.finetune_config(_cfg(), "classify"), C.parse_set(list(sets))).validate()


def test_sensor_and_speech_models_share_classes() -> None:
    speech = build_model(C.preset("tiny").model)
    sensor = build_model(_cfg().model)
    assert type(sensor) is type(speech) is models.SSLModel
    assert type(sensor.encoder) is type(speech.encoder) is Encoder
    assert type(sensor.encoder.context) is type(speech.encoder.context) is ContextEncoder
    assert type(sensor.quantizer) is type(speech.quantizer) is GumbelQuantizer
    assert isinstance(sensor.encoder.frontend, SensorEncoder)
    calls = []
    real = objectives.wav2vec2_loss  # the wav2vec 2.0 objective's loss

    def spy(*args, **kwargs):  # the very loss function, called by both
        calls.append(kwargs["num_codes"])
        return real(*args, **kwargs)

    objectives.wav2vec2_loss = spy
    try:
        torch.manual_seed(0)
        out_speech = speech(torch.randn(2, 16000))
        batch = collate(_series(4).series)
        out_sensor = sensor(batch.series, batch.lengths)
    finally:
        objectives.wav2vec2_loss = real
    assert type(out_sensor) is type(out_speech) is losses.ContrastiveLoss
    assert len(calls) == 2 and torch.isfinite(out_sensor.loss)


def test_sensor_pretraining_steps_on_cpu(tmp_path: Path) -> None:
    data = _series(32)
    np.savez(tmp_path / "series.npz", *data.series)
    cfg = _cfg("optim.max_updates=4", "data.batch_size=8", "model.frontend.channel_dropout=0.2")
    state = pretrain(tmp_path / "series.npz", tmp_path / "run", cfg, progress=False, device="cpu")
    assert state.num_updates == 4 and state.nonfinite_total == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["update"] == 4 and np.isfinite(log[-1]["loss"])
    model = models.SSLModel(C.load_json(tmp_path / "run" / "config.json").model)
    import wavssl

    loaded = wavssl.load(tmp_path / "run")
    assert isinstance(loaded, type(model)) and isinstance(loaded.encoder.frontend, SensorEncoder)
    # the global normalisation was fitted on the data and travels with the checkpoint
    centre = loaded.encoder.frontend.center
    assert torch.allclose(centre, torch.from_numpy(np.median(np.concatenate(data.series, 1), 1)), atol=0.05)


def test_sensor_batches_resume_exactly() -> None:
    task = SensorPretrainTask(_series(40), _cfg("data.batch_size=6"))
    full = list(task.batches(epoch=3, start=0))
    tail = list(task.batches(epoch=3, start=4))
    assert len(full) == task.batches_per_epoch() and len(tail) == len(full) - 4
    for a, b in zip(full[4:], tail):
        assert torch.equal(a.batch.series, b.batch.series) and torch.equal(a.batch.lengths, b.batch.lengths)
        assert torch.equal(a.masks.mask, b.masks.mask) and torch.equal(a.masks.negatives, b.masks.negatives)
    assert not all(torch.equal(a.masks.mask, b.masks.mask) for a, b in zip(full, list(task.batches(epoch=4, start=0))))


def test_masking_adapts_to_very_short_series() -> None:
    """Series of 7..12 steps (JapaneseVowels is 7..29): the stride-1 front end keeps frames, spans
    of 2, at least one span per series, distractors drawn among few masked frames."""
    torch.manual_seed(0)
    cfg = _cfg("model.frontend.in_channels=12")
    model = build_model(cfg.model).train()
    x = [np.random.default_rng(i).normal(size=(12, n)).astype(np.float32) for i, n in enumerate([7, 8, 12, 9])]
    batch = collate(x)
    out = model(batch.series, batch.lengths)
    assert torch.isfinite(out.loss) and int(out.num_masked) >= 4
    out.loss.backward()


def test_nan_samples_are_masked_and_imputed_never_propagated() -> None:
    torch.manual_seed(0)
    frontend = SensorEncoder(2, ((8, 3, 1),), norm="instance").eval()
    x = torch.randn(1, 2, 30)
    holes = x.clone()
    holes[0, 0, 5:9] = float("nan")
    holes[0, 1, 0] = float("nan")
    holes[0, 1, -1] = float("inf")
    out = frontend(holes, torch.tensor([30]))
    assert torch.isfinite(out.features).all()
    # documented: statistics ignore missing samples, gaps are linearly interpolated (held at the edges)
    observed = torch.isfinite(holes)
    centre, scale = robust_center_scale(holes, observed)
    filled = interpolate_gaps((holes - centre[..., None]) / scale[..., None], observed)
    expected = filled[0, 0, 4] + (filled[0, 0, 9] - filled[0, 0, 4]) * torch.arange(1, 5) / 5
    assert torch.allclose(filled[0, 0, 5:9], expected)
    assert filled[0, 1, 0] == filled[0, 1, 1] and filled[0, 1, -1] == filled[0, 1, -2]
    # a whole-NaN series gives finite features and losses in training too
    cfg = _cfg()
    model = build_model(cfg.model).train()
    batch = collate(_series(4).series)
    batch.series[1] = float("nan")
    assert torch.isfinite(model(batch.series, batch.lengths).loss)


def test_constant_channel_normalises_to_zero() -> None:
    for norm in ("instance", "global"):
        frontend = SensorEncoder(2, ((4, 3, 1),), norm=norm).eval()
        x = torch.stack([torch.randn(50), torch.full((50,), 9.81)])[None]  # a flat (dead or gravity) channel
        frontend.fit_normalization([x[0]])
        observed = torch.ones_like(x, dtype=torch.bool)
        normed = frontend.normalize(x, observed)
        assert torch.equal(normed[0, 1], torch.zeros(50)), norm
        assert torch.isfinite(frontend(x, torch.tensor([50])).features).all()
    # normalisation is robust: a spike does not change the scale much
    centre, scale = robust_center_scale(torch.tensor([[0.0, 1, 2, 3, 4, 5, 6, 7, 1e6]]), torch.ones(1, 9, dtype=torch.bool))
    assert centre.item() == 4.0 and scale.item() < 10


def test_short_series_are_refused_for_classification_and_skipped_in_pretraining(tmp_path: Path) -> None:
    cfg = _cfg("model.frontend.conv_layers=[[16, 5, 2], [16, 3, 2]]")  # receptive field 5 + 2 * 2 = 9
    data = _series(8)
    data.series[3] = data.series[3][:, :6]
    with pytest.raises(SensorDataError, match=r"receptive field of 9 samples.*gen\[3\] \(6 steps\)"):
        new_classifier(C.finetune_config(cfg, "classify"), ["fast", "slow"], data)
    np.savez(tmp_path / "s.npz", *data.series)
    pretrain(tmp_path / "s.npz", tmp_path / "run", C.merge(cfg, C.parse_set(["optim.max_updates=1"])),
             progress=False, device="cpu")
    skipped = (tmp_path / "run" / "skipped_files.tsv").read_text().splitlines()
    assert len(skipped) == 2 and "s.npz[3]" in skipped[1] and "fewer than the receptive field of 9" in skipped[1]


def test_classifier_pooling_freezing_and_fit() -> None:
    cfg = _ft("optim.max_updates=60", "optim.lr=3e-3", "classify.pooling=attention", "classify.freeze_updates=20")
    train, test = _series(24, seed=0), _series(24, seed=1)
    torch.manual_seed(0)
    model = new_classifier(cfg, ["fast", "slow"], train)
    assert isinstance(model, SequenceClassifier)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    task = ClassifyTask(train, ["fast", "slow"], cfg)
    task.on_update(model, 0)
    assert model.encoder_frozen and not model.encoder.training
    fit_classifier(model, train, ["fast", "slow"], cfg)
    assert not model.encoder_frozen  # unfrozen after freeze_updates
    assert any(not torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    metrics = score(model, test, ["fast", "slow"])
    assert metrics.accuracy >= 0.9, metrics

    probe_cfg = _ft("classify.linear_probe=true", "optim.max_updates=10")
    probe = build_classifier(probe_cfg.model, probe_cfg.classify, 2)
    frozen = {k: v.clone() for k, v in probe.encoder.state_dict().items()}
    fit_classifier(probe, train, ["fast", "slow"], probe_cfg)
    assert all(torch.equal(frozen[k], v) for k, v in probe.encoder.state_dict().items())
    assert not any(p.requires_grad for p in probe.encoder.parameters())
    # variable lengths: padding never changes a series' prediction
    probe.eval()
    one = collate([train.series[0]])
    two = collate([train.series[0], np.zeros((3, 60), np.float32)])
    assert torch.allclose(probe(one.series, one.lengths).logits[0], probe(two.series, two.lengths).logits[0], atol=1e-5)


def test_logistic_head_is_the_regularised_optimum_over_all_layers() -> None:
    cfg = _ft("classify.all_layers=true", "classify.pooling=stats", "classify.head_init=logistic",
              "classify.linear_probe=true", "optim.max_updates=0", "classify.probe_l2=2.0")
    train, test = _series(24, seed=0), _series(24, seed=1)
    torch.manual_seed(0)
    model = new_classifier(cfg, ["fast", "slow"], train)
    layers = len(model.encoder.context.layers)
    assert model.state_dim == 64 * (layers + 1)
    frozen = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    fit_classifier(model, train, ["fast", "slow"], cfg)
    assert all(torch.equal(frozen[k], v) for k, v in model.encoder.state_dict().items())
    # the head's standardisation is the training features' mean and variance
    x = pooled_features(model, train).double()
    assert torch.allclose(model.norm.running_mean.double(), x.mean(0), atol=1e-5)
    assert torch.allclose(model.norm.running_var.double(), x.var(0, unbiased=False), rtol=1e-4, atol=1e-6)
    # and (W, b) is the optimum of sum CE + lambda/2 ||W||^2: its gradient vanishes there
    z = ((x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + model.norm.eps))
    w = model.classifier.weight.detach().double().requires_grad_(True)
    b = model.classifier.bias.detach().double().requires_grad_(True)
    y = torch.tensor([["fast", "slow"].index(label) for label in train.labels])
    loss = torch.nn.functional.cross_entropy(z @ w.T + b, y, reduction="sum") + 1.0 * w.pow(2).sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    assert gw.abs().max() < 1e-3 and gb.abs().max() < 1e-3
    assert score(model, test, ["fast", "slow"]).accuracy >= 0.9
    # without it, zero updates is not a fit
    with pytest.raises(C.ConfigError, match="max_updates"):
        _ft("optim.max_updates=0", "classify.head_init=random")


def test_segment_means_follow_time_order_and_ignore_padding() -> None:
    x = torch.arange(10, dtype=torch.float32).view(1, 10, 1).repeat(2, 1, 1)  # frame t has value t
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[1, 6:] = True  # row 1: 6 valid frames
    out = models.segment_means(x, pad, 2)
    assert out.tolist() == [[2.0, 7.0], [1.0, 4.0]]  # halves: 0-4 | 5-9 and 0-2 | 3-5
    short = models.segment_means(x[:1, :1], pad[:1, :1], 3)  # fewer frames than parts: empty parts are 0
    assert short.tolist() == [[0.0, 0.0, 0.0]]
    cfg = _cfg("classify.segments=4", "classify.pooling=mean")
    model = build_classifier(cfg.model, cfg.classify, 2)
    assert model.classifier.in_features == model.state_dim * 5 + 1


def test_fit_classifier_is_the_trainer_without_a_run_directory(tmp_path: Path) -> None:
    """In memory or writing a run directory (logs, checkpoints), the same updates give the same weights;
    nothing is written without one."""
    from wavssl.train.trainer import Trainer, Validation

    cfg = _ft("optim.max_updates=12", "classify.freeze_updates=4", "classify.head_init=random", "data.batch_size=8",
              "train.checkpoint_every=5")
    train = _series(24, seed=0)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(new_classifier(cfg, ["fast", "slow"], train))
    state = fit_classifier(models[0], train, ["fast", "slow"], cfg)
    run = tmp_path / "run"
    Trainer(models[1], ClassifyTask(train, ["fast", "slow"], cfg), cfg, run, device=torch.device("cpu"),
            progress=False).train()
    assert state.num_updates == 12 and (run / "checkpoints").is_dir()
    a, b = models[0].state_dict(), models[1].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="give the Trainer one"):
        Trainer(models[0], ClassifyTask(train, ["fast", "slow"], cfg), cfg, None, device=torch.device("cpu"),
                validation=Validation(run=lambda m: {}, every=1, metric="cer"))
