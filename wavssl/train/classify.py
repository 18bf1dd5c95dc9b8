"""Sequence classification on top of the shared encoder: task, fitting, metrics, fine-tuning runs.

- :class:`ClassifyTask` is what the :class:`~wavssl.train.trainer.Trainer` runs for ``task =
  "classify"``; :func:`fit_classifier` runs the same task (same batches, same loss, same freezing
  schedule, same optimiser and learning-rate schedule) in a lean loop without checkpoints, logs or
  progress bar, for the many short fits of a few-label study.
- :func:`finetune` is the library form of ``wavssl finetune RUN --task classify``; :func:`evaluate`
  of ``wavssl evaluate``.

While the encoder is frozen (linear probe, or the first ``classify.freeze_updates`` updates) it is
deterministic, so the task computes its frame states once and trains the head on them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from wavssl_onnx.fileio import atomic_write_text

from ..config import Config, SensorFrontend, finetune_config
from ..data.sensor import (
    SensorBatch,
    SensorDataError,
    SeriesSet,
    batch_order,
    check_series,
    collate,
    label_names,
    random_time_stretch,
)
from ..models import Encoder, SequenceClassifier, build_classifier
from ..modules.frontend import SensorEncoder, as_frontend
from .checkpoint import load, load_config, save_model, write_labels_file
from .trainer import Distributed, StepOutput, Trainer, TrainerState, resolve_device

_CACHE_MAX_ELEMENTS = 1 << 26
"""Frozen frame states are cached when they take at most this many floats (256 MiB)."""


# ------------------------------------------------------------------------------------------ metrics


@dataclass
class ClassificationMetrics:
    """Scores of predictions against true classes."""

    accuracy: float
    """Fraction correct."""
    macro_f1: float
    """Unweighted mean of per-class F1 over the classes that occur in the truth or the predictions."""
    count: int
    """Number of scored items (recordings)."""
    per_class_f1: dict[str, float]
    """F1 of every class that occurs in the truth or the predictions."""
    confusion: list[list[int]]
    """(K, K) counts, rows = true class, columns = predicted class, in label order."""


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> ClassificationMetrics:
    """Accuracy, macro-F1 and the confusion matrix of class-index arrays ``truth`` and ``predicted`` (N,)."""
    k = len(names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    tp = np.diag(confusion).astype(np.float64)
    support, guessed = confusion.sum(1), confusion.sum(0)
    present = (support + guessed) > 0
    f1 = np.where(present, 2 * tp / np.maximum(support + guessed, 1), 0.0)
    return ClassificationMetrics(
        accuracy=float(tp.sum() / max(len(truth), 1)),
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        count=int(len(truth)),
        per_class_f1={names[i]: float(f1[i]) for i in range(k) if present[i]},
        confusion=confusion.tolist(),
    )


def class_indices(data: SeriesSet, names: list[str], where: str) -> list[int]:
    """Class index of every series; a label outside ``names`` raises SensorDataError."""
    if data.labels is None:
        raise SensorDataError(f"{where}: no labels (use a .ts file with class labels, an .npz with 'y', "
                              f"or pass a labels CSV/TSV)")
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({lab for lab in data.labels if lab not in index})
    if unknown:
        raise SensorDataError(f"{where}: label(s) {unknown[:5]} are not among the classifier's classes {names}")
    return [index[lab] for lab in data.labels]


def classification_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy of (B, K) logits against (B,) class indices."""
    loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    return loss, (logits.argmax(-1) == targets).float().mean()


# ------------------------------------------------------------------------------------------ task


@dataclass
class ClassifyBatch:
    """Labelled batch with the dataset positions of its items (for cached frozen features)."""

    batch: SensorBatch
    """The padded series and their targets."""
    indices: np.ndarray
    """(B,) positions of the items in the task's data."""


