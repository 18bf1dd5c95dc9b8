"""Unit tests of the model's parts: masking, negatives, quantizer, loss, front ends, context."""

from __future__ import annotations

import math

import pytest
import torch

from wavssl import config as C
from wavssl import losses
from wavssl.losses import contrastive_accuracy, contrastive_logits
from wavssl.models import MaskSampler, build_model
from wavssl.modules.context import PositionalConv, TransformerLayer, chunk_attention_mask
from wavssl.modules.cpu_training import use_cpu_training_paths
from wavssl.modules.frontend import FbankEncoder, WaveformEncoder, build_frontend, frame_lengths
from wavssl.modules.masking import mask_frames, padding_mask, sample_negatives, span_mask
from wavssl.modules.quantizer import GumbelQuantizer


def test_span_mask_fairseq_rate_and_padding():
    torch.manual_seed(0)
    lengths = torch.tensor([500] * 32 + [300] * 32)
    mask = span_mask(lengths, 500, 0.65, 10, min_masks=2, require_same_masks=False)
    assert not (mask & padding_mask(lengths, 500)).any(), "padding frames must never be masked"
    frac = (mask[:32].float().mean()).item()
    # spans overlap: expected masked fraction ~ 1 - exp(-0.65) ~ 0.48
    assert 0.44 < frac < 0.53, frac


def test_span_mask_same_counts_and_min_masks():
    torch.manual_seed(1)
    lengths = torch.tensor([400, 250, 37, 120])
    mask = span_mask(lengths, 400, 0.65, 10, min_masks=2, require_same_masks=True)
    counts = mask.sum(1)
    assert (counts == counts[0]).all()
    assert counts[0] >= 10  # at least one span survives even in the 37-frame utterance
    short = span_mask(torch.tensor([25]), 25, 0.0, 10, min_masks=2)
    assert short.sum() >= 10  # min_masks applies with mask_prob 0


def test_negatives_come_from_other_masked_frames_of_same_utterance():
    torch.manual_seed(2)
    lengths = torch.tensor([200, 150, 90])
    mask = span_mask(lengths, 200, 0.65, 10, require_same_masks=False)
    neg = sample_negatives(mask, 100)
    counts = mask.sum(1)
    row = torch.repeat_interleave(torch.arange(3), counts)
    own = torch.arange(row.numel())
    assert neg.shape == (row.numel(), 100)
    assert not (neg == own[:, None]).any(), "a distractor is never the positive"
    assert (row[neg] == row[:, None]).all(), "distractors stay within the utterance"
    # roughly uniform over the other frames of the row
    hist = torch.bincount(neg[row == 0].flatten(), minlength=int(counts[0]))[: int(counts[0])].float()
    assert hist.min() > 0.5 * hist.mean()


def test_cross_sample_negatives_reach_other_utterances():
    lengths = torch.tensor([40, 30, 20])
    masks = mask_frames(lengths, 40, 0.4, 2, 5, min_masks=1, require_same_masks=False, cross_sample_negatives=30,
                        generator=torch.Generator().manual_seed(0))
    n = masks.index.numel()
    row = masks.index // 40
    assert masks.negatives.shape == (n, 35) and masks.per_row == 0
    own, cross = masks.negatives[:, :5], masks.negatives[:, 5:]
    assert (row[own] == row[:, None]).all(), "the first K stay within the utterance"
    assert not (masks.negatives == torch.arange(n)[:, None]).any(), "never the frame itself"
    assert (row[cross] != row[:, None]).float().mean() > 0.4, "the cross-sample ones mostly leave it"
    assert cross.min() >= 0 and cross.max() < n


@pytest.mark.parametrize("preset", ["tiny", "small", "sensor-tiny"])
def test_frame_lengths_from_config_match_the_front_end(preset):
    """Masks are sized on the host from the config: same counts as the module, and F = frames(T)."""
    fe = C.preset(preset).model.frontend
    module = build_frontend(fe).eval()
    lengths = torch.tensor([6000, 3999, 401, 2000])
    assert torch.equal(frame_lengths(fe, lengths), module.output_lengths(lengths))
    x = torch.randn(4, fe.in_channels, 6000) if fe.kind == "sensor" else torch.randn(4, 6000)
    with torch.no_grad():
        assert module(x, lengths).features.shape[1] == int(frame_lengths(fe, torch.tensor([6000]))[0])


