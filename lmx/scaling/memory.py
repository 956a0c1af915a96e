"""Memory per device of a training step, estimated from the config alone (nothing compiled).

`estimate_memory` says how many bytes each device of the config's mesh holds for parameters,
optimizer state, gradients and activations, so a run can be sized for a mesh larger than this
machine. Parameter and optimizer-state shapes, with their logical axes, come from the model and
optimizer themselves (`jax.eval_shape` of their init: nothing is allocated), split over the mesh by
the config's rules as training splits them.

Activations are a formula of the config whose structure was read off XLA's buffer assignment for
lmx's step (jax 0.10.2, CPU meshes of forced host devices) and which benchmarks/memory_plan.py
checks against `compiled.memory_analysis()`:

- Scanned layers (``model.scan_layers``) save each layer's residuals into ``[n_layers, ...]``
  stacks that live until the backward pass ends: the peak is every layer's residuals plus the
  largest working set (one layer's, or the logits').
- ``model.remat``: ``none`` saves everything (six MLP-wide tensors per layer, SwiGLU or GELU, six
  of the residual stream's width, q, k, v, and the attention's); ``full`` the block input only;
  ``save_dots`` the block input and the attention projections (on CPU the MLP's matmuls have a
  custom gradient, `lmx.model.matmul`, which the policy does not count as dots; elsewhere they are
  plain dots and their outputs are saved too).
- Reference attention saves float32 ``[B, H, L, S]`` logits and probabilities per layer, and the
  step broadcasts its mask once (three more such tensors). Chunked attention saves its output and
  log-sum-exp and works on one padded key block; so does cuDNN's (``dot_product`` on a GPU in 16
  bits, not measured here).
- Sharding as XLA's partitioner lays it out with the default rules: attention by batch over
  data x fsdp and heads over tensor, the residual stream by batch over data and width over fsdp.
  In scanned layers the MLP's hidden activations and the logits are split by batch over data only
  (and width over tensor): XLA follows the fsdp-split weights into a split contraction, so every
  fsdp device holds its data shard's whole rows there. Unrolled layers split them by batch.
- Gradients (twice with micro-batches: the running sum and one micro-batch's), and a copy of the
  parameters XLA carries around the scanned layer loops (`PARAM_COPIES`).
- On CPU, XLA computes 16-bit floats in float32 and stores them so; and with unrolled layers its
  scheduler recomputes rematerialised layers early, so remat saves nothing there. The estimate
  follows both on ``platform="cpu"``.

The total is what `memory_analysis()` says a device needs: arguments + temporaries + outputs -
aliased outputs (the state is donated, so the new state reuses its buffers). The full-remat working
set includes room that XLA's heap leaves beside the logits; other fragmentation, scalars and the
generated code are ignored, and so is, on a GPU, the runtime's own reserve (cuDNN and NCCL
workspaces): leave some 10% of the device free.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh

from lmx.config import Config, MeshConfig
from lmx.errors import ConfigError
from lmx.model.attention import resolve_attention
from lmx.model.flops import flops_per_token, tokens_per_step
from lmx.model.matmul import ordered_weight_gradient
from lmx.parallel.hardware import KNOWN_PEAK_FLOPS
from lmx.parallel.mesh import resolve_mesh_shape
from lmx.parallel.rules import mesh_axes_for, rules_table

F32 = 4
# Parameter-sized buffers XLA adds around the scanned layer loops, by model.scan_layers: its buffer
# assignment holds two copies of the parameters the loops carry, and the step's totals fit one
# (the other shares donated memory); none when the layers are unrolled.
PARAM_COPIES = {True: 1.0, False: 0.0}
GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Device:
    """An accelerator to plan for: its memory (the vendor's datasheet) and 16-bit peak FLOP/s."""

    name: str
    platform: str  # as jax.default_backend() names it: "gpu", "tpu"
    memory: int  # bytes
    peak_flops: float  # per device, dense bfloat16 (lmx.parallel.hardware.KNOWN_PEAK_FLOPS)


_PEAKS = dict(KNOWN_PEAK_FLOPS)
DEVICES = {
    d.name: d
    for d in (
        Device("h100", "gpu", 80 * GiB, _PEAKS["H100"]),
        Device("h200", "gpu", 141 * 10**9, _PEAKS["H200"]),
        Device("a100", "gpu", 80 * GiB, _PEAKS["A100"]),
        Device("tpu-v4", "tpu", 32 * GiB, _PEAKS["TPU v4"]),
        Device("tpu-v5p", "tpu", 95 * GiB, _PEAKS["TPU v5p"]),
        Device("tpu-v5e", "tpu", 16 * GiB, _PEAKS["TPU v5 lite"]),
        Device("tpu-v6e", "tpu", 32 * GiB, _PEAKS["TPU v6 lite"]),
    )
}


def device(name: str) -> Device:
    """The device called `name` (case and a leading "tpu-" optional: "H100", "v5p")."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    found = DEVICES.get(key) or DEVICES.get(f"tpu-{key}")
    if found is None:
        raise ConfigError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    return found


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one training step, and the step's cost. ``other`` holds the batch and
    XLA's copies of the parameters around the layer loops."""

    mesh: tuple[int, int, int]  # (data, fsdp, tensor)
    parameters: int
    optimizer_state: int
    gradients: int
    activations: int
    other: int
    flops_per_step: float  # model FLOPs of the whole step (all devices), lmx.model.flops "executed" (as MFU)
    attention: str  # the implementation the estimate assumes

    @property
    def devices(self) -> int:
        return math.prod(self.mesh)

    @property
    def total(self) -> int:
        return self.parameters + self.optimizer_state + self.gradients + self.activations + self.other

    def step_seconds(self, peak_flops_per_device: float, mfu: float) -> float:
        """The step's time if the devices together reach `mfu` of their peak FLOP/s."""
        return self.flops_per_step / (self.devices * peak_flops_per_device * mfu)


def resolve_mesh(cfg: MeshConfig, devices: int | None = None) -> tuple[int, int, int]:
    """The mesh's sizes, a -1 filled from `devices` (required then)."""
    if -1 in cfg.shape and devices is None:
        raise ConfigError(f"mesh {cfg.shape} has a -1 size: give the number of devices to plan for")
    return resolve_mesh_shape(cfg, devices if devices is not None else math.prod(cfg.shape))


_SHAPES: dict[Any, tuple[Any, Any]] = {}


def boxed_state_shapes(cfg: Config) -> tuple[Any, Any]:
    """``(params, opt_state)`` as abstract values, parameters boxed with their logical axes
    (remembered per model and optimizer: a sweep's runs share a few shapes)."""
    key = (cfg.model, cfg.optim, cfg.objective, cfg.data.seq_len)
    if key not in _SHAPES:
        _SHAPES[key] = _state_shapes(cfg)
    return _SHAPES[key]


def _state_shapes(cfg: Config) -> tuple[Any, Any]:
    from lmx.objectives.registry import objective_of
    from lmx.train.optim import make_optimizer, make_schedule

    model = objective_of(cfg).make_model(cfg)
    optimizer = make_optimizer(cfg.optim, make_schedule(cfg.optim, cfg.train.steps))

    def init() -> tuple[Any, Any]:
        params = model.init(jax.random.key(0), jnp.zeros((1, cfg.data.seq_len), jnp.int32))["params"]
        return params, optimizer.init(params)

    return jax.eval_shape(init)


def sharded_bytes(tree: Any, mesh: AbstractMesh, rules: Sequence) -> int:
    """Bytes of one device's shards of a tree of abstract values, boxed ones split by their axes."""
    total = 0
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nn.Partitioned)):
        value, names = (leaf.value, leaf.names) if isinstance(leaf, nn.Partitioned) else (leaf, None)
        shape = list(value.shape)
        if names is not None:
            for i, axes in enumerate(mesh_axes_for(names, shape, mesh, rules)):
                for axis in (axes,) if isinstance(axes, str) else axes or ():
                    shape[i] //= mesh.shape[axis]
        total += math.prod(shape) * jnp.dtype(value.dtype).itemsize
    return total


