"""Owning a run directory: one writer at a time, leftovers of a killed writer cleaned up.

:class:`RunLock` takes an exclusive ``flock`` on ``RUN/.lock`` for the life of a training process
(rank 0 under torchrun). The kernel drops the lock when the process exits, however it exits, so a
lock file left by a crashed run is stale and simply taken over (with a notice naming the old
holder); a second live process on the same directory is refused, naming the holder.
:func:`remove_orphans` deletes the temporary files and checkpoint directories a kill leaves behind;
it is only safe under the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from wavssl_onnx.fileio import TMP_SUFFIX

from .checkpoint import CHECKPOINTS, TMP_PREFIX, latest_checkpoint

LOCK_FILE = ".lock"


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (e.g. it holds a run and --resume was not given, or
    another process is writing it)."""


class RunDirLocked(RunDirError):
    """Another live process holds the run directory's lock."""


def _describe(holder: dict[str, Any]) -> str:
    """``pid N on HOST (COMMAND, since TIME)`` from a lock file's content."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} ({holder.get('command', '?')}, since {since})"


def _read_holder(path: Path) -> dict[str, Any]:
    """The JSON a lock holder wrote, or {} when unreadable or empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class RunLock:
    """Exclusive lock on a run directory; use as a context manager, or :meth:`acquire` /
    :meth:`release`. ``notice`` receives the stale-lock message (default: stderr)."""

    def __init__(self, run_dir: str | os.PathLike[str], notice: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.notice = notice or (lambda message: print(f"[wavssl] {message}", file=sys.stderr, flush=True))
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunDirLocked` naming the live holder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirLocked(f"{self.run_dir}: in use by {_describe(_read_holder(self.path))}; wait for it to "
                               f"finish or stop it, or choose another --out") from None
        stale = _read_holder(self.path)
        if stale:
            self.notice(f"{self.run_dir}: taking over a stale lock of {_describe(stale)}, which ended without "
                        f"releasing it (crashed or killed)")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:200],
                  "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty file: released cleanly, not stale
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_orphans(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete what a killed writer leaves: ``CHECKPOINTS/.tmp_*`` directories and ``.*.tmp`` files
    in the run directory, ``best/`` and the checkpoint directories. Returns what was removed. Call
    it only while holding the :class:`RunLock`."""
    root = Path(run_dir)
    removed: list[Path] = []
    checkpoints = root / CHECKPOINTS
    folders = [root, root / "best", checkpoints]
    if checkpoints.is_dir():
        folders += [d for d in checkpoints.iterdir() if d.is_dir() and not d.name.startswith(TMP_PREFIX)]
        for orphan in checkpoints.glob(f"{TMP_PREFIX}*"):
            if orphan.is_dir():
                shutil.rmtree(orphan, ignore_errors=True)
                removed.append(orphan)
    for folder in folders:
        if folder.is_dir():
            for orphan in folder.glob(f".*{TMP_SUFFIX}"):
                if orphan.is_file():
                    orphan.unlink(missing_ok=True)
                    removed.append(orphan)
    return removed


def refuse_existing_run(run_dir: str | os.PathLike[str], resume: bool) -> None:
    """A new run (``resume`` off) may not start in a directory that already holds checkpoints."""
    if not resume and latest_checkpoint(Path(run_dir)) is not None:
        raise RunDirError(f"{run_dir}: already holds checkpoints; pass --resume to continue it, or choose another --out")


def own_run_dir(run_dir: str | os.PathLike[str], is_main: bool) -> RunLock | None:
    """On the main rank: lock ``run_dir`` and remove a killed writer's leftovers; returns the lock to
    release at the end (None on other ranks). Under ``torch.distributed`` every rank waits here until
    that is done."""
    lock = None
    if is_main:
        lock = RunLock(run_dir).acquire()
        for orphan in remove_orphans(run_dir):
            lock.notice(f"removed {orphan} (left by an interrupted write)")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # every rank writes the audio index cache through a temp file: none may start before rank 0
        # has removed the leftovers (it would delete a live temp file); if rank 0 fails above,
        # torchrun stops the others
        dist.barrier()
    return lock


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, sub in value.items():
        out.update(_flat(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_resume_config(run_dir: str | os.PathLike[str], saved: Any, requested: Any, what: str = "the options") -> None:
    """Raise :class:`RunDirError` when ``requested`` (a Config built from ``what``, e.g. ``--preset``)
    changes the model architecture of the run being resumed, whose ``config.json`` is ``saved``:
    a resumed run always continues its own model, so the request would be silently ignored."""
    from ..config import architecture, to_dict

    mine, theirs = _flat(to_dict(architecture(saved.model))), _flat(to_dict(architecture(requested.model)))
    changed = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if changed:
        shown = ", ".join(f"model.{k}: {mine.get(k)!r} -> {theirs.get(k)!r}" for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise RunDirError(f"{run_dir}: --resume continues the run's own model ({Path(run_dir) / 'config.json'}), "
                          f"but {what} change its architecture ({shown}{more}); drop them to resume, or choose "
                          f"another --out for a new run")