def test_host_masks_follow_span_mask_statistics():
    """MaskSampler (CPU, seeded from the batch seed) draws fairseq span masks like span_mask on the
    device: ~49% of frames with p = 0.65, span 10; distractors are other masked frames of the row."""
    cfg = C.base().model
    samples = torch.tensor([160_000] * 32 + [100_000] * 32)  # 499 and 312 frames of 20 ms
    frames = frame_lengths(cfg.frontend, samples)
    unequal = C.base().model
    unequal.masking.require_same_masks = False
    host = MaskSampler(unequal)(samples, 160_000, seed=11)
    torch.manual_seed(0)
    device = span_mask(frames, 499, 0.65, 10, min_masks=2, require_same_masks=False)
    host_frac, device_frac = host.mask[:32].float().mean().item(), device[:32].float().mean().item()
    assert 0.44 < host_frac < 0.53 and abs(host_frac - device_frac) < 0.03, (host_frac, device_frac)
    assert not (host.mask & padding_mask(frames, 499)).any()

    m = MaskSampler(cfg)(samples, 160_000, seed=11)  # require_same_masks: M frames in every row
    counts = m.mask.sum(1)
    assert (counts == m.per_row).all() and m.per_row > 0 and m.index.shape == (64 * m.per_row,)
    assert torch.equal(m.index, m.mask.flatten().nonzero().squeeze(1))
    own = torch.arange(m.index.numel())
    assert m.negatives.shape == (own.numel(), cfg.masking.num_negatives)
    assert not (m.negatives == own[:, None]).any(), "a distractor is never the frame itself"
    assert (m.negatives // m.per_row == (own // m.per_row)[:, None]).all(), "distractors stay in the row"
    again, other = MaskSampler(cfg)(samples, 160_000, seed=11), MaskSampler(cfg)(samples, 160_000, seed=12)
    assert torch.equal(again.mask, m.mask) and torch.equal(again.negatives, m.negatives)
    assert not torch.equal(other.mask, m.mask)


@pytest.mark.parametrize("preset", ["tiny", "sensor-tiny"])
def test_pretraining_step_with_host_masks_never_waits_for_the_device(preset, sync_recorder):
    """Forward + backward with masks drawn on the host run no op that synchronises a GPU with the
    host; drawn on the device (no masks given) they do, which shows the recorder sees them."""
    cfg = C.preset(preset).model
    cfg.frontend.in_channels = 3
    torch.manual_seed(0)
    model = build_model(cfg).train()
    if cfg.frontend.kind == "sensor":
        x, lengths = torch.randn(3, 3, 200), torch.tensor([200, 150, 90])
    else:
        x, lengths = torch.randn(3, 16000), torch.tensor([16000, 12000, 9000])
    masks = MaskSampler(cfg)(lengths, x.shape[-1], seed=5)
    assert masks.per_row > 0 if cfg.masking.require_same_masks else masks.per_row == 0
    with sync_recorder() as rec:
        out = model(x, lengths, masks)
        out.loss.backward()
    assert not rec.syncs, rec.syncs
    assert int(out.num_masked) == masks.index.numel() and torch.isfinite(out.loss)
    with sync_recorder() as rec:
        model(x, lengths)
    assert "aten.nonzero.default" in rec.syncs and "aten._local_scalar_dense.default" in rec.syncs


def test_quantizer_eval_argmax_train_onehot_and_annealing():
    torch.manual_seed(3)
    q = GumbelQuantizer(16, groups=2, entries=8, dim=12, max_temp=2.0, min_temp=0.5, temp_decay=0.999995)
    x = torch.randn(50, 16)
    q.eval()
    a, b = q(x), q(x)
    assert torch.equal(a.codes, b.codes) and a.quantized.shape == (50, 12)
    expect = q.codevectors.view(2, 8, 6)[torch.arange(2)[None], a.codes].reshape(50, 12)
    assert torch.allclose(a.quantized, expect)
    assert torch.equal(a.code_ids, a.codes[:, 0] + 8 * a.codes[:, 1])  # one id per codevector
    assert 1.0 <= float(a.code_perplexity) <= 16.0
    q.train()
    out = q(x)
    out.quantized.sum().backward()
    assert q.weight_proj.weight.grad is not None, "straight-through estimator passes gradients"
    q.set_num_updates(0)
    assert q.temperature == 2.0
    q.set_num_updates(100_000)
    assert math.isclose(q.temperature, 2.0 * 0.999995**100_000)
    q.set_num_updates(10_000_000)
    assert q.temperature == 0.5


def _reference_logits(c, y, neg, temp):
    candidates = torch.cat([y.unsqueeze(1), y[neg]], dim=1)
    logits = torch.nn.functional.cosine_similarity(c.unsqueeze(1), candidates, dim=-1) / temp
    same = (y[neg] == y.unsqueeze(1)).all(-1)
    logits[:, 1:] = logits[:, 1:].masked_fill(same, float("-inf"))
    return logits


def test_contrastive_logits_discard_identical_distractors():
    y = torch.randn(4, 8)
    y[3] = y[1]  # a codevector collision: rows 1 and 3 have the same target
    c = y.clone()
    neg = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    logits = contrastive_logits(c, y, neg, 0.1, target_ids=torch.tensor([0, 1, 2, 1]))
    assert logits.shape == (4, 4)
    assert torch.isinf(logits[1, 3]) and logits[1, 3] < 0 and torch.isinf(logits[3, 2])
    assert torch.allclose(logits[:, 0], torch.full((4,), 10.0), atol=1e-4)
    assert contrastive_accuracy(logits) == 1.0


@pytest.mark.parametrize("block", [0, 25])
def test_contrastive_logits_match_direct_cosine(block, monkeypatch):
    torch.manual_seed(6)
    mask = torch.zeros(4, 60, dtype=torch.bool)
    mask[:, 5:30] = True  # 25 masked frames per row
    c, y = torch.randn(100, 16, requires_grad=True), torch.randn(100, 16, requires_grad=True)
    neg = sample_negatives(mask, 10)
    ids = torch.arange(100)
    ref = _reference_logits(c, y, neg, 0.1)
    got = contrastive_logits(c, y, neg, 0.1, target_ids=ids, block=block)
    assert torch.allclose(got, ref, atol=1e-5)
    g_ref = torch.autograd.grad(ref.logsumexp(1).sum(), (c, y))
    g_got = torch.autograd.grad(got.logsumexp(1).sum(), (c, y))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_ref, g_got))
    monkeypatch.setattr(losses, "FULL_SIMILARITY_MAX_ROWS", 10)  # the gather path for large N
    assert torch.allclose(contrastive_logits(c, y, neg, 0.1, target_ids=ids), ref, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("norm_mode,bias", [("default", False), ("default", True), ("layer_norm", True)])
def test_waveform_cpu_training_path_equals_reference_blocks(norm_mode, bias, precision):
    """The channels-last CPU training path computes the same function and gradients as the blocks,
    in fp32 and under bf16 autocast (``train.precision=bf16`` on a CPU), where its hand-written
    backward must see one dtype and leave fp32 gradients on the fp32 parameters."""
    torch.manual_seed(7)
    enc = WaveformEncoder(((32, 10, 5), (32, 3, 2), (32, 2, 2)), norm_mode=norm_mode, conv_bias=bias)
    assert use_cpu_training_paths(enc) == 1
    wav = torch.randn(2, 4000)
    lengths = torch.tensor([4000, 4000])
    enc.train()
    params = list(enc.parameters())
    bf16 = precision == "bf16"
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        fast = enc(wav, lengths).features
        ref = wav.unsqueeze(1)
        for block in enc.blocks:
            ref = block(ref)
        ref = ref.transpose(1, 2)
    g_fast = torch.autograd.grad(fast.float().pow(2).sum(), params, allow_unused=True)
    g_ref = torch.autograd.grad(ref.float().pow(2).sum(), params, allow_unused=True)
    assert fast.dtype == ref.dtype == (torch.bfloat16 if bf16 else torch.float32)

    scale = max(g.norm().item() for g in g_ref if g is not None)

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        if not bf16:
            return torch.allclose(a, b, atol=1e-3, rtol=1e-3)
        # bf16 keeps ~3 digits; a gradient that is 0 in exact arithmetic (a conv bias before
        # GroupNorm) is rounding noise in the reference, so the floor is relative to the largest one
        return (a.float() - b.float()).norm().item() < 0.02 * b.float().norm().item() + 1e-3 * scale

    assert (torch.allclose(fast, ref, atol=1e-4, rtol=1e-4) if not bf16 else close(fast, ref))
    for p, a, b in zip(params, g_fast, g_ref):
        if b is None or a is None:
            assert a is None or not a.any()
            continue
        assert a.dtype == p.dtype == torch.float32
        assert close(a, b), (a - b).abs().max()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("lookahead", [-1, 2])
def test_positional_conv_cpu_training_path_equals_reference(precision: str, lookahead: int) -> None:
    """The channels-last positional conv gives the reference conv's values and gradients (fp32 and
    bf16 autocast); without use_cpu_training_paths a module in training runs the reference."""
    torch.manual_seed(5)
    pos = PositionalConv(32, 16, 4, lookahead=lookahead).train()
    x = torch.randn(2, 40, 32, requires_grad=True)
    params = [x, *pos.parameters()]
    bf16 = precision == "bf16"
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        ref = pos(x)
        assert use_cpu_training_paths(pos) == 1
        fast = pos(x)
        use_cpu_training_paths(pos, enabled=False)
        assert pos.cpu_training_path is None
    g_ref = torch.autograd.grad(ref.float().pow(2).sum(), params)
    g_fast = torch.autograd.grad(fast.float().pow(2).sum(), params)
    assert fast.dtype == ref.dtype == (torch.bfloat16 if bf16 else torch.float32)
    tol = 2e-2 if bf16 else 1e-4
    assert (fast.float() - ref.float()).norm() <= tol * ref.float().norm()
    for a, b in zip(g_fast, g_ref):
        assert a.dtype == b.dtype and (a.float() - b.float()).norm() <= tol * b.float().norm() + 1e-6


@pytest.mark.parametrize("norm_mode", ["default", "layer_norm"])
def test_waveform_encoder_frames_and_lengths(norm_mode):
    enc = WaveformEncoder(C.BASE_CONV_LAYERS[:1] + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2, norm_mode=norm_mode)
    wav = torch.randn(2, 16000)
    out = enc(wav, torch.tensor([16000, 8000]))
    assert out.features.shape == (2, 49, 512)  # 20 ms frames at 16 kHz
    assert out.lengths.tolist() == [49, 24]


def test_fbank_lengths_match_computation():
    for sub in (1, 2, 4):
        enc = FbankEncoder(subsampling=sub, channels=32)
        for n in (2000, 5555, 16000, 16001):
            out = enc(torch.randn(1, n), torch.tensor([n]))
            assert out.features.shape[1] == int(out.lengths[0]), (sub, n)
    enc = FbankEncoder(subsampling=2, channels=32)
    assert int(enc.output_lengths(torch.tensor([16000]))[0]) == 49  # 20 ms frames


def test_fbank_matches_reference_log_mel():
    enc = FbankEncoder(n_mels=40, channels=8)
    wav = torch.randn(1, 4000)
    ours = enc.log_mel(wav)[0]  # (40, N)
    frames = wav[0].unfold(0, 400, 160) * torch.hann_window(400, periodic=True)
    power = torch.fft.rfft(frames, n=512).abs() ** 2
    ref = torch.log((power @ enc.mel).clamp(min=1e-6)).T
    assert torch.allclose(ours, ref, atol=1e-3)


def test_padding_does_not_change_valid_frames():
    cfg = C.small().model
    cfg.frontend.norm_mode = "layer_norm"
    model = build_model(cfg).eval()
    torch.manual_seed(4)
    long, short = torch.randn(24000), torch.randn(14000)
    batch = torch.zeros(2, 24000)
    batch[0], batch[1, :14000] = long, short
    with torch.no_grad():
        both = model.encode(batch, torch.tensor([24000, 14000]))
        alone = model.encode(short[None], torch.tensor([14000]))
    n = int(alone.lengths[0])
    assert both.padding_mask[1].sum() == both.padding_mask.shape[1] - n
    assert torch.allclose(both.last_hidden_state[1, :n], alone.last_hidden_state[0], atol=1e-4)


def test_unpadded_batch_runs_the_context_without_an_attention_mask(monkeypatch):
    model = build_model(C.small().model).eval()
    seen = []
    real = model.encoder.context.attention_mask
    monkeypatch.setattr(model.encoder.context, "attention_mask",
                        lambda pad, *a: seen.append(pad is None) or real(pad, *a))
    wav = torch.randn(2, 16000)
    with torch.no_grad():
        without = model.encode(wav)  # lengths unknown = every sample valid: no mask (SDPA's flash path)
        with_lengths = model.encode(wav, torch.tensor([16000, 16000]))
    assert seen == [True, False]
    assert torch.allclose(without.last_hidden_state, with_lengths.last_hidden_state, atol=1e-5)


def test_chunk_attention_mask():
    m = chunk_attention_mask(6, 2, left_chunks=1)
    assert m[0].tolist() == [True, True, False, False, False, False]
    assert m[5].tolist() == [False, False, True, True, True, True]
    assert chunk_attention_mask(6, 2)[5].all()


def test_base_preset_is_fairseq_base():
    cfg = C.base()
    model = build_model(cfg.model)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 95.04e6) < 0.05e6, n  # fairseq's BASE has 95.04M parameters
    assert cfg.optim.lr == 5e-4 and cfg.optim.warmup_updates == 32000 and cfg.optim.max_updates == 400000
    assert cfg.data.max_batch_samples == 1_400_000 and cfg.model.masking.num_negatives == 100