class ClassifyTask:
    """Fine-tune a :class:`~wavssl.models.SequenceClassifier` on labelled series.

    Batches of ``data.batch_size`` series (all of them when fewer) are a pure function of
    (seed, epoch, position). The encoder is frozen for a linear probe and for the first
    ``classify.freeze_updates`` updates.
    """

    def __init__(self, data: SeriesSet, names: list[str], cfg: Config, *, where: str = "training data") -> None:
        self.data, self.names, self.cfg = data, names, cfg
        self.targets = class_indices(data, names, where)
        self.lengths = data.lengths
        self._cache: tuple[Tensor, Tensor] | None = None

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.data) / self.cfg.data.batch_size)

    def batches(self, epoch: int, start: int) -> Iterator[ClassifyBatch]:
        order = batch_order(self.lengths, self.cfg.data.batch_size, seed=self.cfg.train.seed, epoch=epoch)
        stretch = self.cfg.classify.time_stretch
        for position, idx in enumerate(order[start:], start):  # stretched as a pure function of the position
            series = random_time_stretch([self.data.series[i] for i in idx], stretch,
                                         (self.cfg.train.seed, epoch, position, 1))
            yield ClassifyBatch(collate(series, [self.targets[i] for i in idx]), idx)

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        c = self.cfg.classify
        frozen = c.linear_probe or num_updates < c.freeze_updates
        if frozen != model.encoder_frozen:
            model.set_encoder_frozen(frozen)  # type: ignore[operator]
        if not frozen:
            self._cache = None

    def _frozen_states(self, model: SequenceClassifier, device: torch.device) -> tuple[Tensor, Tensor] | None:
        """(N, F, E) frame states and (N, F) padding mask of every series, computed once; None if too big."""
        if self._cache is None:
            frames = int(as_frontend(model.encoder.frontend).output_lengths(torch.as_tensor(self.lengths)).max())
            width = model.state_dim
            if len(self.data) * frames * width > _CACHE_MAX_ELEMENTS:
                return None
            states = torch.zeros(len(self.data), frames, width, device=device)
            padding = torch.ones(len(self.data), frames, dtype=torch.bool, device=device)
            with torch.no_grad():
                for idx in batch_order(self.lengths, 256, seed=0, epoch=0):
                    b = collate([self.data.series[i] for i in idx])
                    h, pad = model.represent(b.series.to(device), b.lengths.to(device))
                    states[idx, : h.shape[1]] = h.float()
                    padding[idx, : h.shape[1]] = pad
            self._cache = (states, padding)
        return self._cache

    def step(self, model: nn.Module, batch: ClassifyBatch, device: torch.device) -> StepOutput | None:
        clf = cast(SequenceClassifier, getattr(model, "module", model))  # unwrapped from DDP
        targets = batch.batch.targets.to(device)  # type: ignore[union-attr]
        cached = self._frozen_states(clf, device) if clf.encoder_frozen else None
        if cached is not None:
            idx = torch.as_tensor(batch.indices, device=device)
            out = clf.head(cached[0][idx], cached[1][idx])
        else:
            out = model(batch.batch.series.to(device), batch.batch.lengths.to(device))
        loss, accuracy = classification_loss(out.logits, targets, self.cfg.classify.label_smoothing)
        seconds = float(batch.batch.lengths.sum()) / self.cfg.model.frontend.sample_rate
        return StepOutput(loss=loss, metrics={"accuracy": accuracy},
                          weight=torch.tensor(float(len(batch.indices)), device=device), seconds=seconds)


# ------------------------------------------------------------------------------------------ fitting


@torch.no_grad()
def pooled_features(model: SequenceClassifier, data: SeriesSet, *, batch_size: int = 256,
                    device: torch.device | str = "cpu") -> Tensor:
    """(N, D) pooled vectors of every series (before the head's standardisation), encoder in eval mode."""
    was_training = model.training
    model.to(device).eval()
    out: Tensor | None = None
    for idx in batch_order(data.lengths, batch_size, seed=0, epoch=0):
        b = collate([data.series[i] for i in idx])
        pooled = model.pooled(*model.represent(b.series.to(device), b.lengths.to(device))).float()
        if out is None:
            out = torch.zeros(len(data), pooled.shape[1], device=device)
        out[torch.as_tensor(idx, device=device)] = pooled
    model.train(was_training)
    assert out is not None, "no series"
    return out


