"""Front ends: raw signal -> frames (waveform conv stack, log-mel fbank, multichannel sensor series).

Every front end maps ``(x, lengths)`` to :class:`Frames` and exposes ``output_lengths`` (a pure
function of input lengths), so padding masks can be computed without running the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConvSpec, FbankFrontend, FrontendConfig, SensorFrontend, WaveformFrontend


@dataclass
class Frames:
    """Output of a front end."""

    features: Tensor
    """(B, F, D) frame features."""
    lengths: Tensor
    """(B,) number of valid frames per item."""


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over channels of a (B, C, T) tensor: per-frame normalisation."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class _GradScale(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """``x`` unchanged, with its gradient multiplied by ``scale`` (fairseq's feature_grad_mult)."""
    return _GradScale.apply(x, scale)


def conv_output_lengths(lengths: Tensor, specs: tuple[tuple[int, int], ...]) -> Tensor:
    """Output lengths of a stack of unpadded convolutions.

    Args:
        lengths: (B,) input lengths.
        specs: (kernel, stride) per layer.
    Returns:
        (B,) output lengths, clamped at 0.
    """
    for kernel, stride in specs:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


def conv_blocks(in_channels: int, conv_layers: tuple[ConvSpec, ...], *, norm_mode: str = "default",
                conv_bias: bool = False) -> nn.ModuleList:
    """Unpadded conv blocks (conv -> [norm] -> GELU) over (B, C, T) inputs, Kaiming-initialised.

    ``norm_mode="default"``: GroupNorm with one group per channel (statistics over time) on the first
    block only; ``"layer_norm"``: per-frame LayerNorm over channels in every block.
    """
    blocks: list[nn.Module] = []
    in_ch = in_channels
    for i, (ch, kernel, stride) in enumerate(conv_layers):
        layers: list[nn.Module] = [nn.Conv1d(in_ch, ch, kernel, stride=stride, bias=conv_bias)]
        if norm_mode == "layer_norm":
            layers.append(_ChannelLayerNorm(ch))
        elif norm_mode == "default" and i == 0:
            layers.append(nn.GroupNorm(ch, ch))
        layers.append(nn.GELU())
        blocks.append(nn.Sequential(*layers))
        in_ch = ch
    out = nn.ModuleList(blocks)
    for m in out.modules():
        if isinstance(m, nn.Conv1d):
            nn.init.kaiming_normal_(m.weight)
    return out


def block_parts(block: nn.Module) -> tuple[nn.Conv1d, nn.Module]:
    """A :func:`conv_blocks` block's conv and the module after it (its norm, or the GELU of a block
    without one)."""
    assert isinstance(block, nn.Sequential)
    conv = block[0]
    assert isinstance(conv, nn.Conv1d)
    return conv, block[1]


def receptive_field(specs: tuple[tuple[int, int], ...]) -> int:
    """Input samples one output frame of a stack of unpadded convolutions sees; specs: (kernel, stride) per layer."""
    field, jump = 1, 1
    for kernel, stride in specs:
        field += (kernel - 1) * jump
        jump *= stride
    return field


class WaveformEncoder(nn.Module):
    """wav2vec2 conv feature encoder: 7 strided conv blocks with GELU (20 ms frames at 16 kHz).

    ``norm_mode="default"`` puts a GroupNorm (one group per channel, statistics over time, so
    utterance-wide) on the first block; ``"layer_norm"`` puts a per-frame LayerNorm in every block.
    """

    def __init__(self, conv_layers: tuple[ConvSpec, ...], *, norm_mode: str = "default",
                 conv_bias: bool = False, feature_grad_mult: float = 1.0) -> None:
        super().__init__()
        self.blocks = conv_blocks(1, conv_layers, norm_mode=norm_mode, conv_bias=conv_bias)
        self.specs = tuple((k, s) for _, k, s in conv_layers)
        self.feature_grad_mult = feature_grad_mult
        self.out_dim = conv_layers[-1][0]

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) sample counts -> (B,) frame counts."""
        return conv_output_lengths(lengths, self.specs)

    cpu_training_path: Callable[[WaveformEncoder, Tensor], Tensor] | None = None
    """A faster computation of the blocks for CPU training, (encoder, (B, T) wav) -> (B, F, D); set by
    :func:`wavssl.modules.cpu_training.use_cpu_training_paths` (the trainer does, on a CPU)."""

    def forward(self, wav: Tensor, lengths: Tensor) -> Frames:
        """wav: (B, T) float waveform; lengths: (B,) valid samples -> Frames (B, F, D)."""
        if self.training and self.cpu_training_path is not None and wav.device.type == "cpu":
            x = self.cpu_training_path(self, wav)
        else:
            x = wav.unsqueeze(1)
            for block in self.blocks:
                x = block(x)
            x = x.transpose(1, 2)
        if self.training and self.feature_grad_mult != 1.0:
            x = scale_grad(x, self.feature_grad_mult)
        return Frames(x, self.output_lengths(lengths))


def fbank_output_lengths(lengths: Tensor, win_length: int, hop_length: int, stages: int) -> Tensor:
    """(B,) sample counts -> (B,) frames of :class:`FbankEncoder`: unpadded STFT frames, then ``stages``
    halvings by (kernel 3, stride 2, padding 1) convolutions."""
    lengths = conv_output_lengths(lengths, ((win_length, hop_length),))
    for _ in range(stages):  # ceil(n / 2)
        lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
    return lengths


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 20.0,
                   f_max: float | None = None) -> Tensor:
    """Triangular mel filters (HTK mel scale), shape (n_fft // 2 + 1, n_mels)."""
    f_max = f_max or sample_rate / 2

    def hz_to_mel(f: Tensor) -> Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lower) / (centre - lower)
    down = (upper - bins[None]) / (upper - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0).T.contiguous()


