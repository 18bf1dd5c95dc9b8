"""Export-time graph modules: what ``wavssl export`` traces into ONNX.

They hold the fine-tuned model's own (weight-norm-folded) parameters and compute the same function as
its eval-mode ``forward``, in a form ONNX Runtime runs fast on a CPU:

- **Fused attention** (``fused=True``): each self-attention block becomes one ``com.microsoft``
  ``Attention`` node (fused QKV projection, key-padding mask given as per-utterance frame counts),
  which ``onnxruntime.quantization`` turns into ``QAttention`` for int8; GELU becomes
  ``com.microsoft.Gelu`` (fused with its bias as ``BiasGelu``). Contrib ops run on ONNX Runtime only;
  ``fused=False`` keeps standard ONNX (SDPA with boolean masks) for other runtimes.
- **Conv front end as matrix products** (``fused=True``, waveform front end): every strided conv of
  the wav2vec2 feature encoder runs on channels-last frames as one ``Gather`` of its k-sample windows
  and one ``MatMul`` (which int8 quantization then covers, unlike ``Conv``); the first block's
  utterance-wide GroupNorm is folded into its weights from the windows' mean and covariance.
  The long early blocks run in a few time pieces (``MatMulWaveformFrontend.pieces``), so each
  piece's windows and product stay in cache between the ``Gather``, the product and the GELU.
- **Per-utterance standardisation** in the graph when the model was trained on standardised audio,
  over each row's valid samples only.

Nothing here has data-dependent Python control flow; padded rows give the same valid frames as
PyTorch on the same padded batch.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from wavssl_onnx.audio import STANDARDIZE_EPS

from .models import CTCModel, Encoder, SequenceClassifier
from .modules.context import ContextEncoder, SelfAttention
from .modules.frontend import WaveformEncoder, as_frontend, block_parts

if TYPE_CHECKING:
    from onnxscript.values import Op

ModuleT = TypeVar("ModuleT", bound=nn.Module)

NORMALIZE_EPS = STANDARDIZE_EPS
"""Variance floor of the per-utterance standardisation: the runtime's and training's, one definition."""


# ------------------------------------------------------------------------------- contrib ops


@torch.library.custom_op("wavssl_export::attention", mutates_args=())
def fused_attention(x: Tensor, weight: Tensor, bias: Tensor, lengths: Tensor, num_heads: int) -> Tensor:
    """Multi-head self-attention with a fused QKV projection and a key-padding mask.

    Args:
        x: (B, F, E) frames. weight: (E, 3E) = [Q | K | V] columns, heads contiguous. bias: (3E,).
        lengths: (B,) valid frames; keys at and after a row's length are masked.
        num_heads: H.
    Returns:
        (B, F, E) attention output before the output projection. Exported as ``com.microsoft.Attention``.
    """
    b, f, e = x.shape
    q, k, v = (x @ weight + bias).view(b, f, 3, num_heads, e // num_heads).permute(2, 0, 3, 1, 4)
    keep = (torch.arange(f, device=x.device)[None, :] < lengths[:, None])[:, None, None, :]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    return y.transpose(1, 2).reshape(b, f, e)


@fused_attention.register_fake
def _fused_attention_fake(x: Tensor, weight: Tensor, bias: Tensor, lengths: Tensor, num_heads: int) -> Tensor:
    return torch.empty_like(x)


def _contrib_ops() -> tuple[Op, Op]:
    """``com.microsoft`` Attention and Gelu as onnxscript ops (their schemas are not in onnx)."""
    from onnx.defs import OpSchema
    from onnxscript.values import Op, Opset

    ms = Opset("com.microsoft", 1)
    fp = OpSchema.FormalParameter
    attention = OpSchema(
        "Attention", "com.microsoft", 1,
        inputs=[fp("input", "T"), fp("weights", "T"), fp("bias", "T"), fp("mask_index", "M")],
        outputs=[fp("output", "T")],
        type_constraints=[("T", ["tensor(float)"], ""), ("M", ["tensor(int32)"], "")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "")],
    )
    gelu = OpSchema("Gelu", "com.microsoft", 1, inputs=[fp("X", "T")], outputs=[fp("Y", "T")],
                    type_constraints=[("T", ["tensor(float)"], "")])
    return Op(ms, "Attention", attention), Op(ms, "Gelu", gelu)


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``: fused attention and exact
    (erf) GELU to ONNX Runtime contrib ops."""
    from onnxscript import opset18 as op

    ms_attention, ms_gelu = _contrib_ops()

    def attention(x, weight, bias, lengths, num_heads: int):
        return ms_attention(x, weight, bias, op.Cast(lengths, to=6), num_heads=num_heads)  # 6 = INT32

    def gelu(x, approximate: str = "none"):
        if approximate != "none":
            raise NotImplementedError("only the exact (erf) GELU is mapped to com.microsoft.Gelu")
        return ms_gelu(x)

    return {torch.ops.wavssl_export.attention.default: attention, torch.ops.aten.gelu.default: gelu}


