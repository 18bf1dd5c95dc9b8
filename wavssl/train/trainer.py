"""One training loop for every task.

AdamW + LR schedule, gradient accumulation and clipping, bf16 autocast on CUDA (fp32 on CPU),
DistributedDataParallel when launched by ``torchrun`` (the same command otherwise) or, with
``train.fsdp``, FSDP2 (``fully_shard`` per Transformer layer, then the root), periodic atomic
checkpoints with rotation (ordinary full state dicts either way), exact resume (model, optimiser,
scheduler, update count, data position, RNG), non-finite steps skipped and counted (abort after too
many in a row), JSONL + TensorBoard logs and a progress bar. Between log intervals a step never
waits for the device (given a task whose step does not either: the pretraining tasks draw masks on
the host).

A task supplies the data and the per-batch computation (see :class:`Task`); the trainer owns
everything else.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from wavssl_onnx.fileio import atomic_write_bytes

from ..config import Config, to_dict
from ..data.audio import batch_seed
from ..modules.cpu_training import use_cpu_training_paths
from .checkpoint import latest_checkpoint, load_state_dict, load_trainer_state, save_checkpoint, save_model
from .rundir import own_run_dir
from .schedules import lr_multiplier


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


class NoUsableData(RuntimeError):
    """No batch can be made any more: every file (or utterance) left failed to load."""


@dataclass
class StepOutput:
    """What a task's ``step`` returns for one batch."""

    loss: Tensor
    """() scalar to minimise (mean over the batch's units)."""
    metrics: dict[str, Tensor]
    """() scalars to log, averaged over the log interval weighted by ``weight``."""
    weight: Tensor
    """() weight of this batch in the averages (e.g. masked frames)."""
    seconds: float
    """Seconds of audio (or signal) in the batch, for throughput."""


class Task(Protocol):
    """The data and computation of one kind of training run."""

    def batches(self, epoch: int, start: int) -> Iterator[Any]:
        """Batches of ``epoch`` from index ``start`` on (deterministic given the seed)."""

    def batches_per_epoch(self) -> int:
        """Number of batches per epoch on this rank."""

    def step(self, model: nn.Module, batch: Any, device: torch.device) -> StepOutput | None:
        """Loss of one batch, or None for an empty batch (every item failed to load)."""

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        """Called before each update with the number of updates done (temperature annealing...)."""


@dataclass
class TrainerState:
    """Counters saved with every checkpoint."""

    num_updates: int = 0
    epoch: int = 0
    batches_done: int = 0
    nonfinite_total: int = 0
    nonfinite_in_a_row: int = 0
    empty_batches: int = 0
    best_score: float = math.inf
    """Lowest validation score so far (the :class:`Validation`'s metric)."""
    best_update: int = -1
    """Update count of the best validation score (-1: none yet)."""
    wall_seconds: float = 0.0
    """Wall-clock seconds of training (validation included) up to these counters, summed over the
    sessions of a resumed run: work lost to a kill after the last checkpoint is not counted."""


@dataclass
class Validation:
    """Periodic validation with best-checkpoint selection.

    ``run(model) -> {name: value}`` scores the (unwrapped, eval-mode) model; every ``every`` updates
    and at the end of training the trainer logs the values (prefixed ``valid_``) and, when
    ``metric`` improves on the best so far (lower is better), writes the model to ``RUN/best/``
    (``config.json``, ``model.safetensors`` and the run's ``sidecars``, e.g. ``vocab.json``).
    """

    run: Callable[[nn.Module], dict[str, float]]
    every: int
    metric: str
    sidecars: tuple[str, ...] = ()


@dataclass
class Distributed:
    """Process-group facts (single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Distributed:
    """Join the process group if launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        store = _attempt_store()
        if store is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]), world_size=world)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