def fit_logistic_head(model: SequenceClassifier, data: SeriesSet, names: list[str], cfg: Config, *,
                      device: torch.device | str = "cpu") -> float:
    """Fit the head as an L2-regularised multinomial logistic regression on frozen features.

    The pooled vectors of ``data`` (encoder in eval mode: no dropout, no masking) set the head's
    standardisation (its BatchNorm running mean and variance), and the linear layer minimises
    ``sum_i CE(W z_i + b, y_i) + classify.probe_l2 / 2 * ||W||^2`` over the standardised vectors
    z_i, by L-BFGS in float64 (convex: the optimum does not depend on the start). Returns the
    training accuracy.
    """
    targets = torch.as_tensor(class_indices(data, names, "training data"), device=device)
    x = pooled_features(model, data, device=device).double()
    mean, var = x.mean(0), x.var(0, unbiased=False)
    z = (x - mean) / torch.sqrt(var + model.norm.eps)
    k = model.num_classes
    w = torch.zeros(k, z.shape[1], dtype=torch.float64, device=device, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, device=device, requires_grad=True)
    lam = cfg.classify.probe_l2
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, targets, reduction="sum") + 0.5 * lam * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    assert model.norm.running_mean is not None and model.norm.running_var is not None  # tracked statistics
    with torch.no_grad():
        model.norm.running_mean.copy_(mean.float())
        model.norm.running_var.copy_(var.float())
        model.classifier.weight.copy_(w.float())
        model.classifier.bias.copy_(b.float())
        return float(((z @ w.T + b).argmax(1) == targets).double().mean())


def fit_classifier(model: SequenceClassifier, data: SeriesSet, names: list[str], cfg: Config, *,
                   device: torch.device | str = "cpu") -> TrainerState:
    """Train ``model`` on ``data`` with ``cfg`` (a ``classify`` configuration,
    :func:`wavssl.config.finetune_config`) in memory: the :class:`ClassifyTask` run by the
    :class:`~wavssl.train.trainer.Trainer` without a run directory (its seeding, optimiser, schedule,
    clipping and skipping of non-finite steps; no checkpoints or logs). With
    ``classify.head_init = "logistic"`` the head is first fitted by :func:`fit_logistic_head`.
    Returns the counters; the model is left in eval mode."""
    device = torch.device(device)
    if cfg.classify.head_init == "logistic":
        fit_logistic_head(model, data, names, cfg, device=device)
    state = TrainerState()
    if cfg.optim.max_updates > 0:
        state = Trainer(model, ClassifyTask(data, names, cfg), cfg, None, device=device, progress=False).train()
    model.eval()
    return state


@torch.no_grad()
def predict_log_probs(model: SequenceClassifier, data: SeriesSet, *, batch_size: int = 256,
                      device: torch.device | str = "cpu") -> np.ndarray:
    """(N, K) log-probabilities of every series (model in eval mode)."""
    model.to(device).eval()
    out = np.zeros((len(data), model.num_classes), dtype=np.float32)
    for idx in batch_order(data.lengths, batch_size, seed=0, epoch=0):
        b = collate([data.series[i] for i in idx])
        logits = model(b.series.to(device), b.lengths.to(device)).logits
        out[idx] = torch.log_softmax(logits.float(), -1).cpu().numpy()
    return out


def score(model: SequenceClassifier, data: SeriesSet, names: list[str], *, where: str = "test data",
          device: torch.device | str = "cpu") -> ClassificationMetrics:
    """Metrics of ``model`` on labelled ``data``; windows of one recording are scored together
    (their log-probabilities averaged), so counts are per recording."""
    truth = np.array(class_indices(data, names, where))
    log_probs = predict_log_probs(model, data, device=device)
    groups = np.array(data.groups)
    ids, inverse = np.unique(groups, return_inverse=True)
    summed = np.zeros((len(ids), len(names)))
    np.add.at(summed, inverse, log_probs)
    first = np.zeros(len(ids), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(groups))[::-1]
    return classification_metrics(truth[first], summed.argmax(1), names)


