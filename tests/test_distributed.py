"""DDP and FSDP2 on CPU (gloo) under torchrun: equivalence with one process and with each other, wall-time
checkpoints, elastic restart, resume from full checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import wavssl
from wavssl import config as C
from wavssl.models import SSLModel
from wavssl.train.checkpoint import list_checkpoints, load_state_dict, load_trainer_state

# deterministic model (no dropout): randomness comes only from the per-batch seeded RNG
NO_DROPOUT = ["model.context.dropout=0.0", "model.context.attention_dropout=0.0",
              "model.context.dropout_input=0.0", "model.context.dropout_features=0.0"]
COMMON = ["data.max_batch_samples=64000", "data.max_samples=32000", "data.num_workers=0", "train.log_every=1"]


def _sets(*items: str) -> list[str]:
    return [f"--set={s}" for s in COMMON + list(items)]


def _torchrun(*args: str, nproc: int = 2, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={restarts}", "-m", "wavssl", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.e2e
def test_two_rank_ddp_matches_one_process_with_same_global_batch(speech_dir: Path, tmp_path: Path) -> None:
    """2 ranks x 1 batch per update == 1 process accumulating 2 batches per update.

    Tolerance: 1e-3 relative on every update's logged loss (float reductions differ in order).
    """
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    subprocess.run(_torchrun("pretrain", str(speech_dir), "--out", str(ddp), "--no-progress",
                             *_sets("optim.max_updates=6", *NO_DROPOUT)), check=True, env=_env(), timeout=900)
    subprocess.run([sys.executable, "-m", "wavssl", "pretrain", str(speech_dir), "--out", str(single), "--no-progress",
                    *_sets("optim.max_updates=6", "optim.accumulate=2", *NO_DROPOUT)],
                   check=True, env=_env(), timeout=900)
    a, b = _losses(ddp), _losses(single)
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-3 * abs(y), (a, b)


@pytest.mark.e2e
def test_wall_time_checkpoint_and_elastic_restart_resume(speech_dir: Path, tmp_path: Path) -> None:
    """A worker killed mid-run is restarted by torchrun (--max-restarts) and resumes from the last
    wall-time checkpoint (update checkpoints are effectively off)."""
    run = tmp_path / "run"
    cmd = _torchrun("pretrain", str(speech_dir), "--out", str(run), "--resume", "--no-progress",
                    *_sets("optim.max_updates=60", "train.checkpoint_every=100000",
                           "train.checkpoint_every_seconds=0.5"), restarts=1)
    agent = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list_checkpoints(run):
        time.sleep(0.05)
    first = list_checkpoints(run)
    assert first, "no wall-time checkpoint was written"
    killed_at = load_trainer_state(first[-1])["trainer"]["num_updates"]
    assert 0 < killed_at < 60
    workers = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
    assert workers, "torchrun has no worker processes"
    os.kill(int(workers[-1]), signal.SIGKILL)
    out, _ = agent.communicate(timeout=900)
    assert agent.returncode == 0, out
    assert "resumed" in out, out
    state = load_trainer_state(list_checkpoints(run)[-1])["trainer"]
    assert state["num_updates"] == 60


@pytest.mark.e2e
def test_two_rank_fsdp_matches_ddp_and_resumes_from_full_checkpoints(speech_dir: Path, tmp_path: Path) -> None:
    """``train.fsdp``: FSDP2 on 2 ranks logs the losses 2-rank DDP logs (tolerance 1e-4 relative on
    every update: the same arithmetic up to reduction order; on gloo they come out identical). Its
    checkpoints are ordinary full state dicts: ``wavssl.load`` reads them, and a run resumed from
    update 3 under FSDP, or under DDP, logs the uninterrupted run's losses for updates 4-6."""
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    sets = _sets("optim.max_updates=6", "train.checkpoint_every=3", *NO_DROPOUT)
    for run, extra in ((ddp, []), (fsdp, ["--set=train.fsdp=true"])):
        subprocess.run(_torchrun("pretrain", str(speech_dir), "--out", str(run), "--no-progress", *sets, *extra),
                       check=True, env=_env(), timeout=900)
    a, b = _losses(fsdp), _losses(ddp)
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-4 * abs(y), (a, b)
    assert isinstance(wavssl.load(fsdp), SSLModel)  # strict: every key, no DTensor shards
    ours, ref = load_state_dict(fsdp), load_state_dict(ddp)
    assert ours.keys() == ref.keys() and all(torch.allclose(v, ref[k], atol=1e-5) for k, v in ours.items())

    shutil.rmtree(fsdp / "checkpoints" / "update_00000006")
    as_ddp = tmp_path / "fsdp_then_ddp"
    shutil.copytree(fsdp, as_ddp)
    for run, flag in ((fsdp, "true"), (as_ddp, "false")):
        subprocess.run(_torchrun("pretrain", str(speech_dir), "--out", str(run), "--resume", "--no-progress",
                                 f"--set=train.fsdp={flag}"), check=True, env=_env(), timeout=900)
        resumed = _losses(run)
        assert len(resumed) == 9
        for x, y in zip(resumed[6:], a[3:]):
            assert abs(x - y) <= 1e-4 * abs(y), (run.name, resumed, a)


def test_fsdp_config_rules() -> None:
    """FSDP needs layer drop off (ranks would skip different layers); CTC fine-tuning, which validates
    on one rank, runs without it."""
    with pytest.raises(C.ConfigError, match="layer_drop"):
        C.resolve("base", assignments=["train.fsdp=true"]).validate()
    assert C.resolve("large", assignments=["train.fsdp=true"]).validate().train.fsdp
    assert not C.finetune_config(C.resolve("tiny", assignments=["train.fsdp=true"]), "ctc").train.fsdp
    with pytest.raises(C.ConfigError, match="recognizer fine-tuning runs without FSDP"):
        C.merge(C.finetune_config(C.tiny(), "ctc"), {"train": {"fsdp": True}}).validate()
