"""Typed configuration: dataclasses, presets, TOML/JSON load and save, overrides, validation.

Every field carries a docstring (the string literal under it). Presets are plain functions:
``base()`` is fairseq's wav2vec 2.0 BASE; ``large()``, ``small()`` and ``tiny()`` derive from it, and
so do the sensor presets ``sensor_tiny()`` and ``sensor_small()`` (registered as ``sensor-tiny`` and
``sensor-small``).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

ConvSpec = tuple[int, int, int]
"""One conv block of a front end: (channels, kernel, stride)."""

BASE_CONV_LAYERS: tuple[ConvSpec, ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2

Task = Literal["pretrain", "ctc", "classify"]
NormMode = Literal["default", "layer_norm", "none"]
SensorNorm = Literal["global", "instance", "none"]
Schedule = Literal["polynomial", "tri_stage", "constant"]
Precision = Literal["auto", "bf16", "fp32"]
Pooling = Literal["mean", "attention", "stats"]
HeadInit = Literal["random", "logistic"]
BestMetric = Literal["wer", "cer"]
"""The string enums of the config: loading (TOML, JSON, --set) and ``Config.validate`` check a
value against its field's ``Literal`` (one list per enum, here)."""



class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass(kw_only=True)
class _FrontendFields:
    """Fields every front end has."""

    sample_rate: int = 16000
    """Input sample rate in Hz. Audio is resampled to it; sensor CSV files with a time column are
    interpolated onto a grid at this rate, and other sensor series are taken to be at it."""
    feature_grad_mult: float = 0.1
    """Scale of the gradient flowing into the front end (0 freezes it, 1 leaves it untouched)."""

    def _check(self, where: str, checks: list[tuple[bool, str]]) -> None:
        _require([(self.feature_grad_mult >= 0, "feature_grad_mult must be >= 0"), *checks], where)


@dataclass(kw_only=True)
class WaveformFrontend(_FrontendFields):
    """wav2vec 2.0's conv stack over the raw waveform (``kind = "waveform"``)."""

    kind: Literal["waveform"] = "waveform"
    """Which front end: ``waveform``, ``fbank`` or ``sensor`` (each has its own fields)."""
    conv_layers: tuple[ConvSpec, ...] = BASE_CONV_LAYERS
    """Conv stack, (channels, kernel, stride) per block; the default gives 20 ms frames at 16 kHz."""
    norm_mode: NormMode = "default"
    """``default``: GroupNorm over time on the first block (utterance-wide); ``layer_norm``: per-frame
    LayerNorm in every block (needed for streaming); ``none``: no normalisation in the conv blocks."""
    conv_bias: bool = False
    """Bias in the conv blocks."""

    in_channels: ClassVar[int] = 1
    """Input channels (audio: one)."""

    @property
    def frame_dim(self) -> int:
        """Size D of the frames this front end emits."""
        return self.conv_layers[-1][0]

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        self._check(where, [(len(self.conv_layers) > 0, "conv_layers: empty")])


@dataclass(kw_only=True)
class FbankFrontend(_FrontendFields):
    """Log-mel filterbank + conv subsampling (``kind = "fbank"``)."""

    kind: Literal["fbank"] = "fbank"
    """Which front end: ``waveform``, ``fbank`` or ``sensor`` (each has its own fields)."""
    n_mels: int = 80
    """Number of mel bands."""
    win_length: int = 400
    """Analysis window in samples (25 ms at 16 kHz)."""
    hop_length: int = 160
    """Hop in samples (10 ms at 16 kHz)."""
    n_fft: int = 512
    """FFT size (>= win_length)."""
    subsampling: int = 2
    """Frame-rate reduction of the conv subsampling: 2 gives 20 ms frames, 4 gives 40 ms."""
    channels: int = 256
    """Channels of the conv subsampling, i.e. the frame feature size."""
    norm: Literal["none", "global"] = "none"
    """``global`` standardises each mel band of the log-mel input with a mean and standard deviation
    fitted on the training audio when a run starts from random weights (pretraining, or fine-tuning
    from scratch; ``FbankEncoder.fit_normalization``) and stored in the checkpoint: fixed
    afterwards, so offline and streaming inference see the same input. ``none`` feeds raw log-mels."""

    in_channels: ClassVar[int] = 1
    """Input channels (audio: one)."""

    @property
    def frame_dim(self) -> int:
        """Size D of the frames this front end emits."""
        return self.channels

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        self._check(where, [(self.n_fft >= self.win_length, "n_fft must be >= win_length"),
                            (self.subsampling in (1, 2, 4), "subsampling must be 1, 2 or 4")])


@dataclass(kw_only=True)
class SensorFrontend(_FrontendFields):
    """Multichannel time series (accelerometers, gyroscopes, ...) through unpadded convs (``kind = "sensor"``)."""

    kind: Literal["sensor"] = "sensor"
    """Which front end: ``waveform``, ``fbank`` or ``sensor`` (each has its own fields)."""
    in_channels: int = 1
    """Number of input channels C (e.g. 3 for a 3-axis accelerometer); checkpoints refuse data with
    another count."""
    conv_layers: tuple[ConvSpec, ...] = ((64, 3, 1), (64, 3, 2))
    """Unpadded conv blocks, (channels, kernel, stride) each; the product of the strides is the frame
    shift in samples (1 keeps every time step, for very short series). A series needs at least the
    stack's receptive field in samples to give one frame."""
    norm: SensorNorm = "global"
    """Per-channel normalisation before the convolutions, robust to scale and offset (median and
    inter-quartile range, falling back to the standard deviation): ``global`` uses statistics fitted
    once on the pretraining series and stored with the model (keeps each series' level, which often
    carries the class); ``instance`` normalises every series by its own statistics (invariant to
    per-recording gain and offset); ``none`` leaves values as they are."""
    channel_dropout: float = 0.0
    """In training, probability of blanking a whole input channel of a series (robustness to a
    missing or dead sensor)."""
    norm_mode: NormMode = "layer_norm"
    """Normalisation in the conv blocks, as for ``waveform`` (``none`` keeps the signal's amplitude in
    the frames)."""
    conv_bias: bool = True
    """Bias in the conv blocks."""

    @property
    def frame_dim(self) -> int:
        """Size D of the frames this front end emits."""
        return self.conv_layers[-1][0]

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        self._check(where, [
            (self.in_channels >= 1, "in_channels must be >= 1"),
            (len(self.conv_layers) > 0, "conv_layers: empty"),
            (all(c >= 1 and k >= 1 and s >= 1 for c, k, s in self.conv_layers),
             "conv_layers: channels, kernel and stride must be >= 1"),
            (0 <= self.channel_dropout < 1, "channel_dropout must be in [0, 1)"),
        ])


