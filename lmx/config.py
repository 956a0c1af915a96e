"""The typed config tree of an lmx run.

A config is a frozen dataclass tree (`Config` with one section per concern). A config file is a
Python module that defines `get_config() -> Config`; `load_config(path, overrides)` imports it and
applies dotted overrides such as ``model.d_model=512``, each converted to the field's declared type.
Every construction validates itself, so an invalid config cannot exist; errors are `ConfigError`s
that name the dotted key and the offending value.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from lmx.errors import ConfigError

_DATACLASS = dict(frozen=True, kw_only=True, slots=True)

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


def _fail(section: str, name: str, value: Any, why: str) -> typing.NoReturn:
    raise ConfigError(f"{section}.{name}={value!r}: {why}")


def _require_positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            _fail(cfg.SECTION, name, value, "must be positive")


@dataclasses.dataclass(**_DATACLASS)
class ModelConfig:
    """Decoder-only transformer. Shapes: d_model = n_heads * head_dim; kv heads are shared (GQA)."""

    SECTION: ClassVar[str] = "model"

    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    d_ff: int = 1024
    max_seq_len: int = 1024
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    qk_norm: bool = False
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    tie_embeddings: bool = True
    dtype: Dtype = "float32"
    param_dtype: Dtype = "float32"
    scan_layers: bool = True
    remat: Literal["none", "full", "save_dots"] = "none"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        _require_positive(
            self,
            "vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "d_ff",
            "max_seq_len",
            "rope_theta",
            "norm_eps",
            "init_std",
        )
        if self.d_model % self.n_heads:
            _fail("model", "d_model", self.d_model, f"not divisible by model.n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            _fail("model", "n_heads", self.n_heads, f"not divisible by model.n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            _fail("model", "d_model", self.d_model, f"head_dim={self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclasses.dataclass(**_DATACLASS)
class DataConfig:
    """Corpus, tokenizer and the batches the model reads (see lmx.data)."""

    SECTION: ClassVar[str] = "data"

    seq_len: int = 256
    # "stdlib" (built in), "text:GLOB[,GLOB]" or "jsonl:GLOB@FIELD" (lmx.data.corpus).
    corpus: str = "stdlib"
    validation_fraction: float = 0.02
    dir: str = "data"  # tokenizers and prepared token files live under here
    tokenizer: str = ""  # a SentencePiece model; "" = trained on the corpus if missing
    tokenizer_type: Literal["bpe", "unigram"] = "bpe"
    tokenizer_train_bytes: int = 10_000_000
    packing: Literal["concat", "document"] = "document"
    loader_threads: int = 2

    def __post_init__(self) -> None:
        _require_positive(self, "seq_len", "tokenizer_train_bytes", "loader_threads")
        if not 0.0 < self.validation_fraction < 1.0:
            _fail("data", "validation_fraction", self.validation_fraction, "must lie in (0, 1)")
        if not self.corpus:
            _fail("data", "corpus", self.corpus, "must name a corpus")


@dataclasses.dataclass(**_DATACLASS)
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
        _require_positive(self, "learning_rate", "eps")
        if self.warmup_steps < 0:
            _fail("optim", "warmup_steps", self.warmup_steps, "must be >= 0")
        for name in ("decay_fraction", "min_lr_ratio", "b1", "b2"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _fail("optim", name, getattr(self, name), "must lie in [0, 1]")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                _fail("optim", name, getattr(self, name), "must be >= 0")


@dataclasses.dataclass(**_DATACLASS)
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
        _require_positive(self, "steps", "batch_size", "micro_batches")
        if self.batch_size % self.micro_batches:
            _fail("train", "batch_size", self.batch_size, f"not divisible by train.micro_batches={self.micro_batches}")
        if self.z_loss < 0:
            _fail("train", "z_loss", self.z_loss, "must be >= 0")


@dataclasses.dataclass(**_DATACLASS)
class MeshConfig:
    """Device mesh ("data", "fsdp", "tensor"). One size may be -1: all the devices left over."""

    SECTION: ClassVar[str] = "mesh"
    AXES: ClassVar[tuple[str, ...]] = ("data", "fsdp", "tensor")

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_RULES

    def __post_init__(self) -> None:
        sizes = self.shape
        if sum(s == -1 for s in sizes) > 1:
            raise ConfigError(f"mesh: at most one of mesh.data/fsdp/tensor may be -1, got {sizes}")
        for name, size in zip(self.AXES, sizes, strict=True):
            if size == 0 or size < -1:
                _fail("mesh", name, size, "must be positive, or -1 for the remaining devices")
        seen = set()
        for logical, axes in self.rules:
            if logical in seen:
                _fail("mesh", "rules", logical, "logical axis listed twice")
            seen.add(logical)
            for axis in axes:
                if axis not in self.AXES:
                    _fail("mesh", "rules", f"{logical}->{axis}", f"unknown mesh axis; expected one of {self.AXES}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.data, self.fsdp, self.tensor)


@dataclasses.dataclass(**_DATACLASS)
class EvalConfig:
    """Validation-split evaluation: loss, perplexity and bits per byte (lmx.evaluate)."""

    SECTION: ClassVar[str] = "eval"

    every_steps: int = 0  # 0: only the final evaluation
    batches: int = 8  # per periodic evaluation (always the same batches, so they compare)
    final_batches: int = 0  # 0: the whole validation split
    batch_size: int = 0  # global, in sequences; 0: train.batch_size

    def __post_init__(self) -> None:
        for name in ("every_steps", "batches", "final_batches", "batch_size"):
            if getattr(self, name) < 0:
                _fail("eval", name, getattr(self, name), "must be >= 0")
        if self.every_steps and not self.batches:
            _fail("eval", "batches", self.batches, "must be positive when eval.every_steps is set")


@dataclasses.dataclass(**_DATACLASS)
class CheckpointConfig:
    """Orbax checkpoints of the train state, the data iterator and run metadata (lmx.checkpoint)."""

    SECTION: ClassVar[str] = "checkpoint"

    every_steps: int = 100  # 0: only at the end (and on preemption)
    max_to_keep: int = 3
    async_save: bool = True  # write in the background while training goes on

    def __post_init__(self) -> None:
        if self.every_steps < 0:
            _fail("checkpoint", "every_steps", self.every_steps, "must be >= 0")
        _require_positive(self, "max_to_keep")


@dataclasses.dataclass(**_DATACLASS)
class WandbConfig:
    """Weights & Biases sink. "disabled" writes nothing; "offline" writes under the run directory."""

    SECTION: ClassVar[str] = "log.wandb"

    mode: Literal["online", "offline", "disabled"] = "disabled"
    project: str = "lmx"
    entity: str = ""
    group: str = ""  # runs of one sweep share a group
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(**_DATACLASS)
class LogConfig:
    """Metrics every `every_steps` steps to the console, metrics.jsonl and wandb (lmx.metrics)."""

    SECTION: ClassVar[str] = "log"

    every_steps: int = 10
    progress: bool = True  # console progress bar
    # Peak FLOP/s of one device for MFU; 0: a table of known accelerators, or measured on CPU.
    peak_flops: float = 0.0
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        _require_positive(self, "every_steps")
        if self.peak_flops < 0:
            _fail("log", "peak_flops", self.peak_flops, "must be >= 0")


@dataclasses.dataclass(**_DATACLASS)
class ObjectiveConfig:
    """What the run optimises: pretraining, or a post-training objective on chat JSONL (lmx.post).

    Post-training starts from ``init_from`` (a run directory, or one of its checkpoint step
    directories): its parameters only, with a fresh optimizer, and its tokenizer.
    """

    SECTION: ClassVar[str] = "objective"

    kind: Literal["pretrain", "sft", "preference", "reward_model"] = "pretrain"
    init_from: str = ""
    train_files: str = ""  # JSONL glob(s), comma-separated (lmx.data.chat formats)
    eval_files: str = ""  # held-out JSONL: evaluated every eval.every_steps and at the end
    truncation: Literal["drop", "truncate"] = "drop"  # examples longer than data.seq_len
    # sft: mean over all response tokens of the batch, or mean over sequences of their token mean.
    normalize: Literal["token", "sequence"] = "token"
    # preference: the loss (lmx.train.preference_losses) and its hyperparameters.
    loss: Literal["dpo", "ipo", "simpo", "orpo"] = "dpo"
    beta: float = 0.1
    label_smoothing: float = 0.0  # dpo: conservative DPO when > 0
    gamma: float = 0.5  # simpo's target margin
    # Reference log-probs: from the frozen init_from parameters inside every step, or once over the
    # dataset before training (stored in the run directory).
    reference: Literal["in_step", "precomputed"] = "in_step"
    # reward_model: weight of an auxiliary next-token loss on the chosen responses (each response's
    # token mean, averaged over pairs), which keeps the language model's features in the shared
    # layers while the scalar head trains (Yang et al. 2024, "Regularizing hidden states enables
    # learning generalizable reward model for LLMs"). 0 turns it off.
    lm_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        _require_positive(self, "beta")
        if self.lm_loss_weight < 0:
            _fail("objective", "lm_loss_weight", self.lm_loss_weight, "must be >= 0")
        if self.lm_loss_weight and self.kind != "reward_model":
            _fail("objective", "lm_loss_weight", self.lm_loss_weight, "applies to objective.kind='reward_model' only")
        if not 0.0 <= self.label_smoothing < 0.5:
            _fail("objective", "label_smoothing", self.label_smoothing, "must lie in [0, 0.5)")
        if self.gamma < 0:
            _fail("objective", "gamma", self.gamma, "must be >= 0")
        if self.kind != "pretrain" and not self.train_files:
            _fail("objective", "train_files", self.train_files, f"objective.kind={self.kind!r} needs JSONL files")
        if self.kind == "preference" and self.loss in ("dpo", "ipo") and not self.init_from:
            _fail("objective", "init_from", self.init_from, f"objective.loss={self.loss!r} needs a reference model")

    @property
    def post_training(self) -> bool:
        return self.kind != "pretrain"


@dataclasses.dataclass(**_DATACLASS)
class SweepConfig:
    """Where a run sits in a sweep (lmx.scaling.sweep). Set by the sweep, never by hand: the run's
    wandb group is the sweep's name, and its coordinates reach wandb and the fits with the config."""

    SECTION: ClassVar[str] = "sweep"

    name: str = ""
    # (key, value) pairs, e.g. (("budget", 1e13), ("model", "L4-d128"), ("params", 1.2e6)).
    coords: tuple[tuple[str, Any], ...] = ()

    def coord(self, key: str, default: Any = None) -> Any:
        return dict(self.coords).get(key, default)


