"""Tasks the Trainer runs: each supplies batches and the per-batch loss.

Pretraining on audio (:class:`PretrainTask`) and on sensor series (:class:`SensorPretrainTask`);
the classifier task lives in :mod:`wavssl.train.classify`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..config import Config, SensorFrontend
from ..data.audio import (
    AudioBatch,
    BucketBatchSampler,
    CropDataset,
    ScanResult,
    batch_seed,
    make_loader,
    sample_waves,
    scan_audio,
    write_skipped,
)
from ..data.sensor import (
    SensorBatch,
    SeriesSet,
    batch_order,
    check_series,
    collate,
    load_series,
    random_time_stretch,
    window,
)
from ..models import MaskSampler, build_model
from ..modules.frontend import FbankEncoder, SensorEncoder, frame_lengths, receptive_field
from ..modules.masking import MaskedFrames
from ..objectives import ObjectiveOutput
from .checkpoint import latest_checkpoint
from .health import RunHealth
from .rundir import RunDirError, refuse_existing_run
from .trainer import Distributed, NoUsableData, StepOutput, Trainer, TrainerState, training_run

__all__ = ["PretrainTask", "RunDirError", "SensorPretrainTask", "pretrain"]



class PretrainTask:
    """wav2vec 2.0 pretraining on a folder (or TSV manifest) of unlabeled audio.

    Files that cannot be used are skipped, counted and listed in ``RUN_DIR/skipped_files.tsv`` —
    at scan time (unreadable, empty, too short) and at load time (decode failures).

    The loader's workers draw every batch's span mask and distractors (:class:`~wavssl.models.MaskSampler`)
    along with its crops, from the batch seed, so the training step does not synchronise with the host.
    """

    def __init__(self, data: ScanResult, cfg: Config, run_dir: str | Path, *, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> None:
        d = cfg.data
        self.cfg, self.run_dir, self.rank = cfg, Path(run_dir), rank
        self.skipped = list(data.skipped)
        if not data.items:
            self._write_skipped()
            raise NoUsableData(f"no usable audio files ({len(data.skipped)} skipped; see the list in "
                               f"{self.skipped_path})")
        self._index = {it.path: i for i, it in enumerate(data.items)}
        self._failed: set[str] = set()
        self.dataset = CropDataset(data.items, sample_rate=d.sample_rate, max_samples=d.max_samples, pad=d.pad,
                                   normalize=d.normalize, speed_perturb=d.speed_perturb,
                                   gain_perturb_db=d.gain_perturb_db, masker=MaskSampler(cfg.model))
        self.sampler = BucketBatchSampler([it.num_samples for it in data.items], max_batch_samples=d.max_batch_samples,
                                          max_samples=d.max_samples, seed=cfg.train.seed, num_replicas=world_size,
                                          rank=rank, max_batch_size=d.max_batch_size or None)
        self.loader = make_loader(self.dataset, self.sampler, num_workers=d.num_workers, pin_memory=pin_memory)
        self.total_seconds = sum(it.num_samples for it in data.items) / d.sample_rate
        self._write_skipped()
        self.health = RunHealth(cfg, run_dir if rank == 0 else None)  # warns when the run leaves the healthy ranges

    @classmethod
    def from_path(cls, audio: str | Path, cfg: Config, run_dir: str | Path, **kwargs: object) -> "PretrainTask":
        """Scan ``audio`` (folder or manifest) with a duration cache in the run directory."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        data = scan_audio(audio, sample_rate=cfg.data.sample_rate, min_samples=cfg.data.min_samples,
                          cache_path=run_dir / "audio_index.json")
        return cls(data, cfg, run_dir, **kwargs)  # type: ignore[arg-type]

    @property
    def skipped_path(self) -> Path:
        """``RUN/skipped_files.tsv``: files left out, with the reason."""
        return self.run_dir / "skipped_files.tsv"

    def _write_skipped(self) -> None:
        if self.rank == 0:
            write_skipped(self.skipped_path, self.skipped)

    def batches_per_epoch(self) -> int:
        return len(self.sampler)

    def _record_failures(self, failed: list[tuple[str, str]]) -> None:
        """List each newly failed file once and leave it out of every later batch; raise
        :class:`~wavssl.train.trainer.NoUsableData` once no file is left."""
        new = [(path, reason) for path, reason in dict(failed).items() if path not in self._failed]
        if not new:
            return
        for path, _ in new:
            self._failed.add(path)
            self.sampler.exclude.add(self._index[path])
        self.skipped.extend(new)
        self._write_skipped()
        if len(self._failed) == len(self.dataset):
            raise NoUsableData(f"no usable audio file left: all {len(self.dataset)} files that passed the scan "
                               f"failed to decode; see the list in {self.skipped_path}")

    def batches(self, epoch: int, start: int) -> Iterator[AudioBatch]:
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(start)
        for batch in self.loader:
            if batch.failed:
                self._record_failures(batch.failed)
            yield batch

    def step(self, model: nn.Module, batch: AudioBatch, device: torch.device) -> StepOutput | None:
        if batch.waveforms.shape[0] == 0:
            return None
        wav = batch.waveforms.to(device, non_blocking=True)
        lengths = _padded_lengths(batch.lengths, wav.shape[-1], device)
        masks = batch.masks.to(device, non_blocking=True) if batch.masks is not None else None
        out = model(wav, lengths, masks)
        metrics = _pretrain_metrics(out, batch.masks, batch.lengths, self.cfg)
        seconds = sum(batch.lengths.tolist()) / self.cfg.data.sample_rate  # host data
        return StepOutput(loss=out.loss, metrics=metrics, weight=out.weight, seconds=seconds)

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        model.set_num_updates(num_updates)  # type: ignore[operator]
        self.health.after_update(num_updates)


