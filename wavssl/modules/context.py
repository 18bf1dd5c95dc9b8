"""Context network: convolutional positional embedding + Transformer layers on SDPA.

Supports post-LN (BASE) and pre-LN (LARGE) layers, key-padding masks, chunked attention masks and a
positional conv with bounded look-ahead (both for streaming), and layer drop in training only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


@dataclass
class ContextOutput:
    """Output of :class:`ContextEncoder`."""

    layer_outputs: tuple[Tensor, ...]
    """Each Transformer layer's output, (B, F, E) each (layers skipped by layer drop repeat the input)."""
    last_hidden_state: Tensor
    """(B, F, E) final output (after the final LayerNorm in pre-LN models)."""


class PositionalConv(nn.Module):
    """Grouped 1-D conv over time added to its input as a relative positional embedding.

    ``lookahead`` future frames are visible (centred when ``lookahead = -1``: ``kernel // 2``, one
    less for even kernels, matching a "same"-padded conv that drops its last output).
    """

    def __init__(self, dim: int, kernel: int, groups: int, *, use_weight_norm: bool = True,
                 lookahead: int = -1) -> None:
        super().__init__()
        conv = nn.Conv1d(dim, dim, kernel, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=(4.0 / (kernel * dim)) ** 0.5)
        assert conv.bias is not None  # nn.Conv1d's default bias=True
        nn.init.zeros_(conv.bias)
        self.conv = weight_norm(conv, name="weight", dim=2) if use_weight_norm else conv
        self.lookahead = (kernel // 2 - (1 - kernel % 2)) if lookahead < 0 else lookahead
        self.left = kernel - 1 - self.lookahead

    cpu_training_path: Callable[[PositionalConv, Tensor], Tensor] | None = None
    """A faster computation for CPU training, (module, (B, F, E)) -> (B, F, E); set by
    :func:`wavssl.modules.cpu_training.use_cpu_training_paths` (the trainer does, on a CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, F, E) -> positional embedding (B, F, E)."""
        if self.training and self.cpu_training_path is not None and x.device.type == "cpu":
            return self.cpu_training_path(self, x)
        y = F.pad(x.transpose(1, 2), (self.left, self.lookahead))
        return F.gelu(self.conv(y)).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection on ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """x: (B, F, E); attn_mask: bool, broadcastable to (B, H, F, F), True = may attend."""
        b, f, e = x.shape
        q, k, v = self.qkv(x).view(b, f, 3, self.num_heads, e // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, f, e))

    def forward_cached(self, x: Tensor, kv_cache: Tensor, attn_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Attention of n new frames over M cached ones and themselves (streaming, no dropout).

        x: (B, n, E); kv_cache: (B, 2, M, E) keys and values of the M frames before x; attn_mask: bool
        (B, 1, 1, M + n), True = may attend -> (output (B, n, E), the cache of the last M frames (B, 2, M, E)).
        """
        b, n, e = x.shape
        q, k, v = self.qkv(x).split(e, dim=-1)
        keys, values = torch.cat([kv_cache[:, 0], k], 1), torch.cat([kv_cache[:, 1], v], 1)  # (B, M + n, E)

        def heads(t: Tensor) -> Tensor:
            return t.reshape(b, t.shape[1], self.num_heads, e // self.num_heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(q), heads(keys), heads(values), attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(b, n, e)), torch.stack([keys[:, n:], values[:, n:]], 1)


Attend = Callable[[SelfAttention, Tensor], Tensor]
"""How a layer's attention block is computed: (the block, its (B, F, E) input) -> (B, F, E). The
default calls the block with the layer's mask; the export graph passes its fused op, the streaming
step the cached form (:meth:`SelfAttention.forward_cached`)."""


class TransformerLayer(nn.Module):
    """One Transformer layer; post-LN by default, pre-LN with ``layer_norm_first``."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, *, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0,
                 layer_norm_first: bool = False) -> None:
        super().__init__()
        self.attention = SelfAttention(dim, num_heads, attention_dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.layer_norm_first = layer_norm_first

    def _ffn(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.activation_dropout(F.gelu(self.fc1(x)))))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, attend: Attend | None = None) -> Tensor:
        """x: (B, F, E) -> (B, F, E). The one definition of the layer (training, export graphs and
        streaming steps all run it); ``attend`` replaces how the attention block is computed (then
        ``attn_mask`` is not used)."""
        def attention(h: Tensor) -> Tensor:
            return self.attention(h, attn_mask) if attend is None else attend(self.attention, h)

        if self.layer_norm_first:
            x = x + self.dropout(attention(self.attn_norm(x)))
            return x + self._ffn(self.ffn_norm(x))
        x = self.attn_norm(x + self.dropout(attention(x)))
        return self.ffn_norm(x + self._ffn(x))


def chunk_attention_mask(num_frames: int, chunk: int, left_chunks: int = -1,
                         device: torch.device | None = None) -> Tensor:
    """(F, F) bool mask, True where query frame i may attend key frame j: j's chunk is i's chunk or
    one of the ``left_chunks`` before it (all before it when -1)."""
    idx = torch.arange(num_frames, device=device) // chunk
    diff = idx[:, None] - idx[None, :]
    allowed = diff >= 0
    if left_chunks >= 0:
        allowed = allowed & (diff <= left_chunks)
    return allowed


class ContextEncoder(nn.Module):
    """Positional conv + Transformer stack over projected frames.

    Args:
        dim: width E. The remaining arguments mirror :class:`wavssl.config.ContextConfig`.
    """

    def __init__(self, dim: int, num_layers: int, num_heads: int, ffn_dim: int, *,
                 layer_norm_first: bool = False, dropout: float = 0.1, attention_dropout: float = 0.1,
                 activation_dropout: float = 0.0, layer_drop: float = 0.0, pos_conv_kernel: int = 128,
                 pos_conv_groups: int = 16, pos_conv_weight_norm: bool = True, pos_conv_lookahead: int = -1,
                 attention_chunk: int = 0, attention_left_chunks: int = -1) -> None:
        super().__init__()
        self.pos_conv = PositionalConv(dim, pos_conv_kernel, pos_conv_groups,
                                       use_weight_norm=pos_conv_weight_norm, lookahead=pos_conv_lookahead)
        self.layer_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        layers = [
            TransformerLayer(dim, num_heads, ffn_dim, dropout=dropout, attention_dropout=attention_dropout,
                             activation_dropout=activation_dropout, layer_norm_first=layer_norm_first)
            for _ in range(num_layers)
        ]
        self.layers = nn.ModuleList(layers)
        self.layer_norm_first, self.layer_drop = layer_norm_first, layer_drop
        self.checkpoint_layers = False
        """Activation checkpointing in training: layer activations are recomputed in the backward pass."""
        self.attention_chunk, self.attention_left_chunks = attention_chunk, attention_left_chunks
        for layer in layers:
            for lin in (layer.attention.qkv, layer.attention.out, layer.fc1, layer.fc2):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)

    def attention_mask(self, padding_mask: Tensor | None, num_frames: int, device: torch.device) -> Tensor | None:
        """Bool mask broadcastable to (B, H, F, F) combining key padding and chunking; None if neither."""
        mask = None
        if padding_mask is not None:
            mask = (~padding_mask)[:, None, None, :]
        if self.attention_chunk > 0:
            chunk = chunk_attention_mask(num_frames, self.attention_chunk, self.attention_left_chunks, device)
            mask = chunk[None, None] if mask is None else mask & chunk[None, None]
        if mask is not None:  # every query keeps itself, so no row is empty
            idx = torch.arange(num_frames, device=device)  # (the identity without torch.eye: ONNX has no bool EyeLike)
            mask = mask | (idx[:, None] == idx[None, :])
        return mask

    def forward(self, x: Tensor, padding_mask: Tensor | None = None, attend: Attend | None = None) -> ContextOutput:
        """x: (B, F, E); padding_mask: (B, F) True at padding -> ContextOutput. ``attend`` (see
        :data:`Attend`) computes every layer's attention block instead of the masked default; it must
        then handle padding and chunking itself (the export graph's fused op takes frame lengths)."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        attn_mask = self.attention_mask(padding_mask, x.shape[1], x.device) if attend is None else None
        outputs = []
        recompute = self.checkpoint_layers and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if not (self.training and self.layer_drop > 0 and torch.rand(()) < self.layer_drop):
                if recompute:  # activations recomputed in backward (same dropout: RNG state is replayed)
                    x = torch.utils.checkpoint.checkpoint(layer, x, attn_mask, attend, use_reentrant=False)
                else:
                    x = layer(x, attn_mask, attend)
            outputs.append(x)
        last = self.layer_norm(x) if self.layer_norm_first else x
        return ContextOutput(tuple(outputs), last)
