"""Tasks the Trainer runs: each supplies batches and the per-batch loss."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..config import Config
from ..data.audio import AudioBatch, BucketBatchSampler, CropDataset, ScanResult, make_loader, scan_audio, write_skipped
from .trainer import StepOutput, TrainerState


class PretrainTask:
    """wav2vec 2.0 pretraining on a folder (or TSV manifest) of unlabeled audio.

    Files that cannot be used are skipped, counted and listed in ``RUN_DIR/skipped_files.tsv`` —
    at scan time (unreadable, empty, too short) and at load time (decode failures).
    """

    def __init__(self, data: ScanResult, cfg: Config, run_dir: str | Path, *, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> None:
        if not data.items:
            raise ValueError(f"no usable audio files ({len(data.skipped)} skipped; see the list in {run_dir})")
        d = cfg.data
        self.cfg, self.run_dir, self.rank = cfg, Path(run_dir), rank
        self.skipped = list(data.skipped)
        self.dataset = CropDataset(data.items, sample_rate=d.sample_rate, max_samples=d.max_samples, pad=d.pad,
                                   normalize=d.normalize)
        self.sampler = BucketBatchSampler([it.num_samples for it in data.items], max_batch_samples=d.max_batch_samples,
                                          max_samples=d.max_samples, seed=cfg.train.seed, num_replicas=world_size,
                                          rank=rank, max_batch_size=d.max_batch_size or None)
        self.loader = make_loader(self.dataset, self.sampler, num_workers=d.num_workers, pin_memory=pin_memory)
        self.total_seconds = sum(it.num_samples for it in data.items) / d.sample_rate
        self._write_skipped()

    @classmethod
    def from_path(cls, audio: str | Path, cfg: Config, run_dir: str | Path, **kwargs: object) -> "PretrainTask":
        """Scan ``audio`` (folder or manifest) with a duration cache in the run directory."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        data = scan_audio(audio, sample_rate=cfg.data.sample_rate, min_samples=cfg.data.min_samples,
                          cache_path=run_dir / "audio_index.json")
        return cls(data, cfg, run_dir, **kwargs)  # type: ignore[arg-type]

    def _write_skipped(self) -> None:
        if self.rank == 0:
            write_skipped(self.run_dir / "skipped_files.tsv", self.skipped)

    def batches_per_epoch(self) -> int:
        return len(self.sampler)

    def batches(self, epoch: int, start: int) -> Iterator[AudioBatch]:
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(start)
        for batch in self.loader:
            if batch.failed:
                self.skipped.extend(batch.failed)
                self._write_skipped()
            yield batch

    def step(self, model: nn.Module, batch: AudioBatch, device: torch.device) -> StepOutput | None:
        if batch.waveforms.shape[0] == 0:
            return None
        wav = batch.waveforms.to(device, non_blocking=True)
        lengths = batch.lengths.to(device, non_blocking=True)
        out = model(wav, lengths)
        metrics = {k: getattr(out, k) for k in ("contrastive", "diversity", "feature_penalty", "accuracy",
                                                "prob_perplexity", "code_perplexity")}
        seconds = float(batch.lengths.sum()) / self.cfg.data.sample_rate
        return StepOutput(loss=out.loss, metrics=metrics, weight=out.num_masked, seconds=seconds)

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        model.set_num_updates(num_updates)  # type: ignore[operator]


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (e.g. it holds a run and --resume was not given)."""


def pretrain(audio: str | Path, run_dir: str | Path, cfg: Config, *, resume: bool = False,
             device: str | None = None, progress: bool = True) -> TrainerState:
    """Pretrain an SSL model on the audio at ``audio`` into ``run_dir`` (library form of ``wavssl pretrain``).

    Launched by ``torchrun``, every rank calls this; rank 0 writes the run directory. With
    ``resume=True`` training continues from the newest complete checkpoint (and starts fresh if
    there is none); without it, a run directory that already holds checkpoints is refused.
    """
    from ..models import build_model
    from .checkpoint import latest_checkpoint
    from .trainer import Trainer, init_distributed, resolve_device

    run_dir = Path(run_dir)
    if not resume and latest_checkpoint(run_dir) is not None:
        raise RunDirError(f"{run_dir} already holds checkpoints: pass --resume to continue it, or choose another --out")
    cfg.validate()
    ddp = init_distributed("cuda" if (device in (None, "auto", "cuda") and torch.cuda.is_available()) else "cpu")
    dev = resolve_device(device, ddp)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    task = PretrainTask.from_path(audio, cfg, run_dir, rank=ddp.rank, world_size=ddp.world_size,
                                  pin_memory=dev.type == "cuda")
    trainer = Trainer(model, task, cfg, run_dir, device=dev, ddp=ddp, progress=progress)
    if resume and trainer.resume() and ddp.is_main:
        print(f"[wavssl] resumed {run_dir} at update {trainer.state.num_updates}", flush=True)
    elif ddp.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"[wavssl] pretraining {n_params / 1e6:.2f}M parameters on {len(task.dataset)} files "
              f"({task.total_seconds / 3600:.2f} h, {len(task.skipped)} skipped) -> {run_dir}", flush=True)
    try:
        return trainer.train()
    finally:
        if ddp.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