@dataclasses.dataclass(**_DATACLASS)
class Config:
    """The whole run. Sections are passed explicitly to the code that needs them, never globally."""

    name: str = "run"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        if self.data.seq_len > self.model.max_seq_len:
            _fail("data", "seq_len", self.data.seq_len, f"exceeds model.max_seq_len={self.model.max_seq_len}")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        return _convert(data, cls, "")

    @classmethod
    def from_json(cls, text: str) -> Config:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config JSON is malformed: {e}") from None
        return cls.from_dict(data)

    def replace(self, **overrides: Any) -> Config:
        """Copy with dotted-key overrides, e.g. ``cfg.replace(**{"model.d_model": 512})``."""
        return apply_overrides(self, overrides)


# --------------------------------------------------------------------------------------------------
# Conversion between plain data (JSON, command-line strings) and typed dataclasses.


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(x) for x in obj]
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Converts plain `value` (from JSON, or a string from the command line) to type `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key or 'config'}: expected a mapping of fields, got {value!r}")
        hints = _field_types(tp)
        names = [f.name for f in dataclasses.fields(tp) if f.init]
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ConfigError(_unknown_key_message(_join(key, unknown[0]), _all_keys(tp, key)))
        kwargs = {k: _convert(v, hints[k], _join(key, k)) for k, v in value.items()}
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ConfigError(f"{key}={value!r}: expected one of {list(args)}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = _parse_sequence(value, key)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a sequence")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{key}={value!r}: expected {len(args)} items")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}={value!r}: expected a boolean (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={value!r}: expected a string")
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _parse_sequence(text: str, key: str) -> list[Any]:
    """A sequence on the command line: JSON (``[1, 2]``) or comma-separated (``a,b``)."""
    text = text.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{key}={text!r}: not valid JSON ({e})") from None
    return [part.strip() for part in text.split(",") if part.strip()]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key below `cls`: sections and leaves."""
    keys = []
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(_all_keys(hints[f.name], key))
    return keys


def _unknown_key_message(key: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if not close:  # a typo in the last part only: compare within the section
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in valid if difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1]], cutoff=0.7)][:3]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown config key {key!r}{hint}"


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["model.d_model=512", ...]`` -> ``{"model.d_model": "512"}``."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        result[key.strip()] = value.strip()
    return result


def apply_overrides(cfg: Config, overrides: Mapping[str, Any] | Iterable[str]) -> Config:
    """Applies dotted overrides all at once (so related keys can change together) and validates."""
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    if not overrides:
        return cfg
    data = cfg.to_dict()
    valid = _all_keys(Config)
    for key, value in overrides.items():
        parts = key.split(".")
        node = data
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(_unknown_key_message(key, valid))
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return Config.from_dict(data)


def load_config(path: str | Path, overrides: Mapping[str, Any] | Iterable[str] = ()) -> Config:
    """Imports a config file (a Python module defining ``get_config()``, or a resolved config saved
    as JSON, like a run's ``config.json``) and applies overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.suffix == ".json":
        try:
            return apply_overrides(Config.from_json(path.read_text()), overrides)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    cfg = call_python_file(path, "get_config", "config file")
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, expected lmx.config.Config")
    return apply_overrides(cfg, overrides)


def call_python_file(path: str | Path, function: str, what: str) -> Any:
    """Imports the Python file `path` and returns what its `function()` returns: how config files
    (``get_config``) and sweep files (``get_sweep``) are read. Errors are ConfigErrors naming the
    file; `what` says what it is ("config file", "sweep file")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    module_name = f"lmx_{function}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what} {str(path)!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses defined in the file need their module registered
    try:
        try:
            spec.loader.exec_module(module)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        except Exception as e:
            raise ConfigError(f"{what} {str(path)!r} failed to import: {type(e).__name__}: {e}") from e
        fn = getattr(module, function, None)
        if not callable(fn):
            raise ConfigError(f"{what} {str(path)!r} defines no {function}() function")
        try:
            return fn()
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    finally:
        sys.modules.pop(module_name, None)


def flatten_keys(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"model.d_model": 256, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def diff_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two flattened configs (or are in only one)."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