def split(mesh: AbstractMesh, rules: Sequence, logical: str, size: int) -> int:
    """How many ways `size` along logical axis `logical` is split (as `mesh_axes_for` splits it)."""
    axes = mesh_axes_for((logical,), (size,), mesh, rules)
    entry = axes[0] if len(axes) else None
    names = (entry,) if isinstance(entry, str) else entry or ()
    return math.prod(mesh.shape[a] for a in names)


@dataclasses.dataclass(frozen=True)
class _Widths:
    """Bytes per device of one tensor of each kind the step keeps, for one micro-batch."""

    stream: int  # [B, L, D] residual stream
    hidden: int  # [B, L, F] MLP hidden
    q: int  # [B, L, H, E]
    kv: int  # [B, L, K, E]
    scores: int  # [B, H, L, S] float32 (reference attention)
    lse: int  # [B, H, L] float32 (chunked attention's log-sum-exp)
    logits: int  # [B, L, V] float32
    table: int  # the embedding table gathered for the logits, [D, V], when it is split over fsdp


def _widths(cfg: Config, mesh: AbstractMesh, platform: str) -> _Widths:
    m, rules = cfg.model, cfg.mesh.rules
    rows_data = cfg.train.batch_size // cfg.train.micro_batches // mesh.shape["data"]
    inner_rules = tuple((k, tuple(a for a in v if a != "data")) for k, v in rules_table(rules).items())
    rows = rows_data // split(mesh, inner_rules, "batch", rows_data)
    fsdp_split = split(mesh, rules, "embed", m.d_model) > 1
    # Scanned layers over fsdp: the partitioner follows the fsdp-split weights into a contraction
    # split, leaving the MLP hidden and the logits whole over fsdp (every data shard's rows on each
    # of its devices); unrolled layers split them by batch as the rest.
    rows_whole = rows_data if m.scan_layers else rows
    # XLA's CPU backend computes 16-bit floats in float32, and keeps them so.
    c = 4 if platform == "cpu" else jnp.dtype(m.dtype).itemsize
    L, E = cfg.data.seq_len, m.head_dim
    heads = m.n_heads // split(mesh, rules, "heads", m.n_heads)
    return _Widths(
        stream=rows_data * L * (m.d_model // split(mesh, rules, "embed", m.d_model)) * c,
        hidden=rows_whole * L * (m.d_ff // split(mesh, rules, "mlp", m.d_ff)) * c,
        q=rows * L * heads * E * c,
        kv=rows * L * (m.n_kv_heads // split(mesh, rules, "kv_heads", m.n_kv_heads)) * E * c,
        scores=rows * heads * L * L * F32,
        lse=rows * heads * L * F32,
        logits=rows_whole * L * (m.vocab_size // split(mesh, rules, "vocab", m.vocab_size)) * F32,
        table=m.d_model * (m.vocab_size // split(mesh, rules, "vocab", m.vocab_size)) * c if fsdp_split else 0,
    )


def activation_bytes(cfg: Config, mesh: AbstractMesh, attention: str, platform: str) -> int:
    """Peak activation bytes per device: every layer's residuals, plus the largest working set of
    one layer or of the logits, plus attention's masks (broadcast once, live through the step)."""
    m, w = cfg.model, _widths(cfg, mesh, platform)
    n_hidden = 6  # MLP-wide residuals per layer, swiglu's as gelu's (measured)
    recompute = 8 if m.mlp == "swiglu" else 5  # MLP-wide buffers of one layer recomputed, with gradients
    # cuDNN's flash attention (dot_product on a GPU in 16 bits) keeps its blocks on chip.
    # Splash (TPU's Pallas kernel) saves the same; counted with chunked's block, as it runs off TPU.
    if attention in ("chunked", "splash") or (attention == "dot_product" and platform == "gpu" and _half(cfg)):
        block = m.attention_block if attention in ("chunked", "splash") else 0  # keys padded to whole blocks
        attn_saved = w.q + 2 * w.lse  # the output, the log-sum-exp (and the running max)
        attn_work = 4 * block * w.lse  # one key block's logits and probabilities, forward and back
        masks = 0
    else:  # reference, or dot_product as XLA's own einsums, which keep the same
        attn_saved = attn_work = 2 * w.scores  # logits and probabilities
        masks = 2 * w.scores + w.scores // F32  # where(mask, logits, min): two constants, the mask
    all_saved = n_hidden * w.hidden + 6 * w.stream + 2 * w.q + 2 * w.kv + attn_saved
    logits = 2 * w.logits + w.table  # the logits and their exponentials (or the all-reduce's halves)
    # Rematerialised layers, the largest of: one layer's attention forward; the logits, with room
    # that XLA's heap keeps beside them for the backward's first layer (coefficients fitted to
    # memory_analysis, benchmarks/memory_plan.py); one layer's MLP recomputed with its gradients.
    remat_work = max(attn_work + w.hidden, logits + w.hidden + 4 * w.stream, recompute * w.hidden)
    remat = m.remat
    if not m.scan_layers and platform == "cpu":
        remat = "none"  # XLA's CPU scheduler recomputes unrolled layers early: remat saves nothing
    if remat == "none":
        saved, work = all_saved, max(w.hidden, logits)
    elif remat == "full":
        saved = w.stream  # the block input only
        work = remat_work
    else:
        # save_dots: the block input and the attention projections' outputs (q, k, v, out). On
        # CPU the MLP's matmuls go through lmx.model.matmul's custom gradient, which the policy
        # does not see as dots: they are recomputed. Elsewhere they are plain dots, saved too.
        saved = 2 * w.stream + w.q + 2 * w.kv
        if not ordered_weight_gradient(platform):
            saved += (2 if m.mlp == "swiglu" else 1) * w.hidden + w.stream  # up (and gate), down
        work = remat_work
    return m.n_layers * saved + work + masks


def _half(cfg: Config) -> bool:
    return jnp.dtype(cfg.model.dtype).itemsize == 2


def estimate_memory(cfg: Config, devices: int | None = None, platform: str = "gpu") -> MemoryEstimate:
    """Bytes per device of `cfg`'s training step on its mesh (a -1 size filled from `devices`),
    with ``model.attention="auto"`` resolved as on `platform`. Compiles nothing."""
    shape = resolve_mesh(cfg.mesh, devices)
    mesh = AbstractMesh(shape, cfg.mesh.AXES)
    data = shape[0]
    if cfg.train.batch_size % (data * cfg.train.micro_batches):
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size}: must be divisible by mesh data size ({data}) x "
            f"train.micro_batches ({cfg.train.micro_batches})"
        )
    params, opt_state = boxed_state_shapes(cfg)
    rules = cfg.mesh.rules
    param_bytes = sharded_bytes(params, mesh, rules)
    attention = resolve_attention(cfg.model.attention, platform)
    activations = activation_bytes(cfg, mesh, attention, platform)
    batch = 4 * (cfg.train.batch_size // data) * cfg.data.seq_len * 4  # inputs, targets, segments, positions
    copies = PARAM_COPIES[cfg.model.scan_layers] * param_bytes
    # Micro-batches: the embedding's gradient is a scatter-add into the whole table, and its running
    # sum and one micro-batch's stay whole; XLA accumulates the other gradients in place.
    table = cfg.model.vocab_size * cfg.model.d_model * jnp.dtype(cfg.model.param_dtype).itemsize
    accumulated = 2 * table if cfg.train.micro_batches > 1 else 0
    return MemoryEstimate(
        mesh=shape,
        parameters=param_bytes,
        optimizer_state=sharded_bytes(opt_state, mesh, rules),
        gradients=param_bytes + accumulated,
        activations=activations,
        other=batch + int(copies),
        flops_per_step=flops_per_token(cfg.model, cfg.data.seq_len, "executed") * tokens_per_step(cfg),
        attention=attention,
    )


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """``"80GiB"``, ``"80 GB"``, ``"1.5TiB"``, ``"1024"`` -> bytes (GB = 10^9, GiB = 2^30)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS:
        raise ConfigError(f"device memory {text!r}: expected a size such as 80GiB, 40GB or 16384MiB")
    value = float(match.group(1)) * _UNITS[unit]
    if value <= 0:
        raise ConfigError(f"device memory {text!r}: must be positive")
    return int(value)


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"
