"""CTC fine-tuning on the shared encoder: the task and ``wavssl finetune`` runs.

- :class:`CTCTask` is what the :class:`~wavssl.train.trainer.Trainer` runs for ``task = "ctc"``:
  whole utterances (never cropped) in length-bucketed batches under a sample budget, CTC loss with
  fp32 log-softmax and ``zero_infinity``, the Transformer frozen for the first
  ``ctc.freeze_updates`` updates.
- :func:`finetune` is ``wavssl finetune RUN --train train.tsv --valid dev.tsv --out ASR``: character
  vocabulary from the training transcripts (``vocab.json``), fairseq's low-resource recipe
  (frozen feature encoder, tri-stage LR, time and channel masking, layer drop), validation every
  ``train.valid_every`` updates keeping the best model by WER or CER in ``ASR/best/`` and, at the end,
  at the top of the run directory.
- Validation scores with :func:`wavssl.recognition.evaluate` (inference lives outside ``train``).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from wavssl_onnx import Vocabulary
from wavssl_onnx.audio import standardize
from wavssl_onnx.fileio import atomic_write_bytes, atomic_write_text
from wavssl_onnx.vocab import VOCAB_FILE

from ..config import Config, architecture, finetune_config
from ..data.audio import AudioError, _pad_to_multiple, batch_seed, perturb, write_skipped
from ..data.text import AudioCache, TranscribedSet, TranscriptBatch, budget_batches, collate_audio, read_transcribed
from ..models import CTCOutput, Encoder, build_encoder, build_recognizer, min_input_samples
from ..modules.frontend import FrontEnd, as_frontend
from ..recognition import evaluate
from .checkpoint import latest_checkpoint, load, load_config
from .pretraining import fit_log_mel_normalization
from .rundir import check_resume_config, refuse_existing_run
from .trainer import Distributed, NoUsableData, StepOutput, Trainer, TrainerState, Validation, training_run

SKIPPED_FILE = "skipped_lines.tsv"
"""Training/validation entries left out of a fine-tuning run, with the reason (in the run directory)."""


def ctc_loss(out: CTCOutput, targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Mean over utterances of the CTC loss (fp32 log-softmax, blank 0, infeasible alignments -> 0).

    targets: (sum L,) concatenated ids; target_lengths: (B,).
    """
    log_probs = out.log_probs().transpose(0, 1)  # (F, B, V)
    loss = F.ctc_loss(log_probs, targets, out.lengths, target_lengths, blank=0, reduction="sum",
                      zero_infinity=True)
    return loss / max(int(target_lengths.shape[0]), 1)