@contextmanager
def training_run(run_dir: Path, device: str | None) -> Iterator[tuple[Distributed, torch.device]]:
    """What every training entry point (pretrain, finetune) runs inside: the process group under
    torchrun, the device (``device``: auto/cpu/cuda[:N], see :func:`resolve_device`) and the run
    directory's lock (rank 0; a killed writer's leftovers removed). On the way out, after a success
    the ranks leave together (rank 0 may still be writing the last checkpoint); then the process
    group is destroyed and the lock released, also when training failed."""
    ddp = init_distributed("cuda" if device in (None, "auto", "cuda") and torch.cuda.is_available() else "cpu")
    dev = resolve_device(device, ddp)
    lock = own_run_dir(run_dir, ddp.is_main)
    try:
        yield ddp, dev
        if ddp.world_size > 1:
            dist.barrier()
    finally:
        if ddp.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
        if lock is not None:
            lock.release()


def _attempt_store() -> dist.Store | None:
    """Under torchrun with restarts (elastic), a store whose keys are private to this restart attempt,
    so restarted workers never read the addresses of the workers they replace; None otherwise."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or "MASTER_ADDR" not in os.environ:
        return None
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    host = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
                         is_master=not agent_store and os.environ.get("RANK") == "0",
                         timeout=datetime.timedelta(minutes=10))
    return dist.PrefixStore(f"wavssl/attempt_{attempt}", host)


def resolve_device(name: str | None, ddp: Distributed) -> torch.device:
    """``cuda`` (this rank's GPU) when available and not overridden, else ``cpu``."""
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(ddp.local_rank)
        return torch.device("cuda", ddp.local_rank)
    return torch.device(name)


LOG_FILE = "train_log.jsonl"
"""One JSON record per logged update in a run directory."""


def last_logged(run_dir: str | Path) -> dict[str, float]:
    """The last record of ``run_dir``'s training log ({} when there is none or it cannot be read)."""
    try:
        lines = [line for line in (Path(run_dir) / LOG_FILE).read_text().splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


class _Logger:
    """JSONL (+ TensorBoard when installed) logging; rank 0 only, and only with a run directory."""

    def __init__(self, run_dir: Path | None, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled and run_dir is not None
        self.path = Path(run_dir or ".") / LOG_FILE
        self.tb = None
        if self.enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.path.parent / "tensorboard"))
            except ImportError:
                self.tb = None

    def log(self, record: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = int(record["update"])
            for k, v in record.items():
                if k != "update":
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class RankMismatch(RuntimeError):
    """Ranks of a distributed run were started with different configs or data."""


def check_ranks_agree(cfg: Config, task: Task) -> None:
    """Raise RankMismatch on every rank if any rank's config or data differs from rank 0's.

    Compares a digest of the full config and the task's ``fingerprint()`` (data files and sizes)
    when it has one, else its number of batches per epoch.
    """
    fingerprint = getattr(task, "fingerprint", None)
    data = fingerprint() if callable(fingerprint) else str(task.batches_per_epoch())
    mine = {"config": hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16],
            "data": hashlib.sha256(data.encode()).hexdigest()[:16]}
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    for rank, theirs in enumerate(every):
        for key in ("config", "data"):
            if theirs[key] != every[0][key]:
                raise RankMismatch(f"rank {rank} disagrees with rank 0 on the {key} ({theirs[key]} vs {every[0][key]}): "
                                   "start every rank with the same command, config and data (shared filesystem)")


def apply_speedups(model: nn.Module, cfg: Config) -> None:
    """Activation checkpointing and regional ``torch.compile`` of the context Transformer's layers, as
    ``cfg.train`` asks (module attributes and per-layer compiled calls: state dicts are unchanged)."""
    context = getattr(getattr(model, "encoder", None), "context", None)
    if context is None:
        return
    context.checkpoint_layers = cfg.train.activation_checkpointing
    if cfg.train.compile:
        for layer in context.layers:
            layer.compile(dynamic=True)


def shard_model(model: nn.Module, device: torch.device, world_size: int) -> None:
    """FSDP2, in place: every Transformer layer of the context is its own group (its parameters are
    gathered just before it runs and freed after), then the root takes the rest (front end,
    projections, quantizer). Parameters become DTensors sharded over the ``world_size`` ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    for layer in model.encoder.context.layers:  # type: ignore[union-attr]
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _full_options(cpu_offload: bool = False) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def full_model_state(model: nn.Module) -> dict[str, Tensor]:
    """A sharded model's ordinary state dict on the CPU of rank 0 (empty on the other ranks).
    Collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    # a full state dict holds plain tensors
    return cast(dict[str, Tensor], get_model_state_dict(model, options=_full_options(cpu_offload=True)))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser state of a sharded model as ``Optimizer.state_dict()`` has it for the unsharded
    one (parameters by position), on the CPU of rank 0 (empty on the others). Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    named: dict[str, Any] = get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))
    if not named:
        return {}
    position = {name: i for i, name in enumerate(n for g in named["param_groups"] for n in g["params"])}
    return {"state": {position[n]: v for n, v in named["state"].items()},
            "param_groups": [{**g, "params": [position[n] for n in g["params"]]} for g in named["param_groups"]]}