def _pretrain_metrics(out: ObjectiveOutput, masks: MaskedFrames | None, lengths: torch.Tensor,
                      cfg: Config) -> dict[str, torch.Tensor]:
    """What a pretraining step logs: the objective's own metrics (wav2vec 2.0: loss terms, accuracy,
    per-group code perplexity, temperature) and the fraction of valid frames masked (read by
    :class:`~wavssl.train.health.HealthMonitor`), from host data (the host-drawn masks and the batch's
    (B,) sample counts), so the step still never waits for the device."""
    metrics = dict(out.metrics())
    if masks is not None:  # host tensors only: no scalar read back, nothing copied to the device here
        frames = frame_lengths(cfg.model.frontend, lengths.cpu()).sum().clamp(min=1).double()
        metrics["masked_fraction"] = masks.index.shape[0] / frames
    return metrics


def _padded_lengths(lengths: torch.Tensor, size: int, device: torch.device) -> torch.Tensor | None:
    """Host ``lengths`` on ``device``, or None when no row is padded (every length is ``size``): the
    model then builds no attention mask, so SDPA may pick its flash kernel (checked on the host,
    so the step stays free of device syncs)."""
    return None if min(lengths.tolist()) == size else lengths.to(device, non_blocking=True)


def fit_log_mel_normalization(frontend: nn.Module, paths: list[str], cfg: Config) -> None:
    """A fresh ``norm = "global"`` log-mel front end gets its band statistics from a seeded draw of
    the run's training files (:func:`~wavssl.data.audio.sample_waves`); any other front end is left
    as it is."""
    if isinstance(frontend, FbankEncoder) and frontend.norm == "global":
        waves = sample_waves(paths, cfg.model.frontend.sample_rate, seed=cfg.train.seed)
        if not waves:
            raise NoUsableData(f"no file drawn from the {len(paths)} training files to fit the log-mel "
                               f"normalisation decodes")
        frontend.fit_normalization([torch.from_numpy(w) for w in waves])


def sensor_receptive_field(cfg: Config) -> int:
    """Shortest series (in samples) the configured sensor front end turns into one frame."""
    fe = cfg.model.frontend
    assert isinstance(fe, SensorFrontend), "a sensor run"
    return receptive_field(tuple((k, s) for _, k, s in fe.conv_layers))