_STAGES = {1: 0, 2: 1, 4: 2}
"""fbank subsampling factor -> number of stride-2 convolutions."""


class FbankEncoder(nn.Module):
    """Log-mel filterbank computed with a strided conv (DFT basis, export-friendly) followed by
    conv subsampling to 20 ms (``subsampling=2``) or 40 ms (``4``) frames. Cheap on a CPU.

    With ``norm="global"`` each mel band is standardised by the ``center`` and ``scale`` buffers
    (:meth:`fit_normalization`; part of the checkpoint, and of the exported graph)."""

    dft: Tensor
    mel: Tensor
    center: Tensor
    scale: Tensor

    def __init__(self, *, sample_rate: int = 16000, n_mels: int = 80, win_length: int = 400,
                 hop_length: int = 160, n_fft: int = 512, subsampling: int = 2, channels: int = 256,
                 feature_grad_mult: float = 1.0, norm: str = "none") -> None:
        super().__init__()
        if norm not in ("none", "global"):
            raise ValueError(f"unknown log-mel normalisation {norm!r}")
        self.norm = norm
        if norm == "global":  # only then: checkpoints of un-normalised models keep their keys
            self.register_buffer("center", torch.zeros(n_mels, 1))
            self.register_buffer("scale", torch.ones(n_mels, 1))
        n_bins = n_fft // 2 + 1
        t = torch.arange(win_length, dtype=torch.float64)
        window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        freqs = torch.arange(n_bins, dtype=torch.float64)[:, None]
        phase = 2 * math.pi * freqs * t[None] / n_fft
        basis = torch.cat([torch.cos(phase), -torch.sin(phase)]) * window  # (2*n_bins, win)
        self.register_buffer("dft", basis.float().unsqueeze(1), persistent=False)
        self.register_buffer("mel", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)
        self.win_length, self.hop_length, self.n_bins = win_length, hop_length, n_bins
        stages = _STAGES[subsampling]
        layers: list[nn.Module] = [nn.Conv1d(n_mels, channels, 3, padding=1), nn.GELU()]
        for _ in range(stages):
            layers += [nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.GELU()]
        self.subsample = nn.Sequential(*layers)
        self.stages = stages
        self.feature_grad_mult = feature_grad_mult
        self.out_dim = channels

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) sample counts -> (B,) frame counts."""
        return fbank_output_lengths(lengths, self.win_length, self.hop_length, self.stages)

    def log_mel(self, wav: Tensor) -> Tensor:
        """(B, T) waveform -> (B, n_mels, N) natural-log mel energies (10 ms hop)."""
        spec = F.conv1d(wav.unsqueeze(1), self.dft, stride=self.hop_length)
        power = spec[:, : self.n_bins] ** 2 + spec[:, self.n_bins :] ** 2
        return torch.log(torch.matmul(power.transpose(1, 2), self.mel).clamp(min=1e-6)).transpose(1, 2)

    @torch.no_grad()
    def fit_normalization(self, waves: list[Tensor]) -> None:
        """Fit the ``global`` statistics on (T,) waveforms: per mel band, the mean and standard
        deviation (at least 1e-3) of the log-mel frames of all of them pooled together."""
        frames = torch.cat([self.log_mel(w.float()[None])[0] for w in waves], dim=1)  # (n_mels, N)
        self.center.copy_(frames.mean(1, keepdim=True))
        self.scale.copy_(frames.std(1, keepdim=True).clamp(min=1e-3))

    def forward(self, wav: Tensor, lengths: Tensor) -> Frames:
        """wav: (B, T); lengths: (B,) -> Frames (B, F, channels)."""
        x = self.log_mel(wav.float())
        if self.norm == "global":
            x = (x - self.center) / self.scale
        x = self.subsample(x)
        if self.training and self.feature_grad_mult != 1.0:
            x = scale_grad(x, self.feature_grad_mult)
        return Frames(x.transpose(1, 2), self.output_lengths(lengths))


def observed_quantiles(x: Tensor, observed: Tensor, q: Tensor) -> Tensor:
    """``torch.nanquantile(where(observed, x, nan), q, dim=-1)`` (linear interpolation), written so
    that it exports to ONNX with the same result: unobserved entries sort last as +inf instead of
    NaN (ONNX's TopK orders NaN differently from ``torch.sort``).

    Args:
        x: (..., T) values. observed: (..., T) bool. q: (Q,) quantiles in [0, 1].
    Returns:
        (Q, ...) quantiles of the observed entries of each row; NaN for a row with none.
    """
    ordered = torch.where(observed, x, torch.inf).sort(-1).values.unsqueeze(0)  # (1, ..., T)
    count = observed.sum(-1, keepdim=True).unsqueeze(0)  # (1, ..., 1)
    ranks = q.reshape((-1,) + (1,) * observed.dim()) * (count - 1).clamp(min=0).to(q.dtype)  # (Q, ..., 1)
    below, above = ranks.floor(), ranks.ceil()
    shape = ranks.shape[:-1] + ordered.shape[-1:]
    low = ordered.expand(shape).gather(-1, below.long())
    high = ordered.expand(shape).gather(-1, above.long())
    values = torch.lerp(low, high, ranks - below).squeeze(-1)  # (Q, ...)
    return torch.where(count.squeeze(-1) > 0, values, torch.nan)


def robust_center_scale(x: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row robust location and scale along the last axis, over observed entries only.

    The centre is the median; the scale is the inter-quartile range / 1.349 (the standard deviation
    of a normal), falling back to the standard deviation when the IQR is zero (quantised or mostly
    flat signals) and to 1 when that is zero too (a constant row, which then normalises to 0). A
    row with no observed entry gets centre 0 and scale 1.

    Args:
        x: (..., T) values (may hold NaN where not observed).
        observed: (..., T) bool, True where ``x`` is a real sample.
    Returns:
        centre, scale: (...) each, finite.
    """
    v = torch.where(observed, x.float(), torch.nan)
    q = observed_quantiles(v, observed, torch.tensor([0.25, 0.5, 0.75], device=x.device))  # (3, ...)
    centre = torch.nan_to_num(q[1], nan=0.0)
    iqr = torch.nan_to_num(q[2] - q[0], nan=0.0) / 1.349
    count = observed.sum(-1).clamp(min=1)
    dev = torch.where(observed, v - centre.unsqueeze(-1), 0.0)
    std = torch.sqrt((dev * dev).sum(-1) / count)
    tiny = 1e-6 * centre.abs() + 1e-12
    scale = torch.where(iqr > tiny, iqr, torch.where(std > tiny, std, torch.ones_like(std)))
    return centre, scale


def interpolate_gaps(x: Tensor, observed: Tensor) -> Tensor:
    """Fill unobserved entries by linear interpolation along the last axis.

    Each gap is bridged linearly between the nearest observed samples before and after it; before
    the first (after the last) observed sample the value is held at that sample; a row with no
    observed sample becomes 0. Vectorised, no loops, and exportable to ONNX (which has no
    cumulative max): the observed positions are scattered into rank order, and each sample looks
    up the nearest one before and after it by its running count of observed samples.

    Args:
        x: (..., T) values; unobserved entries may be anything, NaN included.
        observed: (..., T) bool.
    Returns:
        (..., T) finite wherever ``x`` is finite at the observed entries.
    """
    t_len = x.shape[-1]
    t = torch.arange(t_len, device=x.device)
    x0 = torch.where(observed, x, 0.0)
    count = observed.long().cumsum(-1)  # (..., T) observed samples at or before t
    total = count[..., -1:]
    rank = torch.where(observed, count - 1, t_len)  # unobserved samples write to a spare slot T
    positions = torch.full(x.shape[:-1] + (t_len + 1,), t_len, dtype=torch.long, device=x.device)
    positions = positions.scatter(-1, rank, t.expand(rank.shape))  # k-th observed position, k < total
    before = count - observed.long()  # observed samples strictly before t
    prev = torch.where(count > 0, positions.gather(-1, (count - 1).clamp(min=0)), -1)  # last observed <= t
    nxt = torch.where(before < total, positions.gather(-1, before), t_len)  # first observed >= t
    has_prev, has_next = prev >= 0, nxt < t_len
    xp = x0.gather(-1, prev.clamp(min=0))
    xn = x0.gather(-1, nxt.clamp(max=t_len - 1))
    w = (t - prev).float() / (nxt - prev).clamp(min=1).float()
    bridged = xp + w * (xn - xp)
    edge = torch.where(has_prev, xp, torch.where(has_next, xn, torch.zeros_like(x0)))
    return torch.where(observed, x0, torch.where(has_prev & has_next, bridged, edge))


class SensorEncoder(nn.Module):
    """Multichannel sensor series (accelerometer, gyroscope, physiological signals) -> frames.

    On a batch ``x`` (B, C, T) with ``lengths`` (B,):

    1. **Missing values.** NaN or infinite samples (and the batch padding beyond each length) are
       unobserved: they are masked out of every statistic, then imputed (step 3). They never reach
       the network, so they never propagate.
    2. **Per-channel normalisation**, robust to scale and offset (:func:`robust_center_scale`):
       ``global`` subtracts per-channel medians and divides by per-channel robust scales fitted on
       the pretraining data (:meth:`fit_normalization`; stored as buffers, so they travel with the
       checkpoint); ``instance`` uses each series' own statistics; ``none`` skips this. A constant
       channel normalises to zeros.
    3. **Imputation** of unobserved samples inside a series by linear interpolation in time
       (:func:`interpolate_gaps`), i.e. in normalised units; padding is set to 0.
    4. **Channel dropout** (training only): whole channels of a series are zeroed with probability
       ``channel_dropout``.
    5. **Unpadded conv blocks** (conv -> per-frame LayerNorm -> GELU by default); the product of
       the strides is the frame shift. A series needs at least :attr:`receptive_field` samples to
       give one frame (data loading checks this and names the offending series).
    """

    center: Tensor
    scale: Tensor

    def __init__(self, in_channels: int, conv_layers: tuple[ConvSpec, ...], *, norm: str = "global",
                 channel_dropout: float = 0.0, norm_mode: str = "layer_norm", conv_bias: bool = True,
                 feature_grad_mult: float = 1.0) -> None:
        super().__init__()
        if norm not in ("global", "instance", "none"):
            raise ValueError(f"unknown sensor normalisation {norm!r}")
        self.in_channels, self.norm, self.channel_dropout = in_channels, norm, channel_dropout
        self.blocks = conv_blocks(in_channels, conv_layers, norm_mode=norm_mode, conv_bias=conv_bias)
        self.specs = tuple((k, s) for _, k, s in conv_layers)
        self.feature_grad_mult = feature_grad_mult
        self.out_dim = conv_layers[-1][0]
        self.register_buffer("center", torch.zeros(in_channels))
        self.register_buffer("scale", torch.ones(in_channels))

    @property
    def receptive_field(self) -> int:
        """Input samples seen by one output frame (the shortest usable series)."""
        return receptive_field(self.specs)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) samples -> (B,) frames."""
        return conv_output_lengths(lengths, self.specs)

    @torch.no_grad()
    def fit_normalization(self, series: list[Tensor]) -> None:
        """Fit the ``global`` statistics on a list of (C, T) series (NaN = missing); per channel,
        the robust centre and scale of all their samples pooled together."""
        values = torch.cat([s.float().reshape(self.in_channels, -1) for s in series], dim=1)  # (C, N)
        limit = (1 << 24) // self.in_channels  # torch.nanquantile's input size limit
        if values.shape[1] > limit:
            values = values[:, torch.linspace(0, values.shape[1] - 1, limit).long()]
        centre, scale = robust_center_scale(values, torch.isfinite(values))
        self.center.copy_(centre)
        self.scale.copy_(scale)

    def normalize(self, x: Tensor, observed: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T) per-channel normalised values (unobserved entries unspecified)."""
        if self.norm == "global":
            return (x - self.center[:, None]) / self.scale[:, None]
        if self.norm == "instance":
            centre, scale = robust_center_scale(x, observed)
            return (x - centre.unsqueeze(-1)) / scale.unsqueeze(-1)
        return x

    def forward(self, x: Tensor, lengths: Tensor) -> Frames:
        """x: (B, C, T) float, NaN where missing ((B, T) when C = 1); lengths: (B,) valid samples
        -> Frames (B, F, D)."""
        if x.dim() == 2 and self.in_channels == 1:
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"sensor front end expects (batch, {self.in_channels} channels, time), "
                             f"got shape {tuple(x.shape)}")
        x = x.float()
        valid = (torch.arange(x.shape[-1], device=x.device) < lengths[:, None]).unsqueeze(1)  # (B, 1, T)
        observed = torch.isfinite(x) & valid
        x = interpolate_gaps(self.normalize(x, observed), observed).masked_fill(~valid, 0.0)
        if self.training and self.channel_dropout > 0:
            dropped = torch.rand(x.shape[0], x.shape[1], 1, device=x.device) < self.channel_dropout
            x = x.masked_fill(dropped, 0.0)
        for block in self.blocks:
            x = block(x)
        if self.training and self.feature_grad_mult != 1.0:
            x = scale_grad(x, self.feature_grad_mult)
        return Frames(x.transpose(1, 2), self.output_lengths(lengths))