FrontendConfig = WaveformFrontend | FbankFrontend | SensorFrontend
"""The front end (raw signal -> frames): a tagged union on ``kind``, each kind with its own fields."""

FRONTENDS: dict[str, type[FrontendConfig]] = {
    "waveform": WaveformFrontend, "fbank": FbankFrontend, "sensor": SensorFrontend}
"""Front-end config class per ``kind``."""
FRONTEND_KINDS: tuple[str, ...] = tuple(FRONTENDS)
"""``model.frontend.kind`` values."""


@dataclass(kw_only=True)
class ContextConfig:
    embed_dim: int = 768
    """Transformer width E."""
    num_layers: int = 12
    """Number of Transformer layers."""
    num_heads: int = 12
    """Attention heads."""
    ffn_dim: int = 3072
    """Hidden size of the feed-forward blocks."""
    layer_norm_first: bool = False
    """Pre-LN Transformer (large) instead of post-LN (base)."""
    dropout: float = 0.1
    """Dropout on residual branches and after the positional conv."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    activation_dropout: float = 0.0
    """Dropout after the feed-forward activation."""
    layer_drop: float = 0.05
    """Probability of skipping a whole layer in training (never in eval)."""
    dropout_input: float = 0.1
    """Dropout on projected features before masking."""
    dropout_features: float = 0.1
    """Dropout on the features that feed the quantizer."""
    pos_conv_kernel: int = 128
    """Kernel of the grouped convolutional positional embedding."""
    pos_conv_groups: int = 16
    """Groups of the positional convolution."""
    pos_conv_weight_norm: bool = True
    """Weight norm (over the kernel axis) on the positional convolution."""
    pos_conv_lookahead: int = -1
    """Future frames the positional conv may see; -1 centres it (kernel // 2). Bounded for streaming."""
    attention_chunk: int = 0
    """Frames per attention chunk; 0 means full attention. With chunks a frame attends to its own
    chunk and the previous ``attention_left_chunks`` (streaming)."""
    attention_left_chunks: int = -1
    """Chunks of left context for chunked attention; -1 means all of them."""

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        _require([
            (self.embed_dim % self.num_heads == 0, "embed_dim must be divisible by num_heads"),
            (self.embed_dim % self.pos_conv_groups == 0, "embed_dim must be divisible by pos_conv_groups"),
            (self.pos_conv_lookahead < self.pos_conv_kernel, "pos_conv_lookahead must be < pos_conv_kernel"),
            (self.attention_chunk >= 0, "attention_chunk must be >= 0"),
            (0 <= self.layer_drop < 1, "layer_drop must be in [0, 1)"),
        ], where)


@dataclass(kw_only=True)
class QuantizerConfig:
    groups: int = 2
    """Codebook groups G."""
    entries: int = 320
    """Entries V per group."""
    dim: int = 256
    """Total codevector size (split evenly across groups)."""
    max_temp: float = 2.0
    """Gumbel-softmax temperature at update 0."""
    min_temp: float = 0.5
    """Floor of the annealed temperature."""
    temp_decay: float = 0.999995
    """Per-update multiplicative decay: temp = max(max_temp * temp_decay**update, min_temp)."""

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        _require([
            (self.dim % self.groups == 0, "dim must be divisible by groups"),
            (self.entries >= 2, "entries must be >= 2"),
            (self.entries ** self.groups < 2**63, "entries: entries ** groups must be < 2**63 (code ids are int64)"),
            (0 < self.min_temp <= self.max_temp, "min_temp must be > 0 and <= max_temp"),
        ], where)


@dataclass(kw_only=True)
class MaskingConfig:
    mask_prob: float = 0.65
    """p: fraction of frames chosen as span starts times span length (p x M); ~49% of frames end masked."""
    mask_length: int = 10
    """M: span length in frames."""
    min_masks: int = 2
    """Minimum number of spans per utterance."""
    require_same_masks: bool = True
    """Equalise the masked-frame count across the batch (fairseq behaviour)."""
    num_negatives: int = 100
    """K: distractors drawn from other masked frames of the same utterance."""
    cross_sample_negatives: int = 0
    """More distractors drawn from the masked frames of the whole batch (other recordings included;
    fairseq's option of the same name). In-utterance distractors alone let the context drop what is
    constant over a recording (speaker, sensor placement): fine for ASR, a loss for classifying whole
    recordings, so the sensor presets use them."""

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        _require([
            (0 <= self.mask_prob <= 1, "mask_prob must be in [0, 1]"),
            (self.mask_length >= 1, "mask_length must be >= 1"),
            (self.num_negatives >= 1, "num_negatives must be >= 1"),
            (self.cross_sample_negatives >= 0, "cross_sample_negatives must be >= 0"),
        ], where)


@dataclass(kw_only=True)
class LossConfig:
    logit_temp: float = 0.1
    """kappa: cosine similarities are divided by it."""
    diversity_weight: float = 0.1
    """alpha: weight of the codebook diversity term."""
    feature_penalty_weight: float = 10.0
    """beta: weight of the L2 penalty on front-end outputs."""

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        _require([(self.logit_temp > 0, "logit_temp must be > 0")], where)


@dataclass(kw_only=True)
class ModelConfig:
    frontend: FrontendConfig = field(default_factory=WaveformFrontend)
    """Front end (raw signal -> frames): ``[model.frontend]`` with ``kind`` and that kind's fields."""
    context: ContextConfig = field(default_factory=ContextConfig)
    """Context Transformer."""
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    """Gumbel product quantizer producing the targets."""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """Span masking and negative sampling."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Loss weights."""
    final_dim: int = 256
    """Size of the space where context vectors and targets are compared."""

    def validate(self, where: str = "") -> None:
        """Validate every sub-section."""
        for name in ("frontend", "context", "quantizer", "masking", "loss"):
            getattr(self, name).validate(f"{where}{name}.")


@dataclass(kw_only=True)
class DataConfig:
    sample_rate: int = 16000
    """Rate audio is decoded to."""
    min_samples: int = 32000
    """Pretraining: files shorter than this are skipped (and listed)."""
    max_samples: int = 250000
    """Pretraining: random crops are at most this long. Recognizer fine-tuning (utterances are padded,
    never cropped): longer utterances are skipped and listed."""
    max_batch_samples: int = 1_400_000
    """Batch budget in samples: batch size x (cropped or padded) length stays under it."""
    max_batch_size: int = 0
    """Cap on utterances per batch; 0 for none."""
    pad: bool = False
    """False crops each batch to its shortest utterance (fairseq pretraining); True pads."""
    normalize: bool = False
    """Per-utterance zero mean / unit variance (layer_norm-mode models use it)."""
    speed_perturb: float = 0.0
    """Training audio (pretraining and fine-tuning, never validation) plays at a speed drawn per
    utterance from {1 - x, 1, 1 + x}, resampled so tempo and pitch change together (Kaldi's 3-way
    speed perturbation, usually 0.1; :func:`wavssl.data.audio.perturb`); 0 = off."""
    gain_perturb_db: float = 0.0
    """Training audio is scaled by a gain drawn per utterance uniformly in [-x, +x] dB; 0 = off."""
    num_workers: int = 2
    """Data loader worker processes."""
    window: int = 0
    """sensor: recordings longer than this many samples are cut into windows of this length
    (0 keeps whole series)."""
    hop: int = 0
    """sensor: step between window starts in samples (0 = ``window``, i.e. no overlap)."""
    batch_size: int = 32
    """sensor: series (or windows) per batch, in pretraining and in classifier fine-tuning (the whole
    training set when it is smaller)."""
    time_stretch: float = 0.0
    """sensor pretraining augmentation: each series of each batch is resampled in time by a factor
    drawn log-uniformly from [1 / (1 + x), 1 + x] (``wavssl.data.sensor.time_stretch``), so a few
    recordings give many speeds of the same movements; 0 = off."""

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        _require([
            (0 < self.min_samples <= self.max_samples, "min_samples must be > 0 and <= max_samples"),
            (self.max_batch_samples >= self.max_samples, "max_batch_samples must be >= max_samples (one crop must fit)"),
            (self.window >= 0 and self.hop >= 0, "window and hop must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.time_stretch >= 0, "time_stretch must be >= 0"),
            (0 <= self.speed_perturb < 0.5, "speed_perturb must be in [0, 0.5)"),
            (self.gain_perturb_db >= 0, "gain_perturb_db must be >= 0"),
        ], where)


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = 5e-4
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.98)
    """Adam betas."""
    eps: float = 1e-6
    """Adam epsilon."""
    weight_decay: float = 0.01
    """Decoupled weight decay."""
    schedule: Schedule = "polynomial"
    """``polynomial`` (linear warm-up then polynomial decay), ``tri_stage`` or ``constant``."""
    warmup_updates: int = 32000
    """Linear warm-up length."""
    max_updates: int = 400000
    """Total updates of the run."""
    end_lr: float = 0.0
    """Learning rate reached at ``max_updates``."""
    power: float = 1.0
    """Power of the polynomial decay."""
    clip_norm: float = 0.0
    """Gradient clipping by global norm; 0 disables."""
    accumulate: int = 1
    """Batches accumulated per update."""

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        _require([
            (self.lr > 0, "lr must be > 0"),
            (self.max_updates >= 0 and self.warmup_updates >= 0, "max_updates and warmup_updates must be >= 0"),
            (self.accumulate >= 1, "accumulate must be >= 1"),
        ], where)


@dataclass(kw_only=True)
class TrainConfig:
    seed: int = 1
    """Seed of model init, data order, crops and masks."""
    precision: Precision = "auto"
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``."""
    log_every: int = 200
    """Updates between log lines."""
    checkpoint_every: int = 5000
    """Updates between checkpoints."""
    checkpoint_every_seconds: float = 0.0
    """Also checkpoint when this much wall time has passed since the last one (0 = off); bounds the
    work lost to a preemption however slow the updates are."""
    keep_last: int = 3
    """Update checkpoints kept besides ``last``."""
    max_nonfinite: int = 20
    """Abort after this many consecutive non-finite losses."""
    valid_every: int = 500
    """Recognizer fine-tuning: updates between validations (greedy decoding of the validation set);
    0 validates only at the end."""
    best_metric: BestMetric = "wer"
    """Recognizer fine-tuning: ``wer`` or ``cer``, the validation score that selects the best
    checkpoint (lower is better)."""
    tensorboard: bool = True
    """Write TensorBoard event files (if tensorboard is installed)."""
    activation_checkpointing: bool = False
    """Recompute every Transformer layer's activations in the backward pass instead of keeping them:
    much less activation memory for about a third more compute (large models, long crops)."""
    compile: bool = False
    """``torch.compile`` every Transformer layer (regional compilation with dynamic shapes, so batches
    of any length reuse the compiled code; the first updates pay the compile time)."""
    fsdp: bool = False
    """Under ``torchrun``, shard parameters, gradients and optimiser state across the ranks with FSDP2
    (``fully_shard`` per Transformer layer, then the root) instead of replicating them with DDP: for
    models too large to replicate. Checkpoints stay ordinary full state dicts (gathered on rank 0),
    so loading, export and resume (with or without FSDP) are unchanged. For pretraining: CTC
    fine-tuning turns it off (its validation runs on one rank) and classifier fine-tuning runs in
    one process. Needs ``model.context.layer_drop = 0`` (ranks skipping different layers would not
    match each other's collectives). Ignored in a single process."""

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        _require([
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (self.valid_every >= 0, "valid_every must be >= 0"),
        ], where)


@dataclass(kw_only=True)
class ClassifyConfig:
    """The sequence-classifier head (pooling, head fit) and what fine-tuning does to the model. The
    fine-tuning run's optimiser and batch size are its ``optim`` and ``data`` sections
    (:func:`finetune_config`)."""

    pooling: Pooling = "mean"
    """How frames become one vector per series: ``mean`` over valid frames, ``attention`` (a learned
    score weights every frame) or ``stats`` (mean and standard deviation, x-vector style)."""
    layer: int = -1
    """Which context layer's output is pooled (-1 = the last; 0 = the projected front-end frames)."""
    all_layers: bool = False
    """Pool the projected front-end frames and every layer's output, concatenated (``layer`` is then
    ignored): few-label tasks often need what early layers keep and the last one drops."""
    segments: int = 0
    """Also pool the mean of each of this many equal parts of the valid frames, in order (coarse
    temporal shape, e.g. of a gesture, which whole-series pooling cannot see); 0 = off."""
    head_init: HeadInit = "random"
    """``random``, or ``logistic``: before any update, fit the linear head as an L2-regularised
    logistic regression on the frozen encoder's pooled, standardised features of the training series
    (closed-form-like, by L-BFGS). With ``linear_probe`` and ``max_updates = 0`` that is the whole
    fit; otherwise fine-tuning starts from it (linear probe, then fine-tune)."""
    probe_l2: float = 10.0
    """lambda of the logistic head fit: minimises sum of cross-entropies + lambda / 2 * ||W||^2
    (scikit-learn's C = 1 / lambda)."""
    linear_probe: bool = False
    """Freeze the whole encoder and train only the pooling and the linear head."""
    freeze_updates: int = 0
    """With full fine-tuning, keep the encoder frozen for the first this many updates (head first)."""
    head_dropout: float = 0.1
    """Dropout on the pooled vector before the linear head."""
    mask_prob: float = 0.0
    """Fine-tuning augmentation: about this fraction of frames is replaced by the mask embedding, in
    spans of ``model.masking.mask_length`` (0 = off)."""
    time_stretch: float = 0.0
    """Fine-tuning augmentation: each training series in each batch is resampled in time by a
    factor drawn log-uniformly from [1 / (1 + x), 1 + x] (``wavssl.data.sensor.time_stretch``), the
    same movement done faster or slower; 0 = off. Steps with the encoder frozen (a linear probe,
    ``freeze_updates``) reuse cached features of the unstretched series instead."""
    use_duration: bool = True
    """Give the head log(number of valid frames) besides the pooled vector: pooling is blind to how
    long a series is, which often tells classes apart (gestures, utterances); constant for windows."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy."""

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        _require([
            (self.layer >= -1, "layer must be >= -1"),
            (0 <= self.head_dropout < 1, "head_dropout must be in [0, 1)"),
            (0 <= self.mask_prob < 1, "mask_prob must be in [0, 1)"),
            (self.probe_l2 > 0, "probe_l2 must be > 0"),
            (self.segments >= 0, "segments must be >= 0"),
            (self.time_stretch >= 0, "time_stretch must be >= 0"),
            (self.freeze_updates >= 0, "freeze_updates must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        ], where)


@dataclass(kw_only=True)
class CTCConfig:
    """The recognizer head and what fine-tuning does to the model (freezing, masking, dropouts), after
    fairseq's low-resource (10 min / 1 h) recipe. The fine-tuning run's optimiser, validation and
    batching are its ``optim``, ``train`` and ``data`` sections (:func:`finetune_config`)."""

    language: str = ""
    """Transcript normalisation (``wavssl_onnx.normalize_text``): a BCP 47 code of any language (``de``,
    ``pl``, ``pt-BR``; its letters and diacritics are kept by Unicode class, with refined rules for
    ``ru``, ``cs``, ``en``, ``es``, ``fr``, ``it``, ``zh``, ``ja``, ``yue``, ``tr``, ``az``), or "" to keep
    the letters of every script."""
    freeze_updates: int = 10000
    """The Transformer stays frozen for the first this many updates: only the output layer learns."""
    freeze_feature_encoder: bool = True
    """Keep the front end (conv feature encoder) frozen for the whole run."""
    mask_prob: float = 0.65
    """Time masking: span starts chosen with this probability (x ``mask_length``), frames replaced by
    the pretrained mask embedding."""
    mask_length: int = 10
    """Time-mask span in frames."""
    channel_prob: float = 0.25
    """Channel masking: span starts over the projected feature channels (zeroed)."""
    channel_length: int = 64
    """Channel-mask span in channels."""
    layer_drop: float = 0.1
    """Probability of skipping each Transformer layer in training (replaces ``model.context.layer_drop``)."""
    final_dropout: float = 0.0
    """Dropout before the output layer."""
    refit_normalization: bool = False
    """Refit a pretrained ``norm = "global"`` log-mel front end's band statistics on the labelled
    training audio (adapts the input to the labels' level and channel); a run from scratch always
    fits its own."""

    def validate(self, where: str = "") -> None:
        """Raise ConfigError naming the first invalid field of this section."""
        _require([
            (0 <= self.mask_prob <= 1 and 0 <= self.channel_prob <= 1, "mask_prob and channel_prob must be in [0, 1]"),
            (self.mask_length >= 1 and self.channel_length >= 1, "mask_length and channel_length must be >= 1"),
            (0 <= self.layer_drop < 1 and 0 <= self.final_dropout < 1, "layer_drop and final_dropout must be in [0, 1)"),
            (self.freeze_updates >= 0, "freeze_updates must be >= 0"),
        ], where)
        from wavssl_onnx.text import check_language  # the runtime's check: one rule for both sides

        try:
            check_language(self.language)
        except ValueError as e:
            raise ConfigError(f"{where}language: {e}") from None


@dataclass(kw_only=True)
class Config:
    task: Task = "pretrain"
    """What the run trains: ``pretrain`` (self-supervised), ``ctc`` (speech recognizer) or ``classify``
    (sequence classifier)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data loading."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training loop."""
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    """Classifier fine-tuning (used when ``task = "classify"``)."""
    ctc: CTCConfig = field(default_factory=CTCConfig)
    """Recognizer fine-tuning (used when ``task = "ctc"``)."""

    preset: str = "base"
    """The preset this configuration started from. Fine-tuning a model starts from that preset's
    fine-tuning recipe (:func:`finetune_config`)."""

    def validate(self) -> "Config":
        """Check every section (its own ``validate``) and the constraints between sections; raise
        ConfigError naming the field. Returns self."""
        _check_literals(self, "")
        for name in ("model", "data", "optim", "train", "classify", "ctc"):
            getattr(self, name).validate(f"{name}.")
        cx, cl = self.model.context, self.classify
        _require([
            (self.preset in PRESETS, f"preset: {self.preset!r} is not one of {sorted(PRESETS)}"),
            (self.optim.max_updates > 0 or (self.task == "classify" and cl.head_init == "logistic"),
             "optim.max_updates must be > 0 (0 only for a classifier with classify.head_init = 'logistic')"),
            (not self.train.fsdp or cx.layer_drop == 0,
             "train.fsdp needs model.context.layer_drop = 0 (ranks would skip different layers)"),
            (not self.train.fsdp or self.task != "ctc",
             "train.fsdp: recognizer fine-tuning runs without FSDP (its validation runs on one rank)"),
            (self.data.time_stretch == 0 or self.model.frontend.kind == "sensor",
             "data.time_stretch applies to sensor series only"),
            (-1 <= cl.layer <= cx.num_layers, f"classify.layer must be in [-1, {cx.num_layers}]"),
        ])
        return self


TASKS = frozenset(typing.get_args(Task))


def _require(checks: list[tuple[bool, str]], where: str = "") -> None:
    """Raise ConfigError(``where`` + message) for the first check that fails."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(where + message)


def _check_literals(section: Any, where: str) -> None:
    """Every ``Literal``-typed field of a config dataclass (nested sections too) holds one of its
    values; raise ConfigError naming the field otherwise."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value, tp = getattr(section, f.name), hints[f.name]
        if dataclasses.is_dataclass(value):
            _check_literals(value, f"{where}{f.name}.")
        elif typing.get_origin(tp) is Literal and value not in typing.get_args(tp):
            raise ConfigError(f"{where}{f.name}: {value!r} is not one of {list(typing.get_args(tp))}")


# ----------------------------------------------------------------------------------------- presets


def base() -> Config:
    """fairseq wav2vec 2.0 BASE (LibriSpeech 960 h): 12 x 768 x 3072, 12 heads, G=2, V=320, final 256."""
    return Config()


def large() -> Config:
    """wav2vec 2.0 LARGE (LV-60 style): 24 x 1024 x 4096, pre-LN, layer_norm front end with bias."""
    cfg = base()
    cfg.preset = "large"
    m = cfg.model
    m.frontend = WaveformFrontend(norm_mode="layer_norm", conv_bias=True, feature_grad_mult=1.0)
    m.context = dataclasses.replace(
        m.context, embed_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096, layer_norm_first=True,
        dropout=0.0, layer_drop=0.0,
    )
    m.quantizer.dim = 768
    m.quantizer.min_temp = 0.1
    m.final_dim = 768
    cfg.data.normalize = True
    cfg.data.max_batch_samples = 1_200_000
    cfg.optim.lr = 3e-4
    cfg.optim.max_updates = 1_000_000
    return cfg


def small() -> Config:
    """A ~10M-parameter waveform model sized for a 2-core CPU or a quick GPU run."""
    cfg = base()
    cfg.preset = "small"
    m = cfg.model
    m.frontend = WaveformFrontend(conv_layers=((256, 10, 5),) + ((256, 3, 2),) * 4 + ((256, 2, 2),) * 2)
    m.context = dataclasses.replace(m.context, embed_dim=384, num_layers=6, num_heads=6, ffn_dim=1536,
                                    pos_conv_kernel=64, layer_drop=0.0)
    m.quantizer = dataclasses.replace(m.quantizer, entries=160, dim=128, temp_decay=0.9995)
    m.masking.num_negatives = 50
    m.final_dim = 128
    _cpu_data(cfg, max_samples=80000, max_batch_samples=320000)
    _cpu_optim(cfg, lr=1e-3, warmup=500, max_updates=20000)
    return cfg


def tiny() -> Config:
    """A ~1M-parameter fbank model that learns in minutes on a 2-core CPU (tests, demos)."""
    cfg = base()
    cfg.preset = "tiny"
    m = cfg.model
    m.frontend = FbankFrontend(channels=128, subsampling=2, feature_grad_mult=1.0)
    m.context = dataclasses.replace(m.context, embed_dim=128, num_layers=3, num_heads=4, ffn_dim=512,
                                    pos_conv_kernel=32, pos_conv_groups=8, layer_drop=0.0,
                                    dropout=0.05, attention_dropout=0.05,
                                    dropout_input=0.05, dropout_features=0.05)
    m.quantizer = dataclasses.replace(m.quantizer, entries=64, dim=64, temp_decay=0.995)
    m.masking = dataclasses.replace(m.masking, mask_prob=0.5, mask_length=5, num_negatives=20)
    m.loss.feature_penalty_weight = 0.1  # log-mel conv outputs start large; 10 collapses them to zero
    m.final_dim = 64
    _cpu_data(cfg, max_samples=48000, max_batch_samples=192000)
    _cpu_optim(cfg, lr=2e-3, warmup=50, max_updates=400)
    cfg.train.log_every = 10
    cfg.train.checkpoint_every = 100
    # chosen on the built-in corpus's dev split (wavssl quickstart): a model this small underfits, so
    # the front end trains too and masking is light (with the high learning rate of FINETUNE_RECIPES:
    # dev CER 42 % after 600 updates against 57 % at fairseq-style settings: lr 1e-3, frozen front
    # end, masks 0.3 / 0.1)
    cfg.ctc = CTCConfig(freeze_updates=0, freeze_feature_encoder=False, mask_prob=0.1, mask_length=5,
                        channel_prob=0.0, channel_length=16, layer_drop=0.0)
    return cfg


def sensor_tiny() -> Config:
    """A ~0.1M-parameter sensor model (time series of any channel count, here 1 until the data says
    otherwise): stride-1 conv front end that keeps every time step, 2 x 64 Transformer, short spans
    and few in-series distractors for series of tens of steps plus 30 from other series of the batch
    (so the context keeps what tells recordings apart); pretrains in about a minute on a 2-core CPU."""
    cfg = base()
    cfg.preset = "sensor-tiny"
    m = cfg.model
    m.frontend = SensorFrontend(sample_rate=100, in_channels=1, conv_layers=((64, 1, 1), (64, 3, 1)), norm="global",
                                channel_dropout=0.0, norm_mode="layer_norm", conv_bias=True, feature_grad_mult=1.0)
    m.context = dataclasses.replace(m.context, embed_dim=64, num_layers=2, num_heads=4, ffn_dim=256,
                                    pos_conv_kernel=8, pos_conv_groups=4, layer_drop=0.0, dropout=0.1,
                                    attention_dropout=0.0, dropout_input=0.1, dropout_features=0.1)
    m.quantizer = dataclasses.replace(m.quantizer, groups=2, entries=32, dim=32, temp_decay=0.998)
    m.masking = dataclasses.replace(m.masking, mask_prob=0.4, mask_length=2, min_masks=1, require_same_masks=False,
                                    num_negatives=10, cross_sample_negatives=30)
    m.loss.feature_penalty_weight = 0.1
    m.final_dim = 32
    cfg.data = dataclasses.replace(cfg.data, sample_rate=100, batch_size=32, num_workers=0)
    _cpu_optim(cfg, lr=2e-3, warmup=100, max_updates=1000)
    cfg.train.log_every = 50
    cfg.train.checkpoint_every = 500
    # few labels: statistics of every layer, a logistic head fitted on them, then full fine-tuning
    cfg.classify = ClassifyConfig(all_layers=True, pooling="stats", head_init="logistic")
    return cfg


def sensor_small() -> Config:
    """A ~0.5M-parameter sensor model: ``sensor_tiny`` at 128 wide and 3 layers deep."""
    cfg = sensor_tiny()
    cfg.preset = "sensor-small"
    m = cfg.model
    assert isinstance(m.frontend, SensorFrontend)
    m.frontend = dataclasses.replace(m.frontend, conv_layers=((128, 1, 1), (128, 3, 1)))
    m.context = dataclasses.replace(m.context, embed_dim=128, num_layers=3, num_heads=4, ffn_dim=512,
                                    pos_conv_groups=8)
    m.quantizer = dataclasses.replace(m.quantizer, entries=64, dim=64)
    m.final_dim = 64
    _cpu_optim(cfg, lr=1e-3, warmup=100, max_updates=2000)
    return cfg


def _cpu_data(cfg: Config, *, max_samples: int, max_batch_samples: int) -> None:
    cfg.data.min_samples = 8000
    cfg.data.max_samples = max_samples
    cfg.data.max_batch_samples = max_batch_samples
    cfg.data.num_workers = 1


def _cpu_optim(cfg: Config, *, lr: float, warmup: int, max_updates: int) -> None:
    cfg.optim.lr = lr
    cfg.optim.warmup_updates = warmup
    cfg.optim.max_updates = max_updates
    cfg.optim.clip_norm = 10.0


PRESETS: dict[str, Callable[[], Config]] = {
    "base": base, "large": large, "small": small, "tiny": tiny, "sensor-tiny": sensor_tiny, "sensor-small": sensor_small,
}


@dataclass(frozen=True)
class FinetuneRecipe:
    """The run settings (optimiser, validation, batching) a preset's models are fine-tuned with; the
    model's own fine-tuning fields (freezing, masking, head) are its ``ctc`` and ``classify`` sections."""

    lr: float
    """Peak learning rate (``optim.lr``)."""
    max_updates: int
    """Updates of the run (``optim.max_updates``)."""
    schedule: Schedule = "tri_stage"
    """``optim.schedule``; tri-stage: 10% warm-up, 40% hold, 50% exponential decay to 5% of the peak."""
    warmup_updates: int | None = None
    """``optim.warmup_updates`` (None keeps the pretraining value; tri-stage ignores it)."""
    valid_every: int = 500
    """``train.valid_every``."""
    best_metric: BestMetric = "wer"
    """``train.best_metric``."""
    max_batch_samples: int | None = None
    """``data.max_batch_samples`` (None keeps the pretraining value)."""
    max_samples: int | None = None
    """``data.max_samples`` (None keeps the pretraining value)."""
    batch_size: int | None = None
    """``data.batch_size`` (None keeps the pretraining value)."""


FINETUNE_RECIPES: dict[str, FinetuneRecipe] = {
    # fairseq's 10-minute recipe (base_10m)
    "ctc": FinetuneRecipe(lr=5e-5, max_updates=13000, max_batch_samples=3_200_000, max_samples=480_000),
    "classify": FinetuneRecipe(lr=1e-3, max_updates=300, schedule="polynomial", warmup_updates=30, batch_size=64),
    # tiny: chosen on the built-in corpus's dev split; WER saturates near 100 % early on and cannot
    # rank checkpoints, CER can
    "tiny/ctc": FinetuneRecipe(lr=2e-3, max_updates=300, max_batch_samples=480_000, max_samples=480_000,
                               valid_every=100, best_metric="cer"),
}
"""What :func:`finetune_config` sets, per fine-tuning task (``ctc``, ``classify``); ``PRESET/TASK``
where a preset has a recipe of its own."""


def finetune_config(cfg: Config, task: Literal["ctc", "classify"]) -> Config:
    """The configuration of a fine-tuning run for ``task``, validated. A pretraining run's ``cfg``
    becomes the starting configuration of its preset's recipe for that task
    (:data:`FINETUNE_RECIPES`): ``task`` set, the recipe's optimiser, validation and batching, the
    rest of ``optim``, ``train`` and ``data`` kept; a recognizer run has no FSDP (its validation runs
    on one rank), a classifier run takes one batch per update. A ``cfg`` already for ``task`` is
    returned as it is. The user's ``--config``/``--set`` go over the result."""
    if cfg.task == task:
        return cfg.validate()
    if cfg.task != "pretrain":
        raise ConfigError(f"task: a {cfg.task!r} configuration cannot configure a {task!r} fine-tuning run")
    r = FINETUNE_RECIPES.get(f"{cfg.preset}/{task}", FINETUNE_RECIPES[task])
    optim = dataclasses.replace(cfg.optim, lr=r.lr, max_updates=r.max_updates, schedule=r.schedule,
                                warmup_updates=cfg.optim.warmup_updates if r.warmup_updates is None else r.warmup_updates,
                                accumulate=1 if task == "classify" else cfg.optim.accumulate)
    train = dataclasses.replace(cfg.train, valid_every=r.valid_every, best_metric=r.best_metric,
                                fsdp=cfg.train.fsdp and task != "ctc")
    d = cfg.data
    data = dataclasses.replace(d, max_batch_samples=r.max_batch_samples or d.max_batch_samples,
                               max_samples=r.max_samples or d.max_samples, batch_size=r.batch_size or d.batch_size)
    data.min_samples = min(data.min_samples, data.max_samples)
    return dataclasses.replace(cfg, task=task, optim=optim, train=train, data=data).validate()


def architecture(model: ModelConfig) -> ModelConfig:
    """``model`` with its regularisation (dropouts, layer drop) and attention chunking zeroed: what
    must match for weights to carry over between a pretraining and a fine-tuning run (a model
    pretrained with full attention may be fine-tuned with chunked attention, for streaming)."""
    context = dataclasses.replace(model.context, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                  dropout_input=0.0, dropout_features=0.0, layer_drop=0.0, attention_chunk=0,
                                  attention_left_chunks=-1)
    return dataclasses.replace(model, context=context)


def preset(name: str) -> Config:
    """The named preset (``base``, ``large``, ``small``, ``tiny``, ``sensor-tiny``, ``sensor-small``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


# ---------------------------------------------------------------------------- (de)serialisation


REMOVED_KEYS: dict[str, str] = {
    "model.masking.channel_prob": "read by nothing; fine-tuning's channel masking is ctc.channel_prob",
    "model.masking.channel_length": "read by nothing; fine-tuning's channel masking is ctc.channel_length",
}
"""Keys older wavssl versions wrote to ``config.json`` (dotted path -> why they went). Loading drops
them, so every run directory written before still loads; a TOML file naming one gets a warning."""


def drop_removed_keys(data: dict[str, Any]) -> list[str]:
    """Remove :data:`REMOVED_KEYS` from a nested config dict in place; returns the dotted keys removed."""
    removed = []
    for dotted in REMOVED_KEYS:
        *parents, leaf = dotted.split(".")
        node: Any = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            del node[leaf]
            removed.append(dotted)
    return removed


MOVED_KEYS: dict[str, str] = {
    "ctc.lr": "optim.lr", "ctc.max_updates": "optim.max_updates", "ctc.valid_every": "train.valid_every",
    "ctc.best_metric": "train.best_metric", "ctc.max_batch_samples": "data.max_batch_samples",
    "ctc.max_samples": "data.max_samples", "classify.lr": "optim.lr", "classify.max_updates": "optim.max_updates",
    "classify.warmup_updates": "optim.warmup_updates", "classify.batch_size": "data.batch_size",
}
"""Fine-tuning run settings older versions kept in the head sections (old key -> the fine-tuning
run's own key). A fine-tuning run's ``config.json`` also held them where they now are (``ctc.lr``
was copied to ``optim.lr``), except validation and batching, which move; a pretraining run's held
defaults for a later fine-tuning (now :data:`FINETUNE_RECIPES`)."""


def move_old_keys(data: dict[str, Any], task: str) -> list[tuple[str, str | None]]:
    """Apply :data:`MOVED_KEYS` to a nested config dict in place, for a run of ``task``: the keys of
    that task's head section go to their new place (overwriting it), those of the other heads are
    dropped. Returns ``(old key, new key or None when dropped)`` for each key found."""
    found: list[tuple[str, str | None]] = []
    for old, new in MOVED_KEYS.items():
        section, leaf = old.split(".")
        node = data.get(section)
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        if section != task:
            found.append((old, None))
            continue
        new_section, new_leaf = new.split(".")
        target = data.setdefault(new_section, {})
        if isinstance(target, dict):
            target[new_leaf] = value
        found.append((old, new))
    return found


def infer_preset(cfg: Config) -> str:
    """The preset whose architecture ``cfg.model`` has (the input channel count aside); ``base`` (or
    ``sensor-tiny`` for a sensor model) when none has it. For configs written before ``preset`` was."""
    for name, make in PRESETS.items():
        model = make().model
        if isinstance(model.frontend, SensorFrontend):  # the channel count comes from the data
            model.frontend = dataclasses.replace(model.frontend, in_channels=cfg.model.frontend.in_channels)
        if architecture(model) == architecture(cfg.model):
            return name
    return "sensor-tiny" if cfg.model.frontend.kind == "sensor" else "base"


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists) of a config dataclass; a front end's ``kind`` first."""
    d = json.loads(json.dumps(dataclasses.asdict(cfg)))
    fe = d.get("model", {}).get("frontend") if isinstance(cfg, Config) else None
    if isinstance(fe, dict):
        d["model"]["frontend"] = {"kind": fe.pop("kind"), **fe}
    return d


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise ConfigError naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(where + k for k in unknown)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, where + ".")
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if origin in (typing.Union, types.UnionType):
        if tp == FrontendConfig:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table, got {value!r}")
            kind = value.get("kind", "waveform")
            if kind not in FRONTENDS:
                raise ConfigError(f"{where}.kind: {kind!r} is not one of {list(FRONTENDS)}")
            return from_dict(FRONTENDS[kind], value, where + ".")
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def merge(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A new Config with nested ``overrides`` (e.g. from a TOML file) applied over ``cfg``. A key of
    :data:`MOVED_KEYS` is moved (with a warning) when ``cfg`` is that head's fine-tuning run, and is
    an error elsewhere (it would set nothing)."""
    overrides = json.loads(json.dumps(overrides))  # moved keys are popped: leave the caller's dict alone
    task = overrides.get("task", cfg.task)
    for old, new in move_old_keys(overrides, task):
        if new is None:
            raise ConfigError(f"{old} is now {MOVED_KEYS[old]} of the fine-tuning run (wavssl finetune "
                              f"--set {MOVED_KEYS[old]}=...); this is a {task!r} configuration")
        warnings.warn(f"{old} is now {new} (the fine-tuning run's own setting); applied there", stacklevel=2)
    base = to_dict(cfg)
    fe_over = overrides.get("model", {}).get("frontend") if isinstance(overrides.get("model"), dict) else None
    if isinstance(fe_over, dict):
        for old, (kind, new) in FRONTEND_RENAMED.items():
            if old in fe_over:
                warnings.warn(f"model.frontend.{old} is now model.frontend.{new} (of a {kind!r} front end)", stacklevel=2)
                fe_over.setdefault(new, fe_over.pop(old))
        fe = cfg.model.frontend
        kind = fe_over.get("kind", fe.kind)
        if kind != fe.kind and kind in FRONTENDS:  # another kind: its defaults, the common fields kept
            common = {f.name: getattr(fe, f.name) for f in dataclasses.fields(_FrontendFields)}
            base["model"]["frontend"] = to_dict(FRONTENDS[kind](**common))

    def deep(base_d: dict[str, Any], over: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(base_d)
        for k, v in over.items():
            if k not in base_d:
                hint = f" (a {base_d.get('kind')!r} front end has {sorted(base_d)})" if where == "model.frontend." else ""
                raise ConfigError(f"unknown config key {where + k!r}{hint}")
            out[k] = deep(base_d[k], v, f"{where}{k}.") if isinstance(v, dict) and isinstance(base_d[k], dict) else v
        return out

    return from_dict(Config, deep(base, overrides, ""))


FRONTEND_RENAMED: dict[str, tuple[str, str]] = {
    "fbank_channels": ("fbank", "channels"), "sensor_conv_layers": ("sensor", "conv_layers"),
    "sensor_norm": ("sensor", "norm")}
"""``[model.frontend]`` keys of the flat front-end table older versions wrote -> (kind, key now)."""


def upgrade_flat_frontend(frontend: dict[str, Any]) -> dict[str, Any]:
    """A front-end table as older versions wrote it (every kind's fields, prefixed where two kinds
    share a name) -> the table of its ``kind``; a current table is returned as it is."""
    if not any(k in frontend for k in FRONTEND_RENAMED):
        return frontend
    kind = frontend.get("kind", "waveform")
    fields = {f.name for f in dataclasses.fields(FRONTENDS[kind])} if kind in FRONTENDS else set()
    out = {k: v for k, v in frontend.items() if k in fields and k not in ("conv_layers", "norm")}
    if kind == "waveform" and "conv_layers" in frontend:
        out["conv_layers"] = frontend["conv_layers"]
    for old, (owner, new) in FRONTEND_RENAMED.items():
        if owner == kind and old in frontend:
            out[new] = frontend[old]
    return out


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """``["model.context.num_layers=4", "optim.lr=1e-3"]`` -> nested dict. Values are TOML literals;
    anything that does not parse as one is taken as a string."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML override file; errors name the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot read TOML config: {e}") from e
    for dotted in drop_removed_keys(data):
        warnings.warn(f"{path}: {dotted} is ignored ({REMOVED_KEYS[dotted]})", stacklevel=2)
    return data


def dump_toml(cfg: Config) -> str:
    """The config as TOML text (tables per section), loadable with ``load_toml`` + ``merge``."""
    lines: list[str] = []

    def emit(d: dict[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if scalars:
            if prefix:
                lines.append(f"[{prefix}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
            lines.append("")
        for k, v in d.items():
            if isinstance(v, dict):
                emit(v, f"{prefix}.{k}" if prefix else k)

    emit(to_dict(cfg), "")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)


def save_json(cfg: Config, path: str | Path) -> None:
    """Write the full config as JSON (the checkpoint's ``config.json``), atomically."""
    from wavssl_onnx.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2) + "\n")


REQUIRED_JSON_KEYS = ("task", "model")
"""Keys every ``config.json`` holds (the others fall back to their defaults)."""


def load_json(path: str | Path) -> Config:
    """Read a ``config.json``; a malformed one raises :class:`ConfigError` in one line naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got a {type(data).__name__}")
    missing = [k for k in REQUIRED_JSON_KEYS if k not in data]
    if missing:
        raise ConfigError(f"{path}: lacks {', '.join(repr(k) for k in missing)} (not a complete wavssl config)")
    drop_removed_keys(data)  # written by older versions: the run still loads
    move_old_keys(data, str(data["task"]))
    if isinstance(data["model"], dict) and isinstance(data["model"].get("frontend"), dict):
        data["model"]["frontend"] = upgrade_flat_frontend(data["model"]["frontend"])
    try:
        cfg = from_dict(Config, data)
        if "preset" not in data:
            cfg.preset = infer_preset(cfg)
        return cfg.validate()
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: invalid config: {e}") from e


def resolve(preset_name: str = "tiny", toml_path: str | Path | None = None,
            assignments: list[str] | None = None) -> Config:
    """Preset, then TOML overrides, then ``--set`` overrides; validated."""
    cfg = preset(preset_name)
    if toml_path is not None:
        cfg = merge(cfg, load_toml(toml_path))
    if assignments:
        cfg = merge(cfg, parse_set(assignments))
    return cfg.validate()