def test_training_step_loss_terms_and_gradients():
    torch.manual_seed(5)
    model = build_model(C.tiny().model).train()
    out = model(torch.randn(2, 16000), torch.tensor([16000, 12000]))
    assert out.num_masked > 0 and torch.isfinite(out.loss)
    expected = out.contrastive + 0.1 * out.diversity + C.tiny().model.loss.feature_penalty_weight * out.feature_penalty
    assert torch.allclose(out.loss.detach(), expected, atol=1e-5)
    out.loss.backward()
    assert model.encoder.mask_emb.grad is not None and model.quantizer.codevectors.grad is not None


def test_encoder_exports_with_dynamic_batch_and_time():
    """DESIGN constraint: the eval path has no data-dependent Python control flow (torch.export works)."""
    model = build_model(C.tiny().model).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.model.encode(wav, lengths)
            return out.last_hidden_state, out.lengths

    batch, time = torch.export.Dim("B", min=1, max=64), torch.export.Dim("T", min=16000, max=16000 * 60)
    program = torch.export.export(Wrapper(), (torch.randn(2, 32000), torch.tensor([32000, 20000])),
                                  dynamic_shapes=({0: batch, 1: time}, {0: batch}))
    wav, lengths = torch.randn(3, 40000), torch.tensor([40000, 30000, 17000])
    got, got_len = program.module()(wav, lengths)
    want = model.encode(wav, lengths)
    assert torch.equal(got_len, want.lengths)
    assert torch.allclose(got, want.last_hidden_state, atol=1e-5)