def frame_lengths(cfg: FrontendConfig, lengths: Tensor) -> Tensor:
    """(B,) input samples -> (B,) frames of the front end ``cfg`` describes: its ``output_lengths``,
    without building it (the data pipeline sizes masks with it)."""
    if isinstance(cfg, FbankFrontend):
        return fbank_output_lengths(lengths, cfg.win_length, cfg.hop_length, _STAGES[cfg.subsampling])
    return conv_output_lengths(lengths, tuple((k, s) for _, k, s in cfg.conv_layers))


FrontEnd = WaveformEncoder | FbankEncoder | SensorEncoder
"""The front ends :func:`build_frontend` builds."""


def as_frontend(module: nn.Module) -> FrontEnd:
    """An encoder's ``frontend`` module, typed as the front end it is."""
    assert isinstance(module, (WaveformEncoder, FbankEncoder, SensorEncoder)), type(module)
    return module


def build_frontend(cfg: FrontendConfig) -> FrontEnd:
    """The front end a front-end config describes (one module per kind)."""
    if isinstance(cfg, WaveformFrontend):
        return WaveformEncoder(cfg.conv_layers, norm_mode=cfg.norm_mode, conv_bias=cfg.conv_bias,
                               feature_grad_mult=cfg.feature_grad_mult)
    if isinstance(cfg, FbankFrontend):
        return FbankEncoder(sample_rate=cfg.sample_rate, n_mels=cfg.n_mels, win_length=cfg.win_length,
                            hop_length=cfg.hop_length, n_fft=cfg.n_fft, subsampling=cfg.subsampling,
                            channels=cfg.channels, feature_grad_mult=cfg.feature_grad_mult, norm=cfg.norm)
    assert isinstance(cfg, SensorFrontend), type(cfg)
    return SensorEncoder(cfg.in_channels, cfg.conv_layers, norm=cfg.norm, channel_dropout=cfg.channel_dropout,
                         norm_mode=cfg.norm_mode, conv_bias=cfg.conv_bias, feature_grad_mult=cfg.feature_grad_mult)