def load_sensor_data(path: str | Path, cfg: Config, *, labels: str | Path | None = None) -> SeriesSet:
    """Series at ``path`` (see :func:`wavssl.data.sensor.load_series`), cut into ``data.window`` windows."""
    data = load_series(path, labels=labels, sample_rate=cfg.model.frontend.sample_rate)
    return window(data, cfg.data.window, cfg.data.hop)


@dataclass
class SensorPretrainBatch:
    """A sensor batch with its pretraining masks (drawn on the host, see :class:`SensorPretrainTask`)."""

    batch: SensorBatch
    masks: MaskedFrames


class SensorPretrainTask:
    """wav2vec 2.0 pretraining on in-memory, unlabelled sensor series (or windows of them).

    Batches of ``data.batch_size`` series, padded to their longest, are a pure function of
    (seed, epoch, position) (:func:`~wavssl.data.sensor.batch_order`), so a resumed run continues
    with exactly the batches it would have seen. Under ``torchrun`` rank r takes batches r, r + W, ...
    Each batch comes with its span mask and distractors, drawn on the host from the batch's seed
    (:class:`~wavssl.models.MaskSampler`), so the training step does not synchronise with the host.
    """

    def __init__(self, data: SeriesSet, cfg: Config, *, rank: int = 0, world_size: int = 1,
                 run_dir: str | Path | None = None) -> None:
        if len(data) == 0:
            raise ValueError("no usable sensor series")
        self.data, self.cfg, self.rank, self.world_size = data, cfg, rank, world_size
        self.lengths = data.lengths
        self.masker = MaskSampler(cfg.model)
        self.total_seconds = float(self.lengths.sum()) / cfg.model.frontend.sample_rate
        self.health = RunHealth(cfg, run_dir if rank == 0 else None)  # warns when the run leaves the healthy ranges

    def fingerprint(self) -> str:
        """Where the series came from and their sizes (ranks of a distributed run must agree)."""
        return "\n".join(f"{src}\t{s.shape}" for src, s in zip(self.data.sources, self.data.series))

    def _order(self, epoch: int) -> list[np.ndarray]:
        order = batch_order(self.lengths, self.cfg.data.batch_size, seed=self.cfg.train.seed, epoch=epoch)
        per_rank = max(len(order) // self.world_size, 1)
        return order[self.rank:: self.world_size][:per_rank]

    def batches_per_epoch(self) -> int:
        return len(self._order(0))

    def batches(self, epoch: int, start: int) -> Iterator[SensorPretrainBatch]:
        for i, idx in enumerate(self._order(epoch)[start:], start):
            position = i * self.world_size + self.rank  # the trainer's position
            batch = collate(random_time_stretch([self.data.series[j] for j in idx], self.cfg.data.time_stretch,
                                                (self.cfg.train.seed, epoch, position, 2)))
            seed = batch_seed(self.cfg.train.seed, epoch, position)
            yield SensorPretrainBatch(batch, self.masker(batch.lengths, batch.series.shape[-1], seed))

    def step(self, model: nn.Module, item: SensorPretrainBatch, device: torch.device) -> StepOutput | None:
        batch = item.batch
        out = model(batch.series.to(device, non_blocking=True),
                    _padded_lengths(batch.lengths, batch.series.shape[-1], device),
                    item.masks.to(device, non_blocking=True))
        metrics = _pretrain_metrics(out, item.masks, batch.lengths, self.cfg)
        seconds = sum(batch.lengths.tolist()) / self.cfg.model.frontend.sample_rate  # host data
        return StepOutput(loss=out.loss, metrics=metrics, weight=out.weight, seconds=seconds)

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        model.set_num_updates(num_updates)  # type: ignore[operator]
        self.health.after_update(num_updates)


def _sensor_pretraining(path: str | Path, cfg: Config, run_dir: Path, *, resumed: bool,
                        is_main: bool) -> tuple[Config, SeriesSet]:
    """Load the series; a fresh run adopts their channel count, a resumed run must match it.
    Series shorter than the receptive field are skipped and listed in ``RUN/skipped_files.tsv``."""
    data = load_sensor_data(path, cfg)
    if resumed:
        check_series(data, channels=cfg.model.frontend.in_channels, min_length=1, expected_by=f"the run {run_dir}")
    elif data.channels != cfg.model.frontend.in_channels:
        assert isinstance(cfg.model.frontend, SensorFrontend), "a sensor run"
        frontend = dataclasses.replace(cfg.model.frontend, in_channels=data.channels)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, frontend=frontend))
    need = sensor_receptive_field(cfg)
    short = [i for i, n in enumerate(data.lengths) if n < need]
    if is_main:
        write_skipped(run_dir / "skipped_files.tsv",
                      [(data.sources[i], f"{data.lengths[i]} steps, fewer than the receptive field of {need}")
                       for i in short])
    keep = [i for i in range(len(data)) if data.lengths[i] >= need]
    if not keep:
        raise ValueError(f"{path}: no series has the front end's receptive field of {need} samples "
                         f"(model.frontend.conv_layers); see {run_dir / 'skipped_files.tsv'}")
    return cfg, data.subset(keep)