def _loss_and_grads(model, wav, lengths, seed=5):
    model.zero_grad()
    torch.manual_seed(seed)
    loss = model(wav, lengths).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_gives_the_same_gradients():
    from wavssl.train.trainer import apply_speedups

    cfg = C.tiny()
    torch.manual_seed(0)
    model = build_model(cfg.model).train()  # dropout on: the recompute must replay the same masks
    wav, lengths = torch.randn(2, 32000), torch.tensor([32000, 24000])
    loss, grads = _loss_and_grads(model, wav, lengths)
    cfg.train.activation_checkpointing = True
    apply_speedups(model, cfg)
    assert model.encoder.context.checkpoint_layers
    loss2, grads2 = _loss_and_grads(model, wav, lengths)
    assert torch.equal(loss, loss2)
    assert all(torch.allclose(grads[k], grads2[k], atol=1e-6) for k in grads)


@pytest.mark.slow
def test_compiled_layers_match_eager_across_lengths():
    """Regional torch.compile (dynamic shapes) computes what eager does; ~1-2 min of compiling on a CPU."""
    from wavssl.train.trainer import apply_speedups

    cfg = C.tiny()
    cfg.model.context.dropout = cfg.model.context.attention_dropout = 0.0  # inductor draws its own dropout RNG
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    batches = [(torch.randn(2, 32000), torch.tensor([32000, 24000])), (torch.randn(3, 40000), torch.tensor([40000] * 3))]
    eager = [_loss_and_grads(model, w, n) for w, n in batches]
    cfg.train.compile = True
    apply_speedups(model, cfg)
    for (loss, grads), (w, n) in zip(eager, batches):
        loss2, grads2 = _loss_and_grads(model, w, n)
        assert torch.allclose(loss, loss2, atol=1e-4)
        assert all(torch.allclose(grads[k], grads2[k], atol=1e-3, rtol=1e-3) for k in grads)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_transformer_layer_cached_attention_is_the_same_layer(pre_ln: bool) -> None:
    """The streaming step's form of a layer (attention over cached keys/values) is the layer itself:
    frames 8.. attending frames 0.. through the cache equal the full layer's output there when
    nothing is masked, and the new cache holds the last frames' keys and values."""
    torch.manual_seed(3)
    layer = TransformerLayer(16, 4, 32, layer_norm_first=pre_ln).eval()
    x = torch.randn(2, 12, 16)
    with torch.no_grad():
        full = layer(x)
        _, k, v = layer.attention.qkv(layer.attn_norm(x) if pre_ln else x).split(16, dim=-1)
        cache = torch.stack([k[:, :8], v[:, :8]], 1)  # (B, 2, 8, E): keys/values of frames 0..7
        new: list[torch.Tensor] = []

        def attend(att, h):
            y, c = att.forward_cached(h, cache, torch.ones(2, 1, 1, 12, dtype=torch.bool))
            new.append(c)
            return y

        # post-LN layers attend their raw input, so frames 0..7 need no earlier state; pre-LN ones the
        # normed input: in both cases the cached keys are exactly what the full layer computed
        step = layer(x[:, 8:], attend=attend)
    assert torch.allclose(step, full[:, 8:], atol=1e-5)
    assert torch.allclose(new[0][:, 0], torch.cat([k[:, 4:8], k[:, 8:]], 1), atol=1e-6)