# ------------------------------------------------------------------------------------------ runs


def new_classifier(cfg: Config, names: list[str], train: SeriesSet, *, pretrained: nn.Module | None = None,
                   where: str = "the configuration") -> SequenceClassifier:
    """A classifier for ``names``: on a copy of ``pretrained``'s encoder (an SSLModel or SequenceClassifier),
    or on a fresh encoder whose ``global`` normalisation is fitted on ``train``'s series. The data
    must match the encoder's channel count and receptive field (errors name ``where``)."""
    fe = cfg.model.frontend
    encoder = None
    if pretrained is not None:
        assert isinstance(pretrained.encoder, Encoder)
        encoder = copy.deepcopy(pretrained.encoder)  # the source stays untouched
    model = build_classifier(cfg.model, cfg.classify, len(names), encoder=encoder)
    model.class_names = list(names)
    frontend = model.encoder.frontend
    assert isinstance(frontend, SensorEncoder)  # a classifier reads sensor series
    check_series(train, channels=fe.in_channels, min_length=frontend.receptive_field, expected_by=where)
    if encoder is None and isinstance(fe, SensorFrontend) and fe.norm == "global":
        frontend.fit_normalization([torch.from_numpy(s) for s in train.series])
    return model


def finetune(pretrained_run: str | Path, train: SeriesSet, out: str | Path, *, cfg: Config | None = None,
             valid: SeriesSet | None = None, scratch: bool = False, device: str | None = None,
             progress: bool = True) -> ClassificationMetrics | None:
    """Fine-tune a classifier from the pretrained run into ``out`` with the Trainer (checkpoints,
    logs, ``labels.json``); the library form of ``wavssl finetune RUN --task classify``.

    Args:
        pretrained_run: run directory of a pretrained (SSL) model.
        train: labelled series. valid: labelled series scored at the end (metrics returned and
            written to ``out/valid_metrics.json``).
        cfg: the configuration to fine-tune with (default: the run's own with its preset's
            fine-tuning recipe, :func:`wavssl.config.finetune_config`; a pretraining configuration is
            turned into that); the architecture must be the run's.
        scratch: train the same architecture from random initialisation instead.
    """
    out = Path(out)
    base = load_config(pretrained_run)
    cfg = finetune_config(cfg if cfg is not None else base, "classify")
    if cfg.model != base.model:
        raise ValueError(f"{pretrained_run}: the fine-tuning config changes the model architecture; only "
                         f"classify, optim, data and train settings may differ")
    if train.labels is None:
        raise SensorDataError("training data: no labels")
    names = label_names(train.labels)
    torch.manual_seed(cfg.train.seed)
    model = new_classifier(cfg, names, train, pretrained=None if scratch else load(pretrained_run),
                           where=f"the checkpoint {pretrained_run}")
    out.mkdir(parents=True, exist_ok=True)
    write_labels_file(out, names)
    dev = resolve_device(device, Distributed())
    task = ClassifyTask(train, names, cfg)
    if progress:
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"[wavssl] fine-tuning a {len(names)}-class classifier ({n_train / 1e6:.2f}M trainable parameters, "
              f"{'from scratch' if scratch else f'from {pretrained_run}'}) on {len(train)} series -> {out}", flush=True)
    if cfg.classify.head_init == "logistic":
        accuracy = fit_logistic_head(model, train, names, cfg, device=dev)
        if progress:
            print(f"[wavssl] logistic head fitted on frozen features: training accuracy {accuracy:.3f}", flush=True)
    if cfg.optim.max_updates > 0:
        Trainer(model, task, cfg, out, device=dev, progress=progress).train()
    else:
        save_model(out, model.eval(), cfg)
    if valid is None:
        return None
    metrics = score(model, valid, names, where="validation data", device=dev)
    atomic_write_text(out / "valid_metrics.json", json.dumps(dataclasses.asdict(metrics), indent=1) + "\n")
    return metrics
