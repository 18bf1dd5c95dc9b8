"""Batching by length, shared by the runtime (recognizer, classifier) and training (``wavssl.data``):
padding arrays into one batch, cutting length-sorted items into batches under a padded-sample budget,
and the seeded per-epoch length buckets of the training samplers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_stack(arrays: Sequence[np.ndarray], *, axis: int = -1, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad arrays along ``axis`` and stack them.

    Args:
        arrays: B arrays of one shape except along ``axis`` ((T_i,), (C, T_i), (F_i, V) with ``axis=0``).
        size: padded length (default: the longest).
    Returns:
        (B, ..., size, ...) float32 batch and (B,) int64 lengths along ``axis``; (0, 0) and (0,) for
        no arrays.
    """
    lengths = np.array([a.shape[axis] for a in arrays], dtype=np.int64)
    if not len(arrays):
        return np.zeros((0, 0), dtype=np.float32), lengths
    shape = list(arrays[0].shape)
    shape[axis] = int(lengths.max()) if size is None else size
    out = np.zeros((len(arrays), *shape), dtype=np.float32)
    for row, a in enumerate(arrays):
        index = [slice(None)] * a.ndim
        index[axis] = slice(0, a.shape[axis])
        out[row][tuple(index)] = a
    return out, lengths


def group_by_budget(order: Sequence[int] | np.ndarray, lengths: Sequence[int] | np.ndarray,
                    max_batch_samples: int | None, max_batch_size: int | None) -> list[list[int]]:
    """Cut ``order`` (indices sorted by ascending length) greedily into batches.

    A batch grows while ``len(batch) * longest <= max_batch_samples`` and ``len(batch) <=
    max_batch_size`` (None: no such limit); a single item always forms a batch.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for index in np.asarray(order, dtype=np.int64).tolist():
        size = int(lengths[index])
        too_big = max_batch_samples is not None and (len(current) + 1) * size > max_batch_samples
        too_many = max_batch_size is not None and len(current) >= max_batch_size
        if current and (too_big or too_many):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def shuffled_buckets(lengths: np.ndarray, *, seed: int, epoch: int, chunk: int, max_batch_samples: int | None = None,
                     max_batch_size: int | None = None) -> list[list[int]]:
    """One epoch's batches of indices, a pure function of (seed, epoch): items shuffled, sorted by
    length within runs of ``chunk`` (less padding), cut by :func:`group_by_budget`, batches shuffled."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = order[start: start + chunk]
        batches.extend(group_by_budget(part[np.argsort(lengths[part], kind="stable")], lengths,
                                       max_batch_samples, max_batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
