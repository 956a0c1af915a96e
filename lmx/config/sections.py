"""The sections of the config tree: one frozen dataclass per concern, each validating itself."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Literal

from lmx.errors import ConfigError

DATACLASS = dict(frozen=True, kw_only=True, slots=True)

# Logical axis name -> mesh axes. The single place that says how tensors are laid out over the mesh:
# parameters, optimizer state, batches and activations all take their shardings from it.
DEFAULT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", ("fsdp",)),
    ("vocab", ("tensor",)),
    ("mlp", ("tensor",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("head_dim", ()),
    ("layers", ()),
    ("norm", ()),
    ("length", ()),
    ("act_embed", ()),
)

Dtype = Literal["float32", "bfloat16", "float16"]


def fail(section: str, name: str, value: Any, why: str) -> typing.NoReturn:
    raise ConfigError(f"{section}.{name}={value!r}: {why}")


def require_positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            fail(cfg.SECTION, name, value, "must be positive")


@dataclasses.dataclass(**DATACLASS)
class ModelConfig:
    """Decoder-only transformer. Heads are ``head_dim`` wide (d_model // n_heads unless ``head_size``
    says otherwise, as Qwen3's do); kv heads are shared (GQA)."""

    SECTION: ClassVar[str] = "model"
    # Fields that change how the model computes, not its parameters: a checkpoint restores under
    # other values of these (lmx.train.run_dir.check_same_model).
    COMPUTE_ONLY: ClassVar[tuple[str, ...]] = ("dtype", "attention", "attention_block", "remat")

    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    head_size: int = 0  # per-head width; 0: d_model // n_heads
    d_ff: int = 1024
    max_seq_len: int = 1024
    rope_theta: float = 10_000.0
    # Llama 3's RoPE scaling ("llama3": low frequencies divided by the factor, a smooth ramp between
    # the two wavelengths the frequency factors set; lmx.model.layers.rope_frequencies), or none.
    rope_scaling: Literal["none", "llama3"] = "none"
    rope_scaling_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_len: int = 8192
    norm_eps: float = 1e-6
    qk_norm: bool = False
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    tie_embeddings: bool = True
    dtype: Dtype = "float32"
    param_dtype: Dtype = "float32"
    scan_layers: bool = True
    remat: Literal["none", "full", "save_dots"] = "none"
    # Attention implementation (lmx.model.attention): "auto" = dot_product (cuDNN flash attention)
    # on GPU, chunked on TPU, reference on CPU; "chunked" holds O(L * attention_block) memory.
    # "splash" is TPU's Pallas kernel (interpret mode elsewhere: for tests).
    attention: Literal["auto", "reference", "dot_product", "chunked", "splash"] = "auto"
    attention_block: int = 512  # keys per block of chunked and splash (splash: rounded up to 128s)
    init_std: float = 0.02
    # How initialisation, forward multipliers and per-parameter optimizer settings scale with width
    # and depth (lmx.model.parametrization). At the base shape "mup" and "completep" equal "sp";
    # a base of 0 is this model's own value.
    parametrization: Literal["sp", "mup", "completep"] = "sp"
    base_d_model: int = 0
    base_head_dim: int = 0
    base_n_layers: int = 0
    zero_readout: bool = False  # mup/completep: a zero-initialised output layer (untied embeddings)
    depth_alpha: float = 1.0  # completep: residual branches x (n_layers / base_n_layers) ** -depth_alpha

    def __post_init__(self) -> None:
        require_positive(
            self,
            "vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "d_ff",
            "max_seq_len",
            "rope_theta",
            "rope_scaling_factor",
            "rope_low_freq_factor",
            "rope_original_max_len",
            "norm_eps",
            "init_std",
            "attention_block",
        )
        if self.head_size < 0:
            fail("model", "head_size", self.head_size, "must be positive, or 0 for d_model // n_heads")
        if not self.head_size and self.d_model % self.n_heads:
            fail("model", "d_model", self.d_model, f"not divisible by model.n_heads={self.n_heads}")
        if self.rope_high_freq_factor <= self.rope_low_freq_factor:
            fail(
                "model",
                "rope_high_freq_factor",
                self.rope_high_freq_factor,
                f"must exceed model.rope_low_freq_factor={self.rope_low_freq_factor}",
            )
        if self.n_heads % self.n_kv_heads:
            fail("model", "n_heads", self.n_heads, f"not divisible by model.n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            key = "head_size" if self.head_size else "d_model"
            fail("model", key, getattr(self, key), f"head_dim={self.head_dim} must be even for RoPE")

        for name in ("base_d_model", "base_head_dim", "base_n_layers"):
            if getattr(self, name) < 0:
                fail("model", name, getattr(self, name), "must be positive, or 0 for this model's own value")
        if self.zero_readout and (self.parametrization == "sp" or self.tie_embeddings):
            why = "needs model.parametrization mup or completep and model.tie_embeddings=False"
            fail("model", "zero_readout", self.zero_readout, why)
        base = self.base_d_model or self.d_model
        for name, width in (("d_ff", self.d_ff), ("n_heads", self.n_heads * self.head_dim)):
            if self.parametrization != "sp" and width * base % self.d_model:
                why = f"the base model (every width x {base}/{self.d_model}) would have a fractional width"
                fail("model", name, getattr(self, name), why)
        if not 0.0 < self.depth_alpha <= 1.0:
            fail("model", "depth_alpha", self.depth_alpha, "must lie in (0, 1] (CompleteP: 1; Yang et al.: 0.5)")

    @property
    def head_dim(self) -> int:
        return self.head_size or self.d_model // self.n_heads


@dataclasses.dataclass(**DATACLASS)
class DataConfig:
    """Corpus, tokenizer and the batches the model reads (see lmx.data)."""

    SECTION: ClassVar[str] = "data"

    seq_len: int = 256
    # "stdlib" (built in), "text:GLOB[,GLOB]" or "jsonl:GLOB@FIELD" (lmx.data.corpus).
    corpus: str = "stdlib"
    validation_fraction: float = 0.02
    dir: str = "data"  # tokenizers and prepared token files live under here
    # A SentencePiece model or a Hugging Face tokenizer.json; "" = trained on the corpus if missing.
    tokenizer: str = ""
    tokenizer_type: Literal["bpe", "unigram"] = "bpe"
    tokenizer_train_bytes: int = 10_000_000
    packing: Literal["concat", "document"] = "document"
    loader_threads: int = 2

    def __post_init__(self) -> None:
        require_positive(self, "seq_len", "tokenizer_train_bytes", "loader_threads")
        if not 0.0 < self.validation_fraction < 1.0:
            fail("data", "validation_fraction", self.validation_fraction, "must lie in (0, 1)")
        if not self.corpus:
            fail("data", "corpus", self.corpus, "must name a corpus")


@dataclasses.dataclass(**DATACLASS)
class OptimConfig:
    """AdamW with global-norm clipping and a warmup + cosine or warmup-stable-decay schedule."""

    SECTION: ClassVar[str] = "optim"

    learning_rate: float = 3e-3
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = 100
    # wsd: the final fraction of the steps spent decaying linearly to min_lr_ratio * learning_rate.
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # global norm; 0 disables clipping

    def __post_init__(self) -> None:
        require_positive(self, "learning_rate", "eps")
        if self.warmup_steps < 0:
            fail("optim", "warmup_steps", self.warmup_steps, "must be >= 0")
        for name in ("decay_fraction", "min_lr_ratio", "b1", "b2"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail("optim", name, getattr(self, name), "must lie in [0, 1]")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                fail("optim", name, getattr(self, name), "must be >= 0")


@dataclasses.dataclass(**DATACLASS)
class TrainConfig:
    """The training run: global batch in sequences, micro-batches for gradient accumulation."""

    SECTION: ClassVar[str] = "train"

    seed: int = 0
    steps: int = 1000
    batch_size: int = 32  # global, in sequences, summed over all devices and micro-batches
    micro_batches: int = 1
    z_loss: float = 0.0  # weight of log(Z)^2, keeps the softmax normaliser near 1 (PaLM)
    # A step whose loss or gradients are not finite never updates the state. "stop": the run exits
    # with an error naming the step and saves nothing after it; "skip": it goes on, counting skips.
    nonfinite: Literal["stop", "skip"] = "stop"

    def __post_init__(self) -> None:
        require_positive(self, "steps", "batch_size", "micro_batches")
        if self.batch_size % self.micro_batches:
            fail("train", "batch_size", self.batch_size, f"not divisible by train.micro_batches={self.micro_batches}")
        if self.z_loss < 0:
            fail("train", "z_loss", self.z_loss, "must be >= 0")


@dataclasses.dataclass(**DATACLASS)
class MeshConfig:
    """Device mesh ("data", "fsdp", "tensor"). One size may be -1: all the devices left over."""

    SECTION: ClassVar[str] = "mesh"
    AXES: ClassVar[tuple[str, ...]] = ("data", "fsdp", "tensor")

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_RULES
    # Many processes (hosts): into how many host groups the data axis splits; the remaining host
    # groups split fsdp, and tensor stays within a host. -1: as many as data and the processes share.
    data_hosts: int = -1

    def __post_init__(self) -> None:
        sizes = self.shape
        if sum(s == -1 for s in sizes) > 1:
            raise ConfigError(f"mesh: at most one of mesh.data/fsdp/tensor may be -1, got {sizes}")
        for name, size in zip(self.AXES, sizes, strict=True):
            if size == 0 or size < -1:
                fail("mesh", name, size, "must be positive, or -1 for the remaining devices")
        if self.data_hosts == 0 or self.data_hosts < -1:
            fail("mesh", "data_hosts", self.data_hosts, "must be positive, or -1 to choose")
        seen = set()
        for logical, axes in self.rules:
            if logical in seen:
                fail("mesh", "rules", logical, "logical axis listed twice")
            seen.add(logical)
            for axis in axes:
                if axis not in self.AXES:
                    fail("mesh", "rules", f"{logical}->{axis}", f"unknown mesh axis; expected one of {self.AXES}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.data, self.fsdp, self.tensor)


@dataclasses.dataclass(**DATACLASS)
class EvalConfig:
    """Held-out evaluation: loss, perplexity and bits per byte, or the objective's own metrics."""

    SECTION: ClassVar[str] = "eval"

    every_steps: int = 0  # 0: only the final evaluation
    batches: int = 8  # per periodic evaluation (always the same batches, so they compare)
    final_batches: int = 0  # 0: the whole validation split
    batch_size: int = 0  # global, in sequences; 0: train.batch_size

    def __post_init__(self) -> None:
        for name in ("every_steps", "batches", "final_batches", "batch_size"):
            if getattr(self, name) < 0:
                fail("eval", name, getattr(self, name), "must be >= 0")
        if self.every_steps and not self.batches:
            fail("eval", "batches", self.batches, "must be positive when eval.every_steps is set")


@dataclasses.dataclass(**DATACLASS)
class CheckpointConfig:
    """Orbax checkpoints of the train state, the data iterator and run metadata (lmx.checkpoint)."""

    SECTION: ClassVar[str] = "checkpoint"

    every_steps: int = 100  # 0: only at the end (and on preemption)
    max_to_keep: int = 3
    async_save: bool = True  # write in the background while training goes on

    def __post_init__(self) -> None:
        if self.every_steps < 0:
            fail("checkpoint", "every_steps", self.every_steps, "must be >= 0")
        require_positive(self, "max_to_keep")


@dataclasses.dataclass(**DATACLASS)
class WandbConfig:
    """Weights & Biases sink. "disabled" writes nothing; "offline" writes under the run directory."""

    SECTION: ClassVar[str] = "log.wandb"

    mode: Literal["online", "offline", "disabled"] = "disabled"
    project: str = "lmx"
    entity: str = ""
    group: str = ""  # runs of one sweep share a group
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(**DATACLASS)
class LogConfig:
    """Metrics every `every_steps` steps to the console, metrics.jsonl and wandb (lmx.train.metrics)."""

    SECTION: ClassVar[str] = "log"

    every_steps: int = 10
    progress: bool = True  # console progress bar
    # Peak FLOP/s of one device for MFU; 0: a table of known accelerators, or measured on CPU.
    peak_flops: float = 0.0
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        require_positive(self, "every_steps")
        if self.peak_flops < 0:
            fail("log", "peak_flops", self.peak_flops, "must be >= 0")


@dataclasses.dataclass(**DATACLASS)
class SweepConfig:
    """Where a run sits in a sweep (lmx.scaling.sweep). Set by the sweep, never by hand: the run's
    wandb group is the sweep's name, and its coordinates reach wandb and the fits with the config."""

    SECTION: ClassVar[str] = "sweep"

    name: str = ""
    # (key, value) pairs, e.g. (("budget", 1e13), ("model", "L4-d128"), ("params", 1.2e6)).
    coords: tuple[tuple[str, Any], ...] = ()

    def coord(self, key: str, default: Any = None) -> Any:
        return dict(self.coords).get(key, default)
