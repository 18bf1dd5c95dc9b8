"""Audio data: scanning, decoding, cropping and bucketed batching.

The synthetic speech generator lives in :mod:`wavssl.data.synth` (not imported here so
that ``python -m wavssl.data.synth`` runs cleanly).
"""

from wavssl.data.audio import (
    AUDIO_EXTENSIONS,
    AudioBatch,
    AudioError,
    AudioItem,
    BucketBatchSampler,
    CropDataset,
    ScanResult,
    load_audio,
    make_loader,
    resampled_length,
    scan_audio,
    write_skipped,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioBatch",
    "AudioError",
    "AudioItem",
    "BucketBatchSampler",
    "CropDataset",
    "ScanResult",
    "load_audio",
    "make_loader",
    "resampled_length",
    "scan_audio",
    "write_skipped",
]
