"""Faster CPU training paths of the reference modules, kept out of them.

The reference :class:`~wavssl.modules.frontend.WaveformEncoder` and
:class:`~wavssl.modules.context.PositionalConv` compute on (B, C, T) activations, as inference,
export and GPUs run them. On a CPU, oneDNN trains both faster on channels-last data; the functions
here compute the same function with the same parameters that way. A module takes its path only in
training, on a CPU, and only once :func:`use_cpu_training_paths` has set it (the trainer does when
its device is a CPU). ``tests/test_modules.py`` checks values and gradients against the reference in
fp32 and under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .context import PositionalConv
from .frontend import WaveformEncoder, block_parts


def waveform_channels_last(encoder: WaveformEncoder, wav: Tensor) -> Tensor:
    """The encoder's blocks on channels-last (B, T, C) activations: (B, T) -> (B, F, D) contiguous.

    ~1.5x faster forward + backward on a CPU (see :class:`_TimeConv`): no transposes, no oneDNN
    layout reorders, and the first block's GroupNorm folded into its conv (:func:`_conv_groupnorm`).
    Same parameters and function as the blocks, up to float rounding (~1e-6 relative).
    """
    x = wav.unsqueeze(-1)  # (B, T, 1)
    for i, block in enumerate(encoder.blocks):
        conv, norm = block_parts(block)
        if i == 0 and isinstance(norm, nn.GroupNorm):
            x = _conv_groupnorm(wav, conv, norm)
        else:
            x = _time_conv(x, conv.weight, conv.bias, conv.stride[0])
            if isinstance(norm, nn.LayerNorm):
                x = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        x = F.gelu(x)
    return x


def positional_conv_channels_last(pos: PositionalConv, x: Tensor) -> Tensor:
    """The positional conv on the channels-last (B, F, E) layout read as NHWC: (B, F, E) -> (B, F, E).
    oneDNN's grouped conv forward + backward is about twice as fast there, and nothing is transposed."""
    y = F.pad(x, (0, 0, pos.left, pos.lookahead)).transpose(1, 2).unsqueeze(2)  # (B, E, 1, F')
    y = F.conv2d(y, pos.conv.weight.unsqueeze(2), pos.conv.bias, groups=pos.conv.groups)
    return F.gelu(y.squeeze(2).transpose(1, 2))


def use_cpu_training_paths(model: nn.Module, enabled: bool = True) -> int:
    """Route the training forward of every waveform front end and positional conv in ``model``
    through the fast CPU paths above (or back to the reference modules); returns how many modules
    were switched. Only training on a CPU device takes them; eval, export and GPUs never do."""
    switched = 0
    for module in model.modules():
        if isinstance(module, WaveformEncoder):
            module.cpu_training_path = waveform_channels_last if enabled else None
            switched += 1
        elif isinstance(module, PositionalConv):
            module.cpu_training_path = positional_conv_channels_last if enabled else None
            switched += 1
    return switched


def _nchw(x: Tensor) -> Tensor:
    """Channels-last (B, T, C) -> the (B, C, 1, T) view that 2-D convolutions read as NHWC."""
    return x.transpose(1, 2).unsqueeze(2)