def ctc_frames_needed(ids: Sequence[int]) -> int:
    """Fewest frames a CTC alignment of ``ids`` needs: one per token plus a blank between repeats."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


# ------------------------------------------------------------------------------------------ task


class CTCTask:
    """Fine-tune a :class:`~wavssl.models.CTCModel` on a :class:`~wavssl.data.text.TranscribedSet`.

    Utterances whose transcript cannot be aligned to the frames the front end makes are left out
    (``skipped``); files that fail to decode at load time are dropped from their batch and added to
    ``skipped`` too. Batch ``k`` of rank ``r`` is the epoch's global batch ``k * world_size + r``.

    With ``data.speed_perturb`` / ``data.gain_perturb_db`` each utterance of a batch is perturbed
    (:func:`~wavssl.data.audio.perturb`, draws seeded by the batch's position, so a resumed run
    repeats them); one whose sped-up audio no longer has the frames its transcript needs keeps its
    original speed. Batches are cut as if every utterance were slowed down, so the sample budget holds.
    """

    def __init__(self, data: TranscribedSet, vocab: Vocabulary, cfg: Config, frontend: FrontEnd, *,
                 rank: int = 0, world_size: int = 1, skipped_list: Path | None = None) -> None:
        self.cfg, self.vocab, self.rank, self.world_size = cfg, vocab, rank, world_size
        self.skipped_list = skipped_list
        """Where the run lists skipped entries (named when no utterance is left)."""
        self._failed: set[int] = set()
        frames = frontend.output_lengths(torch.as_tensor(data.lengths)).tolist()
        self.skipped: list[tuple[str, str]] = []
        self.unknown: Counter[str] = Counter()
        keep, self.ids = [], []
        for item, n_frames in zip(data.items, frames):
            ids, unknown = vocab.encode_with_unknown(item.text)
            self.unknown.update(unknown)
            if ctc_frames_needed(ids) > n_frames:
                self.skipped.append((item.where, f"{item.path}: transcript of {len(ids)} tokens does not fit "
                                                  f"{n_frames} frames"))
                continue
            keep.append(item)
            self.ids.append(ids)
        if not keep:
            raise AudioError(data.source, "no utterance whose transcript fits its audio")
        self.data = TranscribedSet(keep, data.skipped, data.source)
        self.frontend = frontend
        self.cache = AudioCache(cfg.model.frontend.sample_rate, normalize=cfg.data.normalize)

    @property
    def total_seconds(self) -> float:
        return float(self.data.lengths.sum()) / self.cfg.model.frontend.sample_rate

    def fingerprint(self) -> str:
        """What every DDP rank must agree on."""
        return f"{len(self.data)}:{int(self.data.lengths.sum())}:{len(self.vocab)}"

    def _global(self, epoch: int) -> list[list[int]]:
        longest = np.ceil(self.data.lengths / (1.0 - self.cfg.data.speed_perturb)).astype(np.int64)
        batches = budget_batches(longest, self.cfg.data.max_batch_samples, seed=self.cfg.train.seed, epoch=epoch)
        return _pad_to_multiple(batches, self.world_size)

    def batches_per_epoch(self) -> int:
        return len(self._global(0)) // self.world_size

    def batches(self, epoch: int, start: int) -> Iterator[TranscriptBatch | None]:
        batches = self._global(epoch)
        for k in range(start, len(batches) // self.world_size):
            position = k * self.world_size + self.rank
            yield self._load(batches[position], batch_seed(self.cfg.train.seed, epoch, position))

    def _perturbed(self, wave: np.ndarray, ids: list[int], rng: np.random.Generator) -> np.ndarray:
        """(T,) -> (T',): :func:`perturb` with the run's settings (standardised again for
        ``data.normalize`` models); ``wave`` when the perturbed audio is too short for the
        transcript's CTC frames."""
        d = self.cfg.data
        if not (d.speed_perturb or d.gain_perturb_db):
            return wave
        out = perturb(wave, rng, sample_rate=self.cfg.model.frontend.sample_rate, speed=d.speed_perturb,
                      gain_db=d.gain_perturb_db)
        if out.shape[0] < wave.shape[0]:
            frames = int(self.frontend.output_lengths(torch.tensor([out.shape[0]]))[0])
            if ctc_frames_needed(ids) > frames:
                return wave
        return standardize(out) if d.normalize else out

    def _load(self, indices: list[int], seed: int) -> TranscriptBatch | None:
        rng = np.random.default_rng(seed)
        waves, ids, kept, failed = [], [], [], []
        for i in indices:
            if i in self._failed:  # failed once: not decoded (or listed) again
                continue
            item = self.data.items[i]
            try:
                wave = self.cache.get(item.path)
            except AudioError as e:
                failed.append((item.where, str(e)))
                self._failed.add(i)
                continue
            waves.append(self._perturbed(wave, self.ids[i], rng))
            ids.append(self.ids[i])
            kept.append(i)
        self.skipped.extend(failed)
        if len(self._failed) == len(self.data.items):
            where = f"; see the list in {self.skipped_list}" if self.skipped_list is not None else ""
            raise NoUsableData(f"{self.data.source}: no usable utterance left: all {len(self.data.items)} "
                               f"failed to decode{where}")
        if not kept:
            return None
        wav, lengths = collate_audio(waves)
        targets = torch.tensor([t for seq in ids for t in seq], dtype=torch.long)
        return TranscriptBatch(wav, lengths, targets, torch.tensor([len(s) for s in ids]), kept, failed)

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        frozen = num_updates < self.cfg.ctc.freeze_updates
        if frozen != model.encoder_frozen:
            model.set_encoder_frozen(frozen)  # type: ignore[operator]

    def step(self, model: nn.Module, batch: TranscriptBatch | None, device: torch.device) -> StepOutput | None:
        if batch is None:
            return None
        out = model(batch.waveforms.to(device, non_blocking=True), batch.lengths.to(device))
        loss = ctc_loss(out, batch.targets.to(device), batch.target_lengths.to(device))
        b = float(len(batch.indices))
        seconds = float(batch.lengths.sum()) / self.cfg.model.frontend.sample_rate
        return StepOutput(loss=loss, metrics={}, weight=torch.tensor(b, device=device), seconds=seconds)


# ------------------------------------------------------------------------------------------ runs


@dataclass
class FinetuneResult:
    """Outcome of :func:`finetune`."""

    state: TrainerState
    """Final counters (best validation score and update included)."""
    train_utterances: int
    train_seconds: float
    skipped: int
    """Training and validation entries left out (listed in ``RUN/skipped_lines.tsv``)."""


def finetune(pretrained_run: str | Path | None, train: str | Path, out: str | Path, *, cfg: Config | None = None,
             valid: str | Path | None = None, resume: bool = False, device: str | None = None,
             progress: bool = True) -> FinetuneResult:
    """Fine-tune a CTC recognizer into ``out``; the library form of ``wavssl finetune``.

    Args:
        pretrained_run: run directory of a pretrained (SSL) speech model; None trains ``cfg``'s
            architecture from random initialisation (the from-scratch baseline).
        train, valid: transcribed sets (manifest ``.tsv`` with ``path`` and ``text`` columns, or a
            folder of audio + ``.txt`` pairs). Without ``valid`` the last model is kept.
        cfg: configuration (default: the pretrained run's, with its preset's fine-tuning recipe:
            :func:`wavssl.config.finetune_config`); its ``ctc`` section configures the head, its
            ``optim``, ``train`` and ``data`` sections the run, and its ``model`` must be the
            pretrained run's. A pretraining configuration is turned into its fine-tuning recipe.
        resume: continue the newest checkpoint in ``out`` (its ``config.json`` and ``vocab.json``).
    """

    out = Path(out)
    resume = resume and latest_checkpoint(out) is not None
    if resume:
        saved = load_config(out)
        if cfg is not None:
            check_resume_config(out, saved, cfg, "the fine-tuning options")
        cfg = saved
        vocab: Vocabulary | None = Vocabulary.load(out / VOCAB_FILE)
    else:
        refuse_existing_run(out, resume)
        if cfg is None:
            if pretrained_run is None:
                raise ValueError("training from scratch needs a configuration")
            cfg = load_config(pretrained_run)
        vocab = None
    cfg = finetune_config(cfg, "ctc")
    if pretrained_run is not None and not resume:
        base = load_config(pretrained_run)
        if architecture(cfg.model) != architecture(base.model):
            raise ValueError(f"{pretrained_run}: the fine-tuning config changes the model architecture; only "
                             f"dropouts and the ctc, optim, data and train settings may differ")
    if cfg.model.frontend.kind == "sensor":
        raise ValueError("CTC fine-tuning needs a speech model (this configuration has a sensor front end)")
    with training_run(out, device) as (ddp, dev):
        return _finetune(pretrained_run, train, out, cfg, vocab, valid, resume, ddp, dev, progress)


def _finetune(pretrained_run: str | Path | None, train: str | Path, out: Path, cfg: Config, vocab: Vocabulary | None,
              valid: str | Path | None, resume: bool, ddp: Distributed, dev: torch.device,
              progress: bool) -> FinetuneResult:
    """:func:`finetune` once the configuration is settled and ``out`` is locked."""

    c, fe = cfg.ctc, cfg.model.frontend
    torch.manual_seed(cfg.train.seed)
    pretrained = load(pretrained_run) if pretrained_run is not None else None
    if pretrained is not None:
        assert isinstance(pretrained.encoder, Encoder)
        encoder = copy.deepcopy(pretrained.encoder)
    else:
        encoder = build_encoder(cfg.model)
    shortest = min_input_samples(encoder.frontend)
    data = read_transcribed(train, sample_rate=fe.sample_rate, language=c.language, min_samples=shortest,
                            max_samples=cfg.data.max_samples)
    if vocab is None:
        vocab = Vocabulary.build(data.texts)
        if ddp.is_main:
            out.mkdir(parents=True, exist_ok=True)
            vocab.save(out / VOCAB_FILE)
    if pretrained is None or c.refit_normalization:
        fit_log_mel_normalization(encoder.frontend, [item.path for item in data.items], cfg)
    model = build_recognizer(cfg.model, c, len(vocab), encoder=encoder)
    model.vocab, model.normalize_audio = vocab, cfg.data.normalize
    task = CTCTask(data, vocab, cfg, as_frontend(model.encoder.frontend), rank=ddp.rank, world_size=ddp.world_size,
                   skipped_list=out / SKIPPED_FILE)
    validation = None
    valid_set: TranscribedSet | None = None
    if valid is not None:
        valid_set = read_transcribed(valid, sample_rate=fe.sample_rate, language=c.language, min_samples=shortest)
        unknown: Counter[str] = Counter()
        for item in valid_set.items:
            unknown.update(vocab.encode_with_unknown(item.text)[1])
        if unknown and ddp.is_main:
            print(f"[wavssl] validation transcripts use {sum(unknown.values())} characters outside the training "
                  f"vocabulary: {''.join(sorted(unknown))!r} (they count as errors)", flush=True)
        vs = valid_set
        validation = Validation(run=lambda m: _valid_scores(m, vs), every=cfg.train.valid_every, metric=cfg.train.best_metric,
                                sidecars=(VOCAB_FILE,))
    trainer = Trainer(model, task, cfg, out, device=dev, ddp=ddp, progress=progress, validation=validation)
    resumed = resume and trainer.resume()
    if progress and ddp.is_main:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"[wavssl] {'resuming' if resumed else 'fine-tuning'} a CTC recognizer "
              f"({len(vocab)} tokens, {trainable / 1e6:.2f}M trainable parameters, "
              f"{'from scratch' if pretrained_run is None else f'from {pretrained_run}'}) on {len(task.data)} "
              f"utterances ({task.total_seconds / 60:.1f} min) -> {out}", flush=True)
    try:
        state = trainer.train()
    finally:
        skipped = task.skipped + task.data.skipped + (valid_set.skipped if valid_set else [])
        if ddp.is_main:  # also when training failed: its message may point to this list
            write_skipped(out / SKIPPED_FILE, skipped)
    if ddp.is_main:
        if skipped:
            print(f"[wavssl] {len(skipped)} entries skipped (listed in {out / SKIPPED_FILE})", flush=True)
        best = out / "best" / "model.safetensors"
        if best.is_file():  # the run's top-level model is the best one
            atomic_write_bytes(out / "model.safetensors", best.read_bytes())
        atomic_write_text(out / "finetune_summary.json", json.dumps({
            "train_utterances": len(task.data), "train_seconds": task.total_seconds,
            "best_update": state.best_update, f"best_valid_{cfg.train.best_metric}": state.best_score,
            "num_updates": state.num_updates, "skipped": len(skipped),
            "pretrained": None if pretrained_run is None else str(pretrained_run)}, indent=1) + "\n")
    return FinetuneResult(state, len(task.data), task.total_seconds, len(skipped))


def _valid_scores(model: nn.Module, data: TranscribedSet) -> dict[str, float]:
    ev = evaluate(model, data)  # type: ignore[arg-type]
    return {"wer": ev.wer.rate, "cer": ev.cer.rate}