def pretrain(audio: str | Path, run_dir: str | Path, cfg: Config, *, resume: bool = False,
             device: str | None = None, progress: bool = True) -> TrainerState:
    """Pretrain an SSL model on the data at ``audio`` into ``run_dir`` (library form of ``wavssl pretrain``).

    The modality follows the front end: audio (a folder or TSV manifest) for ``waveform``/``fbank``,
    sensor series (a file or folder, see :mod:`wavssl.data.sensor`) for ``sensor``. A fresh sensor
    run takes its channel count from the data and fits the ``global`` normalisation on it.

    Launched by ``torchrun``, every rank calls this; rank 0 writes the run directory. With
    ``resume=True`` training continues from the newest complete checkpoint (and starts fresh if
    there is none); without it, a run directory that already holds checkpoints is refused.
    """
    run_dir = Path(run_dir)
    refuse_existing_run(run_dir, resume)
    cfg.validate()
    with training_run(run_dir, device) as (ddp, dev):
        return _pretrain(audio, run_dir, cfg, ddp, dev, resume=resume, progress=progress)


def _pretrain(audio: str | Path, run_dir: Path, cfg: Config, ddp: Distributed, dev: torch.device, *, resume: bool,
              progress: bool) -> TrainerState:
    """:func:`pretrain` once the device is chosen and the run directory is locked."""
    task: PretrainTask | SensorPretrainTask
    if cfg.model.frontend.kind == "sensor":
        run_dir.mkdir(parents=True, exist_ok=True)
        resumed = resume and latest_checkpoint(run_dir) is not None
        cfg, series = _sensor_pretraining(audio, cfg, run_dir, resumed=resumed, is_main=ddp.is_main)
        task = SensorPretrainTask(series, cfg, rank=ddp.rank, world_size=ddp.world_size, run_dir=run_dir)
        what = (f"{len(series)} series ({series.channels} channels, {int(series.lengths.sum())} steps, "
                f"{series.num_missing} missing values)")
    else:
        task = PretrainTask.from_path(audio, cfg, run_dir, rank=ddp.rank, world_size=ddp.world_size,
                                      pin_memory=dev.type == "cuda")
        what = f"{len(task.dataset)} files ({task.total_seconds / 3600:.2f} h, {len(task.skipped)} skipped)"
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    frontend = model.encoder.frontend
    if isinstance(task, SensorPretrainTask) and isinstance(frontend, SensorEncoder) \
            and isinstance(cfg.model.frontend, SensorFrontend) and cfg.model.frontend.norm == "global":
        frontend.fit_normalization([torch.from_numpy(s) for s in task.data.series])
    elif isinstance(task, PretrainTask):
        fit_log_mel_normalization(frontend, [it.path for it in task.dataset.items], cfg)
    trainer = Trainer(model, task, cfg, run_dir, device=dev, ddp=ddp, progress=progress)
    if resume and trainer.resume() and ddp.is_main:
        print(f"[wavssl] resumed {run_dir} at update {trainer.state.num_updates}", flush=True)
    elif ddp.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"[wavssl] pretraining {n_params / 1e6:.2f}M parameters on {what} -> {run_dir}", flush=True)
    state = trainer.train()
    task.health.follow()  # the last window
    return state
