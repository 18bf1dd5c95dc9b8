"""Atomic file writes shared by the runtime and ``wavssl``: a temporary file in the target's folder,
``fsync``, permissions as any tool's output (``0o666 & ~umask``, not ``mkstemp``'s 0600), then one
``os.replace``. A full disk is reported as :class:`NoSpaceError` naming the file."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

TMP_SUFFIX = ".tmp"
"""Suffix of every temporary file these helpers create (``.NAME.<random>.tmp`` beside NAME)."""


class NoSpaceError(OSError):
    """The disk filled up while writing ``path`` (the target itself is left as it was)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(errno.ENOSPC, f"no space left writing {path}")
        self.path = str(path)

    def __str__(self) -> str:
        return f"no space left writing {self.path}"


def umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str], directory: bool = False) -> None:
    """Give ``path`` the permissions a plain ``open``/``mkdir`` would (0666/0777 less the umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def make_temp_dir(parent: str | os.PathLike[str], prefix: str) -> Path:
    """``tempfile.mkdtemp`` in ``parent`` with umask permissions (it would be 0700)."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    apply_umask(path, directory=True)
    return path


class _FdWriter:
    """A minimal binary file object over a descriptor whose writes go through ``os.write`` (so an
    ENOSPC of any writer, PyTorch's and safetensors' included, surfaces here as an OSError)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.position = fd, 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:])
        self.position += done
        return done

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass


def is_no_space(error: BaseException) -> bool:
    """True for a full disk (ENOSPC, or a disk quota)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it and rename it over ``path``.

    Raises:
        NoSpaceError: the disk filled up (``path`` is untouched, the temporary file removed).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
    try:
        try:
            write(_FdWriter(fd))  # type: ignore[arg-type]
            os.fsync(fd)
        finally:
            os.close(fd)
        apply_umask(tmp)
        os.replace(tmp, target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if is_no_space(e):
            raise NoSpaceError(target) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))