def test_wav2vec2_objective_is_bit_identical_to_its_composition() -> None:
    """SSLModel.forward through the Objective seam gives exactly (torch.equal) the loss, metrics and
    gradients of the wav2vec 2.0 composition written out by hand, and the state dict keeps the
    names every checkpoint uses (quantizer.*, project_q.*, final_proj.*)."""
    from wavssl.losses import wav2vec2_loss
    from wavssl.objectives import Wav2Vec2Objective, select_frames

    cfg = C.tiny().model
    torch.manual_seed(11)
    model = build_model(cfg).train()
    assert isinstance(model.objective, Wav2Vec2Objective)
    keys = list(model.state_dict())
    assert [k.split(".")[0] for k in keys if not k.startswith("encoder.")] == \
        ["quantizer"] * 3 + ["project_q"] * 2 + ["final_proj"] * 2
    x, lengths = torch.randn(2, 16000), torch.tensor([16000, 11000])
    masks = MaskSampler(cfg)(lengths, x.shape[-1], seed=3)

    def by_hand() -> object:
        fr = model.encoder.frames(x, lengths)
        _, ctx = model.encoder.contextualise(fr, masks.mask)
        valid = (~fr.padding_mask).float()
        penalty = (fr.raw.float().pow(2).mean(-1) * valid).sum() / valid.sum().clamp(min=1.0)
        q = model.quantizer(select_frames(model.dropout_features(fr.normed), masks.index))
        logits = contrastive_logits(model.final_proj(select_frames(ctx.last_hidden_state, masks.index)),
                                    model.project_q(q.quantized), masks.negatives, cfg.loss.logit_temp,
                                    target_ids=q.code_ids, block=masks.per_row)
        return wav2vec2_loss(logits, prob_perplexity=q.prob_perplexity, code_perplexity=q.code_perplexity,
                             group_code_perplexity=q.group_code_perplexity,
                             num_codes=cfg.quantizer.groups * cfg.quantizer.entries, feature_penalty=penalty,
                             diversity_weight=cfg.loss.diversity_weight,
                             feature_penalty_weight=cfg.loss.feature_penalty_weight,
                             temperature=model.quantizer.temperature)

    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for run in (lambda: model(x, lengths, masks), by_hand):
        torch.manual_seed(5)  # dropout and Gumbel noise drawn alike
        out = run()
        results.append((out, torch.autograd.grad(out.loss, params, allow_unused=True)))
    (a, ga), (b, gb) = results
    assert torch.equal(a.loss, b.loss) and a.metrics().keys() == b.metrics().keys()
    assert all(torch.equal(a.metrics()[k], b.metrics()[k]) for k in a.metrics())
    assert all((u is None and v is None) or torch.equal(u, v) for u, v in zip(ga, gb))


