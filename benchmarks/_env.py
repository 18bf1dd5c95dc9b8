"""What every benchmark records about where it ran (commit, CPU model, load average), and how it
keeps the record."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit(*watched: str) -> str | None:
    """Short HEAD hash, with ``+dirty`` when any ``watched`` path (default ``wavssl``) has uncommitted
    changes; None outside a git checkout."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        return (head + ("+dirty" if git("status", "--porcelain", "--", *(watched or ("wavssl",))) else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set flags that decide int8 and bf16 speed (avx2, avx512f, avx512_vnni,
    avx_vnni, amx_int8; asimddp on ARM): results differ between CPU kinds, so every line says which."""
    from wavssl_onnx.cpu import cpu_flags as flags

    return flags()


def load_average() -> float:
    """1-minute load average (-1 where unknown)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def append_result(path: Path, record: dict[str, object]) -> None:
    """Append ``record`` as one JSON line to the results file ``path`` (created with its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