def _conv_cl(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    """Unpadded strided conv over time: (B, T, C_in) -> contiguous (B, T_out, C_out)."""
    y = F.conv2d(_nchw(x), weight.unsqueeze(2), bias, stride=(1, stride))
    return y.squeeze(2).transpose(1, 2).contiguous()  # a no-op when the conv kept NHWC


class _TimeConv(torch.autograd.Function):
    """:func:`_conv_cl` with a hand-written backward for CPU training.

    oneDNN (torch's CPU conv backend) runs the forward and the input gradient fastest on
    channels-last data, but its weight gradient wants channels-first data (channels-last is several
    times slower) and transposing both operands costs as much as the product itself; so the weight
    gradient is taken as k batched matmuls, one per tap, on strided views of the channels-last input
    (:func:`_conv_weight_grad`), with no copies.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return _conv_cl(x, weight, bias, stride)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        s = ctx.stride
        grad = grad.contiguous()
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.ops.aten.convolution_backward(
                _nchw(grad), _nchw(x), weight.unsqueeze(2), None, (1, s), (0, 0), (1, 1), False, (0, 0), 1,
                (True, False, False))[0]
            grad_x = grad_x.squeeze(2).transpose(1, 2).contiguous()
        if need_w:
            grad_w = _conv_weight_grad(x, grad, weight.shape[2], s)
        if need_b:
            grad_b = grad.sum((0, 1))
        return grad_x, grad_w, grad_b, None


def _conv_weight_grad(x: Tensor, grad: Tensor, kernel: int, stride: int) -> Tensor:
    """Weight gradient of an unpadded strided conv over time, channels-last.

    x: (B, T, C_in) conv input; grad: (B, T_out, C_out) output gradient -> (C_out, C_in, kernel).
    Tap j of the kernel sees frames j, j + stride, ...: a strided view of ``x``, so each tap is one
    batched matmul summed over the batch.
    """
    n = grad.shape[1]
    grad_t = grad.transpose(1, 2)  # (B, C_out, T_out)
    if x.shape[2] == 1:  # one input channel: all taps at once from the (small) window matrix
        return torch.bmm(grad_t, x.squeeze(2).unfold(1, kernel, stride)[:, :n]).sum(0).unsqueeze(1)
    span = stride * (n - 1) + 1
    return torch.stack([torch.bmm(grad_t, x[:, j: j + span: stride]).sum(0) for j in range(kernel)], dim=-1)


def _time_conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    """Strided conv of the waveform encoder on channels-last (B, T, C) CPU activations.

    Under CPU autocast the operands are cast to the autocast dtype first (differentiably, so the
    fp32 parameters still get fp32 gradients) and :class:`_TimeConv` runs with autocast off: its
    hand-written backward then sees one dtype, as autocast's own conv would have given it.
    """
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        with torch.autocast("cpu", enabled=False):
            return _time_conv(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype), stride)
    if torch.is_grad_enabled():
        return _TimeConv.apply(x, weight, bias, stride)
    return _conv_cl(x, weight, bias, stride)


def _conv_groupnorm(wav: Tensor, conv: nn.Conv1d, norm: nn.GroupNorm) -> Tensor:
    """First block of the ``default`` front end, GroupNorm(conv(wav)) with one group per channel,
    as one batched matmul: (B, T) waveform -> (B, T_out, C) channels-last.

    The conv is linear in the k-sample windows of the waveform, so each channel's mean and variance
    over time follow from the windows' mean m and covariance S (a k x k matrix per utterance):
    mean_c = w_c.m + b_c and var_c = w_c' S w_c. The normalised output is then the conv with its
    weight scaled by gamma_c / sqrt(var_c + eps) plus a per-utterance bias, computed in one pass
    instead of writing the conv output and reading it twice more for the statistics and the norm
    (and twice more in the backward).
    """
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    windows = wav.unfold(1, kernel, stride)  # (B, T_out, k), a view
    w = conv.weight.squeeze(1)  # (C, k)
    stats = windows.double()  # the k x k statistics are cheap; float64 keeps the variance exact
    mean = stats.mean(1)  # (B, k)
    centred = stats - mean[:, None]
    cov = centred.transpose(1, 2) @ centred / max(windows.shape[1], 1)  # (B, k, k), biased like GroupNorm
    var = torch.einsum("ck,bkl,cl->bc", w.double(), cov, w.double()).to(w.dtype)  # (B, C)
    scale = norm.weight * torch.rsqrt(var + norm.eps)  # (B, C)
    channel_mean = torch.einsum("ck,bk->bc", w, mean.to(w.dtype))  # of the conv output, less its bias
    # out = scale * (w.x + b - (channel_mean + b)) + beta; b cancels (and gets GroupNorm's zero gradient)
    offset = -channel_mean if conv.bias is None else conv.bias - (channel_mean + conv.bias)
    shift = norm.bias + scale * offset
    # the shift rides in the matmul as a constant-1 input column, so the output is written once
    ones = windows.new_ones(windows.shape[:2] + (1,))
    weight = torch.cat([(w * scale.unsqueeze(-1)).transpose(1, 2), shift.unsqueeze(1)], dim=1)  # (B, k + 1, C)
    return torch.bmm(torch.cat([windows, ones], dim=-1), weight)
