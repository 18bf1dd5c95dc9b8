"""Streaming (chunk-by-chunk) inference of a recognizer trained with chunked attention.

A :class:`~wavssl.models.CTCModel` whose context Transformer attends by chunks
(``model.context.attention_chunk = C`` frames, ``attention_left_chunks = L >= 1``) and whose front
end is per-frame (no utterance-wide GroupNorm, no per-utterance standardisation) gives, chunk by
chunk, exactly the log-probabilities of its offline forward on the whole input. Two modules compute
it, and ``wavssl export --streaming`` traces each into its own graph:

- :class:`FrontendGraph`: waveform -> projected frames (front end, feature LayerNorm, projection);
  stateless. A frame depends on ``left_samples`` before it and ``right_samples`` after it
  (:func:`stream_geometry`), so overlapping windows give exact frames
  (:class:`wavssl_onnx.streaming.Windows`).
- :class:`ChunkStepGraph`: one chunk of n <= C projected frames plus the positional conv's R
  look-ahead frames, with explicit state in and out: the last P = K - 1 - R projected frames (the
  positional conv's left context, K = its kernel), every layer's keys and values over the last
  L * C frames, and the count of frames done (which marks the cache slots still empty at the
  start). Returns the chunk's (B, n, V) log-probabilities.

:class:`StreamingRecognizer` runs them in PyTorch behind the same streaming API as the runtime
(``create_stream`` / ``accept_waveform`` / ``decode`` / ``input_finished``), using the runtime's
window and chunk bookkeeping (:mod:`wavssl_onnx.streaming`), so the PyTorch and ONNX paths share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from wavssl_onnx.streaming import ChunkEngine, StateSpec, StreamGeometry, StreamingDecoder

from .models import CTCModel, frame_shift_samples, min_input_samples
from .modules.context import ContextEncoder, SelfAttention
from .modules.frontend import WaveformEncoder, as_frontend, block_parts
from .onnx_graph import MatMulWaveformFrontend, frozen_copy


class StreamingError(ValueError):
    """The model cannot run chunk by chunk (the message says which setting prevents it)."""


def _check_streamable(model: CTCModel) -> None:
    ctx: ContextEncoder = model.encoder.context
    frontend = model.encoder.frontend
    problems = []
    if ctx.attention_chunk <= 0:
        problems.append("model.context.attention_chunk is 0 (full attention); fine-tune with "
                        "--set model.context.attention_chunk=16 (frames) for a streaming model")
    elif ctx.attention_left_chunks < 1:
        problems.append(f"model.context.attention_left_chunks = {ctx.attention_left_chunks}; streaming needs a "
                        f"bounded left context of at least one chunk (e.g. 4)")
    if isinstance(frontend, WaveformEncoder) and any(isinstance(block_parts(b)[1], nn.GroupNorm) for b in frontend.blocks):
        problems.append("the front end normalises over the whole utterance (norm_mode 'default'); streaming "
                        "needs the per-frame 'layer_norm' or 'none' mode")
    if model.normalize_audio:
        problems.append("the model standardises each utterance (data.normalize = true), which needs the whole input")
    if problems:
        raise StreamingError("cannot stream this model: " + "; ".join(problems))


def frontend_context(frontend: nn.Module, hop: int) -> tuple[int, int]:
    """(left, right): input samples a frame depends on before its own hop-sized span and after it,
    read from the front end's gradients on a random input (its receptive field, padding aside)."""
    frames = 24
    gen = torch.Generator().manual_seed(0)
    wav = (torch.randn(1, frames * hop + 4096, generator=gen) * 0.1).requires_grad_(True)
    with torch.enable_grad():
        out = frontend(wav, torch.tensor([wav.shape[1]])).features  # (1, F, D)
        left = right = 0
        for j in (frames // 2 - 1, frames // 2, frames // 2 + 1):
            weight = torch.randn(out.shape[-1], generator=gen)
            (grad,) = torch.autograd.grad((out[0, j] * weight).sum(), wav, retain_graph=True)
            support = torch.nonzero(grad[0]).flatten()
            if len(support) == 0 or support[0] == 0 or support[-1] == wav.shape[1] - 1:
                raise StreamingError(f"cannot measure the front end's receptive field (over {frames // 2} frames)")
            left = max(left, j * hop - int(support[0]))
            right = max(right, int(support[-1]) + 1 - (j + 1) * hop)
    return left, max(right, 0)


def stream_geometry(model: CTCModel) -> StreamGeometry:
    """Chunk geometry and state shapes of a streaming-capable recognizer; raises
    :class:`StreamingError` naming what prevents streaming."""
    _check_streamable(model)
    ctx = model.encoder.context
    frontend = model.encoder.frontend
    hop = frame_shift_samples(frontend)
    was_training = frontend.training
    frontend.eval()
    try:
        left, right = frontend_context(frontend, hop)
    finally:
        frontend.train(was_training)
    kernel, lookahead = ctx.pos_conv.conv.kernel_size[0], ctx.pos_conv.lookahead
    chunk, left_chunks = ctx.attention_chunk, ctx.attention_left_chunks
    dim = model.head.in_features
    return StreamGeometry(
        chunk_frames=chunk, left_chunks=left_chunks, lookahead_frames=lookahead, frame_shift_samples=hop,
        left_samples=-(-left // hop) * hop, right_samples=right, frame_dim=dim,
        states=[StateSpec("pos_cache", "pos_cache_out", [kernel - 1 - lookahead, dim], "float32"),
                StateSpec("kv_cache", "kv_cache_out", [len(ctx.layers), 2, chunk * left_chunks, dim], "float32"),
                StateSpec("processed", "processed_out", [], "int64")],
    )


class FrontendGraph(nn.Module):
    """(waveform (B, T) float32, lengths (B,) int64) -> (projected frames (B, F, E), frame lengths (B,)).

    ``window_samples``: the waveform window one streaming step feeds (sizes the fused front end's
    time pieces; a window gives one piece per block)."""

    def __init__(self, model: CTCModel, fused: bool = True, window_samples: int = 0) -> None:
        super().__init__()
        encoder = frozen_copy(model).encoder
        self.frontend = as_frontend(encoder.frontend)
        self.matmul = MatMulWaveformFrontend(encoder.frontend, window_samples) \
            if fused and isinstance(encoder.frontend, WaveformEncoder) else None
        self.feature_norm, self.feature_proj = encoder.feature_norm, encoder.feature_proj

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        frames = self.matmul(waveform) if self.matmul is not None else self.frontend(waveform, lengths).features
        return self.feature_proj(self.feature_norm(frames)), self.frontend.output_lengths(lengths)


class ChunkStepGraph(nn.Module):
    """One streaming step of the context Transformer and CTC head.

    forward(frames (B, n + R, E): the chunk's n projected frames then R look-ahead frames (zeros past
    the end of the input); pos_cache (B, P, E); kv_cache (B, N, 2, L * C, E): each layer's keys and
    values of the last L * C frames; processed (B,) int64: frames done so far)
    -> (log_probs (B, n, V), pos_cache', kv_cache', processed + n).

    A non-final step has n = C. Cache slots not yet filled (``processed`` < L * C) are masked.
    """

    def __init__(self, model: CTCModel) -> None:
        super().__init__()
        model = frozen_copy(model)
        ctx: ContextEncoder = model.encoder.context
        self.ctx, self.head = ctx, model.head
        self.lookahead = ctx.pos_conv.lookahead
        self.pos_frames = ctx.pos_conv.conv.kernel_size[0] - 1 - self.lookahead
        self.cache_frames = ctx.attention_chunk * ctx.attention_left_chunks

    def forward(self, frames: Tensor, pos_cache: Tensor, kv_cache: Tensor,
                processed: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c, r = self.ctx, self.lookahead
        n = frames.shape[1] - r
        buf = torch.cat([pos_cache, frames], 1)  # (B, P + n + R, E)
        pos = F.gelu(c.pos_conv.conv(buf.transpose(1, 2))).transpose(1, 2)  # valid conv -> (B, n, E)
        x = frames[:, :n] + pos
        if not c.layer_norm_first:
            x = c.layer_norm(x)
        m = self.cache_frames
        slot = torch.arange(m, device=frames.device)[None, :]
        valid = torch.cat([slot >= (m - processed)[:, None], torch.ones_like(x[:, :, 0], dtype=torch.bool)], 1)
        valid = valid[:, None, None, :]
        caches: list[Tensor] = []
        for i, layer in enumerate(c.layers):
            def attend(attention: SelfAttention, h: Tensor, cache: Tensor = kv_cache[:, i]) -> Tensor:
                y, new_cache = attention.forward_cached(h, cache, valid)
                caches.append(new_cache)
                return y

            x = layer(x, attend=attend)
        if c.layer_norm_first:
            x = c.layer_norm(x)
        log_probs = torch.log_softmax(self.head(x), dim=-1)
        new_pos = buf[:, n: n + self.pos_frames]
        return log_probs, new_pos, torch.stack(caches, 1), processed + n


@dataclass
class _TorchStep:
    """The step function the chunk engine calls, in PyTorch: (1, n + R, E) frames + states -> log-probs + states."""

    step: ChunkStepGraph
    names: tuple[str, ...]
    """The state tensors in the step's argument order (:attr:`StreamGeometry.states`)."""

    def __call__(self, frames: np.ndarray, states: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        with torch.no_grad():
            out = self.step(torch.from_numpy(frames), *(torch.from_numpy(states[k]) for k in self.names))
        return out[0].numpy(), {k: t.numpy() for k, t in zip(self.names, out[1:])}


@dataclass
class _TorchFrontend:
    graph: FrontendGraph

    def __call__(self, window: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            frames, lengths = self.graph(torch.from_numpy(window[None]), torch.tensor([len(window)]))
        return frames[0, : int(lengths[0])].numpy()


class StreamingRecognizer(StreamingDecoder):
    """A chunk-attention recognizer run chunk by chunk in PyTorch, with the runtime's streaming API:

    >>> rec = StreamingRecognizer(wavssl.load("runs/asr_streaming"))
    >>> stream = rec.create_stream()
    >>> stream.accept_waveform(16000, samples)      # as audio arrives
    >>> rec.decode(stream).text                     # partial transcript
    >>> stream.input_finished(); rec.decode(stream) # final, with word times

    The log-probabilities equal the model's offline forward on the whole input (float rounding aside).
    """

    def __init__(self, model: CTCModel) -> None:
        if model.vocab is None:
            raise StreamingError("the recognizer has no vocabulary (load it from a run with wavssl.load)")
        geometry = stream_geometry(model)
        frontend = _TorchFrontend(FrontendGraph(model, fused=False).eval())
        step = _TorchStep(ChunkStepGraph(model).eval(), tuple(s.name for s in geometry.states))
        min_samples = min_input_samples(model.encoder.frontend)
        super().__init__(lambda: ChunkEngine(frontend, step, geometry, min_samples), model.vocab,
                         sample_rate=model.sample_rate, frame_shift=model.frame_shift,
                         latency=geometry.latency_samples / model.sample_rate)
        self.geometry = geometry


__all__ = ["ChunkStepGraph", "FrontendGraph", "StreamingError", "StreamingRecognizer", "frontend_context",
           "stream_geometry"]