def load_full_states(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any],
                     optimizer_state: dict[str, Any]) -> None:
    """Load ordinary (unsharded) state dicts into a sharded model and its optimiser; every rank
    passes the full dicts and keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, model_state, options=_full_options())
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    groups = optimizer_state["param_groups"]
    named: dict[str, Any] = {"state": {order[i]: v for i, v in optimizer_state["state"].items()},
             "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in groups]}
    set_optimizer_state_dict(model, optimizer, named, options=_full_options())


class Trainer:
    """Runs ``task`` on ``model`` for ``cfg.optim.max_updates`` updates, writing into ``run_dir``; with
    ``run_dir = None`` it trains in memory (no logs, checkpoints, resume or validation), the same
    updates otherwise: what many small fits (few-label benchmarks) use."""

    def __init__(self, model: nn.Module, task: Task, cfg: Config, run_dir: str | Path | None, *,
                 device: torch.device, ddp: Distributed | None = None, progress: bool = True,
                 validation: Validation | None = None) -> None:
        self.cfg, self.task, self.device = cfg, task, device
        self.validation = validation
        if device.type == "cpu":  # denormals (tiny activations) slow CPU math by orders of magnitude
            torch.set_flush_denormal(True)
        self.ddp = ddp or Distributed()
        if run_dir is None and validation is not None:
            raise ValueError("validation keeps the best model in the run directory: give the Trainer one")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.model = model.to(device)
        self.module = model  # unwrapped (sharded in place under FSDP), for state dicts and task hooks
        if device.type == "cpu":
            use_cpu_training_paths(model)
        apply_speedups(model, cfg)
        self.fsdp = cfg.train.fsdp and self.ddp.world_size > 1
        self._control = None
        if self.fsdp and validation is not None:
            raise ValueError("train.fsdp: validation runs on one rank, a sharded model needs all of them; "
                             "train without FSDP")
        if self.ddp.world_size > 1:
            check_ranks_agree(cfg, task)
        if self.fsdp:
            shard_model(model, device, self.ddp.world_size)
            if cfg.train.checkpoint_every_seconds > 0:  # ranks agree on wall-time checkpoints over the host
                self._control = dist.new_group(backend="gloo")
        elif self.ddp.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=cfg.model.context.layer_drop > 0)
        o = cfg.optim
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                                           fused=True)  # fused kernels on CPU and CUDA alike
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_multiplier(o))
        precision = cfg.train.precision
        self.bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
        self.state = TrainerState()
        self._skipped = torch.zeros((), dtype=torch.long, device=device)  # non-finite steps since the last sync
        self._in_a_row = torch.zeros((), dtype=torch.long, device=device)
        self._last_checkpoint = time.monotonic()
        self.progress = progress and self.ddp.is_main
        self.logger = _Logger(self.run_dir, self.ddp.is_main, cfg.train.tensorboard)

    # ----------------------------------------------------------------------------------- resume

    def resume(self) -> bool:
        """Restore the newest complete checkpoint of the run directory; False if there is none."""
        ckpt = latest_checkpoint(self.run_dir) if self.run_dir is not None else None
        if ckpt is None:
            return False
        st = load_trainer_state(ckpt)
        if self.fsdp:
            load_full_states(self.module, self.optimizer, load_state_dict(ckpt), st["optimizer"])
        else:
            self.module.load_state_dict(load_state_dict(ckpt))
            self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.state = TrainerState(**st["trainer"])
        self._in_a_row.fill_(self.state.nonfinite_in_a_row)
        return True

    def checkpoint(self) -> None:
        """Write a checkpoint (rank 0). Under FSDP every rank must call it: the full state is gathered."""
        self._last_checkpoint = time.monotonic()
        if self.run_dir is None:
            raise ValueError("an in-memory Trainer (run_dir None) writes no checkpoints")
        model_state = full_model_state(self.module) if self.fsdp else None
        optimizer = full_optimizer_state(self.module, self.optimizer) if self.fsdp else self.optimizer.state_dict()
        if self.ddp.is_main:
            trainer_state = {"optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
                             "trainer": dict(self.state.__dict__)}
            save_checkpoint(self.run_dir, self.module, self.cfg, trainer_state, self.state.num_updates,
                            keep_last=self.cfg.train.keep_last, model_state=model_state)

    def _wall_checkpoint_due(self) -> bool:
        """``train.checkpoint_every_seconds`` have passed since the last checkpoint (by rank 0's clock
        under FSDP, where every rank takes part in a checkpoint; shared over a host-side group)."""
        wall = self.cfg.train.checkpoint_every_seconds
        due = wall > 0 and time.monotonic() - self._last_checkpoint >= wall
        if self._control is not None:
            flag = torch.tensor([int(due)])
            dist.broadcast(flag, 0, group=self._control)
            due = bool(flag[0])
        return due

    def _gradient_sync(self, sync: bool) -> Any:
        """Context for one micro-batch's backward: gradients are reduced across ranks only when ``sync``
        (the last micro-batch of an update)."""
        if self.fsdp:
            self.model.set_requires_gradient_sync(sync)  # type: ignore[operator]
            return nullcontext()
        return nullcontext() if sync or self.ddp.world_size == 1 else self.model.no_sync()  # type: ignore[operator]

    # ------------------------------------------------------------------------------------ loop

    def _batches(self) -> Iterator[Any]:
        """Endless stream of batches from the saved data position; advances epoch/position counters.

        Before yielding a batch, the torch RNG (masks, distractors, Gumbel noise, dropout) is seeded
        from (seed, epoch, global batch position): random draws depend on where a batch sits in the
        data order, not on history. So a resumed run continues exactly, and N ranks x 1 batch draw
        the same numbers as 1 rank accumulating N batches.
        """
        while True:
            for batch in self.task.batches(self.state.epoch, self.state.batches_done):
                position = self.state.batches_done * self.ddp.world_size + self.ddp.rank
                torch.manual_seed(batch_seed(self.cfg.train.seed, self.state.epoch, position))
                self.state.batches_done += 1
                yield batch
            self.state.epoch += 1
            self.state.batches_done = 0

    def _nonfinite_flag(self, loss_sum: Tensor, grad_norm: Tensor) -> Tensor:
        """0-dim float on the device: 1.0 when the loss or gradient norm is non-finite on any rank.

        No host synchronisation: the flag goes to the fused AdamW kernel as ``found_inf`` (it skips the
        update and leaves the moments and step count untouched, as under AMP grad scaling), and into
        device-side counters read at log intervals (:meth:`_sync_nonfinite`).
        """
        bad = (~torch.isfinite(torch.stack([loss_sum.float(), grad_norm.float()])).all()).float()
        if self.ddp.world_size > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        return bad

    def _sync_nonfinite(self) -> None:
        """Fold the device-side non-finite counters into the state; report them; abort when too many
        steps in a row were skipped. Called at log intervals, validations and checkpoints."""
        since, in_a_row = (int(x) for x in torch.stack([self._skipped, self._in_a_row]).tolist())
        self._skipped.zero_()
        if since:
            self.state.nonfinite_total += since
            self._report(f"non-finite loss/gradient: {since} step(s) skipped up to update {self.state.num_updates} "
                         f"({in_a_row} in a row now, {self.state.nonfinite_total} in all)")
        self.state.nonfinite_in_a_row = in_a_row
        if in_a_row >= self.cfg.train.max_nonfinite:
            raise TrainingDiverged(
                f"{in_a_row} non-finite steps in a row at update {self.state.num_updates} (limit "
                f"train.max_nonfinite = {self.cfg.train.max_nonfinite}); lower optim.lr or check the data "
                f"(run dir {self.run_dir})")

    def train(self) -> TrainerState:
        """Train until ``max_updates``; returns the final counters."""
        cfg = self.cfg
        max_updates, accumulate = cfg.optim.max_updates, cfg.optim.accumulate
        stream = self._batches()
        sums: dict[str, Tensor | float] = {}
        weight_sum: Tensor | float = 0.0
        seconds, t0 = 0.0, time.perf_counter()
        session_start, wall_before = t0, self.state.wall_seconds
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=max_updates, initial=self.state.num_updates, unit="upd", dynamic_ncols=True)
        self.model.train()
        empty_in_a_row, empty_limit = 0, max(self.task.batches_per_epoch(), 1)
        while self.state.num_updates < max_updates:
            self.task.on_update(self.module, self.state.num_updates)
            outs: list[StepOutput] = []
            losses = []
            for micro in range(accumulate):
                batch = next(stream)
                autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
                with self._gradient_sync(micro == accumulate - 1), autocast:
                    out = self.task.step(self.model, batch, self.device)
                    if out is None:
                        self.state.empty_batches += 1
                        empty_in_a_row += 1
                        continue
                    (out.loss / accumulate).backward()
                empty_in_a_row = 0
                outs.append(out)
                losses.append(out.loss.detach())
            if not outs:
                if empty_in_a_row > empty_limit:  # a whole epoch without one loadable item
                    raise NoUsableData(f"{empty_in_a_row} empty batches in a row (every item in them failed to "
                                       f"load): no usable data left; see the skipped list in {self.run_dir}")
                continue
            loss_sum = torch.stack(losses).sum()
            grad_norm = self._grad_norm()
            bad = self._nonfinite_flag(loss_sum, grad_norm)
            self.optimizer.found_inf = bad  # type: ignore[attr-defined]  # fused AdamW skips a bad step
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.num_updates += 1  # a skipped step still counts: the schedule moves on
            self.state.wall_seconds = wall_before + time.perf_counter() - session_start
            self._skipped += bad.long()
            self._in_a_row.copy_((self._in_a_row + bad.long()) * bad.long())
            good = 1.0 - bad
            for out in outs:  # accumulated on the device: no host sync until the log interval
                w = out.weight.detach().float() * good
                weight_sum = weight_sum + w
                seconds += out.seconds
                for k, v in out.metrics.items():
                    sums[k] = sums.get(k, 0.0) + torch.where(good > 0, v.detach().float() * w, 0.0)
                sums["loss"] = sums.get("loss", 0.0) + torch.where(good > 0, out.loss.detach().float() * w, 0.0)
            n = self.state.num_updates
            if bar is not None:
                bar.update(1)
            val = self.validation
            validating = val is not None and ((val.every > 0 and n % val.every == 0) or n == max_updates)
            checkpointing = self.run_dir is not None and (
                n % cfg.train.checkpoint_every == 0 or n == max_updates or self._wall_checkpoint_due())
            logging = n % cfg.train.log_every == 0 or n == max_updates
            if logging or validating or checkpointing:
                self._sync_nonfinite()
            if logging:
                record = self._log_record(sums, weight_sum, seconds, time.perf_counter() - t0, grad_norm)
                if bar is not None:
                    bar.set_postfix(self._progress_fields(record))
                sums, weight_sum, seconds, t0 = {}, 0.0, 0.0, time.perf_counter()
            if validating:
                self.validate()
                self.state.wall_seconds = wall_before + time.perf_counter() - session_start
            if checkpointing:
                self.checkpoint()
        if bar is not None:
            bar.close()
        self.logger.close()
        return self.state

    def _progress_fields(self, record: dict[str, float]) -> dict[str, str]:
        """What the progress bar shows: the loss, the task's own figures (contrastive accuracy and code
        perplexity when pretraining), the best validation score so far, and speed as a real-time
        multiple (seconds of audio or series per second)."""
        shown = {"loss": f"{record['loss']:.3f}"}
        if "accuracy" in record:
            shown["acc"] = f"{record['accuracy']:.3f}"
        if "code_perplexity" in record:
            shown["ppl"] = f"{record['code_perplexity']:.0f}"
        if self.validation is not None and math.isfinite(self.state.best_score):
            shown[f"best_{self.validation.metric}"] = f"{self.state.best_score:.3f}"
        shown["speed"] = f"{3600 * record['audio_hours_per_s']:.0f}x"
        return shown

    def validate(self) -> dict[str, float]:
        """Run the :class:`Validation` on the main rank (others wait), log it, keep the best model."""
        v = self.validation
        assert v is not None
        values: dict[str, float] = {}
        if self.ddp.is_main:
            self.module.eval()
            with torch.no_grad():
                values = v.run(self.module)
            self.module.train()
            if v.metric not in values:
                raise KeyError(f"validation returned {sorted(values)}, not the metric {v.metric!r}")
            score = values[v.metric]
            improved = score < self.state.best_score
            if improved:
                self.state.best_score, self.state.best_update = score, self.state.num_updates
                assert self.run_dir is not None  # checked at construction
                best = self.run_dir / "best"
                save_model(best, self.module, self.cfg)
                for name in v.sidecars:
                    if (self.run_dir / name).is_file():
                        atomic_write_bytes(best / name, (self.run_dir / name).read_bytes())
            record = {"update": float(self.state.num_updates), **{f"valid_{k}": x for k, x in values.items()},
                      "valid_best": self.state.best_score}
            self.logger.log(record)
            self._report(f"validation at update {self.state.num_updates}: "
                         + "  ".join(f"{k} {x:.4f}" for k, x in values.items())
                         + ("  (new best)" if improved else f"  (best {self.state.best_score:.4f} "
                            f"at update {self.state.best_update})"))
        if self.ddp.world_size > 1:
            shared = torch.tensor([self.state.best_score, float(self.state.best_update)], dtype=torch.float64,
                                  device=self.device)
            dist.broadcast(shared, 0)  # every rank saves the same trainer state
            self.state.best_score, self.state.best_update = float(shared[0]), int(shared[1])
        return values

    def _grad_norm(self) -> Tensor:
        params = [p for p in self.module.parameters() if p.grad is not None]
        if not params:
            return torch.zeros((), device=self.device)
        clip = self.cfg.optim.clip_norm
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        return norm.full_tensor() if isinstance(norm, DTensor) else norm  # FSDP: a replicated DTensor

    def _log_record(self, sums: dict[str, Tensor | float], weight: Tensor | float, seconds: float,
                    elapsed: float, grad_norm: Tensor) -> dict[str, float]:
        keys = sorted(sums)
        t = torch.stack([torch.as_tensor(sums[k], device=self.device).double() for k in keys]
                        + [torch.as_tensor(weight, device=self.device).double(),
                           torch.tensor(seconds, dtype=torch.float64, device=self.device)])
        if self.ddp.world_size > 1:  # sum across ranks (one sync per log interval)
            dist.all_reduce(t)
        values = t.tolist()
        totals = dict(zip(keys, values[:-2]))
        total_weight, seconds = values[-2], values[-1]
        record = {"update": float(self.state.num_updates), "epoch": float(self.state.epoch)}
        record.update({k: v / max(total_weight, 1e-9) for k, v in totals.items()})
        record.update({
            "lr": float(self.scheduler.get_last_lr()[0]), "grad_norm": float(grad_norm),
            "audio_hours_per_s": seconds / 3600.0 / max(elapsed, 1e-9),
            "nonfinite_total": float(self.state.nonfinite_total), "wall_seconds": self.state.wall_seconds,
        })
        self.logger.log(record)
        return record

    def _report(self, message: str) -> None:
        if self.ddp.is_main:
            print(f"[wavssl] {message}", flush=True)
            if self.run_dir is not None:
                with open(self.run_dir / "events.log", "a") as f:
                    f.write(message + "\n")