# ------------------------------------------------------------------------------------ helpers


def frozen_copy(model: ModuleT) -> ModuleT:
    """A deep copy in eval mode with weight norm (any parametrization) folded into plain weights,
    layer drop off and no gradients."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if parametrize.is_parametrized(module):
            _fold_parametrizations(module)
        if isinstance(module, ContextEncoder):
            module.layer_drop = 0.0
    return model.requires_grad_(False)


def _fold_parametrizations(module: nn.Module) -> None:
    """Replace every parametrized tensor of ``module`` by its current value as a plain parameter.

    (``parametrize.remove_parametrizations`` would edit the generated class that a deep copy shares
    with the original module, stripping the original's weight too; this only touches the copy.)
    """
    values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}  # type: ignore[union-attr]
    module.__class__ = module.__class__.__bases__[0]
    del module._modules["parametrizations"]
    for name, value in values.items():
        module.register_parameter(name, nn.Parameter(value, requires_grad=False))


def valid_mask(lengths: Tensor, size: int) -> Tensor:
    """(B,) lengths -> (B, size) bool, True at valid positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def standardize(wav: Tensor, lengths: Tensor) -> Tensor:
    """Zero mean, unit variance over each row's valid samples; padding stays 0.

    wav: (B, T); lengths: (B,) -> (B, T). Same as ``wavssl_onnx.audio.standardize`` per utterance
    (which works in float64; here float32 sums).
    """
    keep = valid_mask(lengths, wav.shape[1]).to(wav.dtype)
    count = lengths.clamp(min=1).to(wav.dtype)[:, None]
    mean = (wav * keep).sum(1, keepdim=True) / count
    centred = (wav - mean) * keep
    var = (centred * centred).sum(1, keepdim=True) / count
    return centred * torch.rsqrt(var + NORMALIZE_EPS)


def conv_windows(x: Tensor, kernel: int, stride: int, start: int | None = None, end: int | None = None) -> Tensor:
    """The k-sample windows of an unpadded strided conv, gathered: (B, L, C) -> (B, F, k * C),
    F = (L - k) // s + 1, tap-major (column ``j * C + c`` is tap j of channel c); with ``start`` /
    ``end``, only output frames [start, end) (which may be symbolic sizes under export)."""
    b, length, channels = x.shape
    if start is None or end is None:
        start, end = 0, (length - kernel) // stride + 1
    first = torch.arange(start, end, device=x.device) * stride
    index = first[:, None] + torch.arange(kernel, device=x.device)
    return x.index_select(1, index.reshape(-1)).reshape(b, end - start, kernel * channels)


PIECE_FRAMES = 2000
"""Output frames per time piece of a front-end product at :data:`PIECE_REFERENCE_SAMPLES` of input.
Measured with ONNX Runtime int8 on 2 cores (BASE, 10 s): block 1 (the quantization of its input, the
windows, the 16000 x 1536 @ 1536 x 512 product, GELU, the quantization of its output) takes 28.5 ms
in one piece and 22.3 ms in 8 (2000 rows), whose gathered windows (3 MB) and outputs (4 MB) stay in
cache; 500-row pieces are slower again (23.8 ms)."""

PIECE_REFERENCE_SAMPLES = 160_000
"""Input length (10 s at 16 kHz) the piece counts are sized for. The counts are fixed in the graph,
so a 30 s input runs 6000-row pieces (still faster than one: 70 vs 89 ms for block 1)."""


# --------------------------------------------------------------------------------- front end


class MatMulWaveformFrontend(nn.Module):
    """:class:`~wavssl.modules.frontend.WaveformEncoder` (eval) on channels-last frames, each conv as
    windows @ weight; same function, float rounding aside.

    Block 0 reads k0-sample windows of the waveform; every later block gathers its k-frame windows
    of the previous block's output (``conv_windows``), which int8 quantization then covers as one
    product (``wavssl.onnx_int8.quantize_before_gather`` makes it quantize each frame once).

    Block i >= 1 runs in ``pieces[i]`` equal time pieces (windows, product, bias, norm and GELU per
    piece, then one concatenation): the same function, computed in a cache-friendly order. Block 0 is
    one piece (splitting its float product gains nothing: the concatenation costs what it saves).

    Block 0's GroupNorm (``norm_mode="default"``: one group per channel, statistics over all frames
    of the padded row, as in PyTorch) is folded into its weight: with m and S the mean and
    covariance of block 0's windows, channel c has mean w_c.m and variance w_c' S w_c, so the block
    is windows @ (w * scale) + shift with a per-utterance scale and shift (the shift rides in the
    product as a constant-1 input column).
    """

    def __init__(self, frontend: WaveformEncoder, reference_samples: int = PIECE_REFERENCE_SAMPLES) -> None:
        """``reference_samples``: the input length the time pieces are sized for (about
        :data:`PIECE_FRAMES` output frames each); a short one (a streaming window) gives one piece."""
        super().__init__()
        self.specs = frontend.specs
        self.pieces = piece_counts(self.specs, reference_samples)
        self.weights = nn.ParameterList()
        self.norms = nn.ModuleList()
        self.kinds: list[str] = []
        for i, block in enumerate(frontend.blocks):
            conv, norm = block_parts(block)
            c_out, c_in, k = conv.weight.shape
            w = conv.weight.detach().permute(2, 1, 0).reshape(k * c_in, c_out).contiguous()
            self.weights.append(nn.Parameter(w, requires_grad=False))
            self.register_buffer(f"bias{i}", None if conv.bias is None else conv.bias.detach().clone())
            if isinstance(norm, nn.GroupNorm):
                if norm.num_groups != norm.num_channels or i != 0:
                    raise ValueError("only a per-channel GroupNorm on the first block can be folded")
                self.kinds.append("group")
                self.norms.append(norm)
            elif isinstance(norm, nn.LayerNorm):
                self.kinds.append("layer")
                self.norms.append(norm)
            else:
                self.kinds.append("none")
                self.norms.append(nn.Identity())

    def _first_block(self, wav: Tensor) -> Tensor:
        """(B, T) -> (B, F0, C0): GELU(norm(block 0)) with a GroupNorm folded into the product."""
        kernel, stride = self.specs[0]
        windows = conv_windows(wav.unsqueeze(-1), kernel, stride)  # (B, F0, k0)
        if self.kinds[0] != "group":
            return self._finish(0, windows @ self.weights[0])
        norm, w = self.norms[0], self.weights[0]  # w: (k0, C0)
        assert isinstance(norm, nn.GroupNorm)  # kinds[0] == "group"
        b, frames = windows.shape[:2]
        mean = windows.mean(1, keepdim=True)  # (B, 1, k0)
        centred = windows - mean
        cov = centred.transpose(1, 2) @ centred / frames  # (B, k0, k0), biased like GroupNorm
        var = ((cov @ w) * w).sum(1)  # (B, C0)
        scale = norm.weight * torch.rsqrt(var + norm.eps)  # (B, C0); the conv bias cancels
        shift = norm.bias - scale * (mean.squeeze(1) @ w)  # (B, C0)
        weight = torch.cat([w.unsqueeze(0) * scale.unsqueeze(1), shift.unsqueeze(1)], dim=1)  # (B, k0 + 1, C0)
        return F.gelu(torch.cat([windows, windows.new_ones(b, frames, 1)], dim=-1) @ weight)

    def _finish(self, i: int, x: Tensor) -> Tensor:
        """Bias, per-frame LayerNorm (if any) and GELU of block ``i``'s product x (B, F, C)."""
        bias = getattr(self, f"bias{i}")
        if bias is not None:
            x = x + bias
        if self.kinds[i] == "layer":
            x = _norm_last(self.norms[i], x)
        return F.gelu(x)

    def forward(self, wav: Tensor) -> Tensor:
        """wav: (B, T) -> frames (B, F, D)."""
        x = self._first_block(wav)
        for i in range(1, len(self.specs)):
            kernel, stride = self.specs[i]
            frames = (x.shape[1] - kernel) // stride + 1
            bounds = [frames * j // self.pieces[i] for j in range(self.pieces[i] + 1)]
            parts = [self._finish(i, conv_windows(x, kernel, stride, a, b) @ self.weights[i])
                     for a, b in zip(bounds[:-1], bounds[1:])]
            x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return x


def piece_counts(specs: tuple[tuple[int, int], ...], reference_samples: int) -> list[int]:
    """Time pieces per front-end block: ``round(frames / PIECE_FRAMES)`` (at least 1) of the block's
    output frames for an input of ``reference_samples``; block 0 is always 1."""
    counts, length = [], reference_samples
    for i, (kernel, stride) in enumerate(specs):
        length = max(0, (length - kernel) // stride + 1)
        counts.append(1 if i == 0 else max(1, round(length / PIECE_FRAMES)))
    return counts


def _norm_last(norm: nn.Module, x: Tensor) -> Tensor:
    """A front end's per-frame LayerNorm (which reads (B, C, T)) applied over the last axis of ``x``."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- context


class ContextGraph(nn.Module):
    """:class:`~wavssl.modules.context.ContextEncoder` (eval) with each attention block as one fused
    op; falls back to the module itself when it uses chunked attention masks or ``fused`` is off."""

    def __init__(self, context: ContextEncoder, fused: bool) -> None:
        super().__init__()
        self.context = context
        self.fused = fused and context.attention_chunk <= 0

    def forward(self, x: Tensor, padding_mask: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        """x: (B, F, E) projected frames; padding_mask: (B, F); lengths: (B,) valid frames
        -> (every layer's output (B, F, E) each, last hidden state (B, F, E))."""
        if not self.fused:
            out = self.context(x, padding_mask)
        else:
            def attend(attention: SelfAttention, h: Tensor) -> Tensor:  # (B, F, E) -> (B, F, E), one fused op
                return attention.out(fused_attention(h, attention.qkv.weight.T, attention.qkv.bias, lengths,
                                                     attention.num_heads))

            out = self.context(x, padding_mask, attend)
        return list(out.layer_outputs), out.last_hidden_state


class EncoderGraph(nn.Module):
    """The shared :class:`~wavssl.models.Encoder` in eval mode: front end -> LayerNorm -> projection ->
    context, returning the projected frames, every layer's output and the frame lengths."""

    def __init__(self, encoder: Encoder, fused: bool) -> None:
        super().__init__()
        self.frontend = as_frontend(encoder.frontend)
        self.matmul_frontend = MatMulWaveformFrontend(encoder.frontend) \
            if fused and isinstance(encoder.frontend, WaveformEncoder) else None
        self.feature_norm, self.feature_proj = encoder.feature_norm, encoder.feature_proj
        self.context = ContextGraph(encoder.context, fused)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, list[Tensor], Tensor, Tensor, Tensor]:
        """x: (B, T) waveform or (B, C, T) series; lengths: (B,) valid samples -> (projected frames
        (B, F, E), layer outputs, last hidden state (B, F, E), frame lengths (B,), padding mask (B, F))."""
        if self.matmul_frontend is not None:
            frames = self.matmul_frontend(x)
        else:
            frames = self.frontend(x, lengths).features
        frame_lengths = self.frontend.output_lengths(lengths)
        padding = ~valid_mask(frame_lengths, frames.shape[1])
        projected = self.feature_proj(self.feature_norm(frames))
        outputs, last = self.context(projected, padding, frame_lengths)
        return projected, outputs, last, frame_lengths, padding


# ------------------------------------------------------------------------------------- heads


class CTCGraph(nn.Module):
    """Recognizer graph: (waveform (B, T) float32 at the model's rate, lengths (B,) int64 samples)
    -> (log_probs (B, F, V) float32 log-softmax, frame lengths (B,) int64).

    Standardises each utterance over its valid samples first when the model was trained so."""

    def __init__(self, model: CTCModel, fused: bool = True) -> None:
        super().__init__()
        model = frozen_copy(model)
        self.encoder = EncoderGraph(model.encoder, fused)
        self.head = model.head
        self.normalize = bool(getattr(model, "normalize_audio", False))

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.normalize:
            waveform = standardize(waveform, lengths)
        _, _, last, frame_lengths, _ = self.encoder(waveform, lengths)
        return torch.log_softmax(self.head(last), dim=-1), frame_lengths


class ClassifierGraph(nn.Module):
    """Classifier graph: (series (B, C, T) float32, NaN where missing, lengths (B,) int64 samples)
    -> log_probs (B, K) float32 log-softmax over classes."""

    def __init__(self, model: SequenceClassifier, fused: bool = True) -> None:
        super().__init__()
        model = frozen_copy(model)
        self.encoder = EncoderGraph(model.encoder, fused)
        self.model = model

    def forward(self, series: Tensor, lengths: Tensor) -> Tensor:
        projected, outputs, last, _, padding = self.encoder(series, lengths)
        states = self.model.select_states(projected, outputs, last)
        return torch.log_softmax(self.model.head(states, padding).logits, dim=-1)