class _FrameLabelObjective:
    """A HuBERT-shaped objective for the seam test: predict given per-frame labels at masked frames."""

    def __init__(self, dim: int, classes: int) -> None:
        self.head = torch.nn.Linear(dim, classes)
        self.updates = 0

    def parts(self) -> dict[str, torch.nn.Module]:
        return {"label_head": self.head}

    def set_num_updates(self, num_updates: int) -> None:
        self.updates = num_updates

    def __call__(self, frames, context, masks, targets=None):
        from dataclasses import dataclass

        @dataclass
        class Out:
            loss: torch.Tensor
            weight: torch.Tensor

            def metrics(self) -> dict[str, torch.Tensor]:
                return {"label_loss": self.loss.detach()}

        assert targets is not None, "this objective needs the batch's per-frame targets"
        chosen = self.head(context.reshape(-1, context.shape[-1]).index_select(0, masks.index))
        loss = torch.nn.functional.cross_entropy(chosen, targets.reshape(-1).index_select(0, masks.index))
        return Out(loss, torch.full((), float(masks.index.numel())))


def test_a_new_objective_is_a_new_class_not_a_fork() -> None:
    """Another objective plugs into SSLModel unchanged: its modules become the model's (state dict,
    optimiser, .to), the batch's per-frame targets reach it, and it trains."""
    from wavssl.models import SSLModel

    cfg = C.tiny().model
    torch.manual_seed(2)
    model = SSLModel(cfg, objective=_FrameLabelObjective(cfg.context.embed_dim, 5)).train()
    assert {k for k in model.state_dict() if not k.startswith("encoder.")} == {"label_head.weight", "label_head.bias"}
    x, lengths = torch.randn(2, 16000), torch.tensor([16000, 16000])
    masks = MaskSampler(cfg)(lengths, x.shape[-1], seed=1)
    frames = int(frame_lengths(cfg.frontend, torch.tensor([16000]))[0])
    targets = torch.randint(0, 5, (2, frames), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses_seen = []
    for step in range(30):
        model.set_num_updates(step)
        out = model(x, lengths, masks, targets)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses_seen.append(float(out.loss.detach()))
    assert model.objective.updates == 29 and set(out.metrics()) == {"label_loss"}
    assert losses_seen[-1] < 0.5 * losses_seen[0]  # fits the fixed labels
