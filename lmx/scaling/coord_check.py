"""Coordinate check (Yang et al. 2022, Tensor Programs V, section 7 / the `mup` package's coord check):
train a config at several widths (and depths) a few Adam steps on one fixed batch, and watch the mean
absolute value of each layer's output. Under a parametrization that transfers, these stay the same
size as the model widens; under ``sp`` they grow with width, from its fixed init std at step 0
and much faster once Adam's updates, of a size independent of width, add up over a wider fan-in.

Each shape keeps the config's head width and scales d_model, n_heads (and n_kv_heads, in the same
ratio) and d_ff together; the base shape is the config's ``model.base_*`` or else the narrowest width
and shallowest depth checked. The optimizer is plain Adam on the parametrization's per-parameter
factors: constant learning rate from step 0, no weight decay, no clipping. The batch is the same
for every shape (`fixed_batch`); each seed is another initialisation. At widths this small the seed
means are noisy: at 32 vs 128, three steps, 3e-3, the worst ratio of mup's seed means moved between
0.80 and 1.26 with 3 seeds and stayed within 0.95 .. 1.07 with 16 to 24 (2026-12-03).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmx.config import Config
from lmx.errors import ConfigError
from lmx.model.layers import Attention, Embedding, Mlp
from lmx.model.parametrization import parameter_factors
from lmx.model.transformer import Block, Transformer
from lmx.train.optim import make_optimizer, make_schedule

RATIO = 4  # shapes this far apart are compared
TOLERANCE = 1.2  # the wide / narrow ratio of every layer must lie in [1 / TOLERANCE, TOLERANCE]
PARAMETRIZATIONS = ("sp", "mup", "completep")


@dataclasses.dataclass(frozen=True)
class Shape:
    width: int
    depth: int


def shape_config(cfg: Config, parametrization: str, shape: Shape, base: Shape) -> Config:
    """`cfg` at `shape`: widths scaled together, head width fixed, layers unrolled (one output each)."""
    m = cfg.model
    head_dim = m.head_dim
    if shape.width % head_dim:
        raise ConfigError(f"--widths {shape.width}: not a multiple of the config's head width {head_dim}")
    n_heads = shape.width // head_dim
    if n_heads * m.n_kv_heads % m.n_heads:
        raise ConfigError(f"--widths {shape.width}: {n_heads} heads cannot keep model.n_kv_heads / model.n_heads")
    return cfg.replace(
        **{
            "model.parametrization": parametrization,
            "model.zero_readout": m.zero_readout and parametrization != "sp",  # not an sp option
            "model.d_model": shape.width,
            "model.n_heads": n_heads,
            "model.n_kv_heads": n_heads * m.n_kv_heads // m.n_heads,
            "model.head_size": head_dim,
            "model.d_ff": max(1, round(m.d_ff * shape.width / m.d_model)),
            "model.n_layers": shape.depth,
            "model.base_d_model": m.base_d_model or base.width,
            "model.base_head_dim": m.base_head_dim or head_dim,
            "model.base_n_layers": m.base_n_layers or base.depth,
            "model.scan_layers": False,
            "model.remat": "none",
            "optim.schedule": "constant",
            "optim.warmup_steps": 0,
            "optim.weight_decay": 0.0,
            "optim.grad_clip": 0.0,
        }
    )


def _captured(module: nn.Module, method: str) -> bool:
    return method == "__call__" and isinstance(module, Embedding | Attention | Mlp | Block | Transformer)


def _layer_name(path: tuple[Any, ...]) -> str:
    keys = [str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey) and p.key != "__call__"]
    if not keys:
        return "logits"
    if keys == ["embed"]:
        return "embedding"
    return "/".join(keys) if len(keys) > 1 else f"{keys[0]}/residual"


def _mean_abs(intermediates: Any) -> dict[str, jax.Array]:
    """Mean |output| of each captured module (a block's output is the residual stream after it)."""
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(intermediates, is_leaf=lambda x: isinstance(x, tuple))[0]:
        first = value[0]
        first = first[0] if isinstance(first, tuple) else first  # attention and blocks return (x, kv)
        out[_layer_name(path)] = jnp.mean(jnp.abs(first.astype(jnp.float32)))
    return out


def fixed_batch(cfg: Config, distinct: int) -> dict[str, np.ndarray]:
    """Rows counting through `distinct` tokens (row r starts at r): the next token is predictable and
    the gradients are of low rank, as on real text, so the check sees the infinite-width behaviour
    at small widths. With as many distinct tokens as the vocabulary and random targets, most of each
    update is noise uncorrelated with the activations, shrinking as 1/sqrt(width) under mup."""
    b, length = cfg.train.batch_size, cfg.data.seq_len
    stream = (np.arange(b)[:, None] + np.arange(length + 1)[None, :]) % min(distinct, cfg.model.vocab_size)
    stream = stream.astype(np.int32)
    return {"inputs": stream[:, :-1], "targets": stream[:, 1:]}


def run_shape(cfg: Config, steps: int, seeds: Iterable[int], distinct: int = 4) -> list[dict[str, float]]:
    """Per seed, per step: each layer's mean |output| in the forward pass before that step's update."""
    model = Transformer(cfg.model)
    optimizer = make_optimizer(cfg.optim, make_schedule(cfg.optim, steps), parameter_factors(cfg.model, model))
    batch = {k: jnp.asarray(v) for k, v in fixed_batch(cfg, distinct).items()}

    def loss_fn(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits, state = model.apply(
            {"params": params}, batch["inputs"], capture_intermediates=_captured, mutable=["intermediates"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()
        return loss, _mean_abs(state["intermediates"])

    @jax.jit
    def step(params: Any, opt_state: Any) -> tuple[Any, Any, jax.Array, dict[str, jax.Array]]:
        (loss, acts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acts

    init = jax.jit(lambda key: nn.unbox(model.init(key, batch["inputs"])["params"]))
    records = []
    for seed in seeds:
        params = init(jax.random.key(seed))
        opt_state = optimizer.init(params)
        for t in range(steps):
            params, opt_state, loss, acts = step(params, opt_state)
            records.append({"seed": seed, "step": t, "loss": float(loss), **{k: float(v) for k, v in acts.items()}})
    return records


def coord_check(
    cfg: Config,
    widths: Sequence[int],
    depths: Sequence[int] = (),
    parametrizations: Sequence[str] = ("sp", "mup"),
    steps: int = 5,
    seeds: int = 3,
    distinct: int = 4,
) -> dict[str, Any]:
    """Runs every parametrization x width x depth; returns the records, the seed means and verdicts."""
    depths = list(depths) or [cfg.model.n_layers]
    for p in parametrizations:
        if p not in PARAMETRIZATIONS:
            raise ConfigError(f"--parametrizations {p}: expected one of {', '.join(PARAMETRIZATIONS)}")
    if min(steps, seeds, distinct) < 1:
        raise ConfigError(f"--steps {steps} --seeds {seeds} --tokens {distinct}: each must be positive")
    shapes = [Shape(w, d) for w, d in itertools.product(sorted(set(widths)), sorted(set(depths)))]
    if not _pairs(shapes):
        raise ConfigError(f"--widths {widths} --depths {depths}: no two widths (or depths) {RATIO}x apart to compare")
    base = Shape(min(widths), min(depths))
    results: dict[str, Any] = {"widths": sorted(set(widths)), "depths": sorted(set(depths)), "steps": steps}
    results.update(learning_rate=cfg.optim.learning_rate, seeds=seeds, distinct_tokens=distinct)
    results["runs"] = []
    for p, shape in itertools.product(parametrizations, shapes):
        for record in run_shape(shape_config(cfg, p, shape, base), steps, range(seeds), distinct):
            results["runs"].append({"parametrization": p, "width": shape.width, "depth": shape.depth, **record})
    results["verdicts"] = {p: verdict(results["runs"], p) for p in parametrizations}
    return results


def _pairs(shapes: Sequence[Shape]) -> list[tuple[Shape, Shape]]:
    """Shape pairs (narrow or shallow, wide or deep) RATIO x apart in width or in depth, the other equal."""
    return [
        (a, b)
        for a, b in itertools.permutations(shapes, 2)
        if (a.depth == b.depth and b.width == RATIO * a.width) or (a.width == b.width and b.depth == RATIO * a.depth)
    ]


def seed_means(runs: Sequence[dict[str, Any]], parametrization: str) -> dict[tuple[Shape, int], dict[str, float]]:
    """(shape, step) -> layer -> mean |output| over seeds."""
    groups: dict[tuple[Shape, int], list[dict[str, Any]]] = {}
    for r in runs:
        if r["parametrization"] == parametrization:
            groups.setdefault((Shape(r["width"], r["depth"]), r["step"]), []).append(r)
    skip = {"parametrization", "width", "depth", "seed", "step", "loss"}
    return {
        key: {layer: float(np.mean([r[layer] for r in rs])) for layer in rs[0] if layer not in skip}
        for key, rs in groups.items()
    }


def _counterpart(layer: str, a: Shape, b: Shape) -> str:
    """`layer` of shape `a` in shape `b`: the same layer across widths; across depths the block at the
    same relative depth (block i of L is block (i + 1) x 4 - 1 of 4L, so the last is the last)."""
    if a.depth == b.depth or not layer.startswith("layer_"):
        return layer
    index, rest = layer.removeprefix("layer_").split("/", 1)
    return f"layer_{(int(index) + 1) * (b.depth // a.depth) - 1}/{rest}"


def verdict(runs: Sequence[dict[str, Any]], parametrization: str) -> dict[str, Any]:
    """PASS when every layer's wide / narrow (deep / shallow) ratio lies within [1/1.2, 1.2] at every
    step, for every pair of shapes 4x apart: the criterion of the `mup` package's coordinate-check
    test. Under mup and completep the logits at step 0 are excepted between widths: the readout
    multiplier 1/m makes them shrink as 1/sqrt(m) by design (that test zero-initialises the readout
    instead; here zeros on both sides compare as equal)."""
    means = seed_means(runs, parametrization)
    shapes = sorted({shape for shape, _ in means}, key=dataclasses.astuple)
    steps = sorted({step for _, step in means})
    worst: dict[str, Any] = {"ratio": 1.0}
    failures = []
    for (a, b), t in itertools.product(_pairs(shapes), steps):
        for layer, narrow in means[(a, t)].items():
            wide = means[(b, t)][_counterpart(layer, a, b)]
            if layer == "logits" and t == 0 and parametrization != "sp" and a.depth == b.depth:
                continue
            ratio = 1.0 if narrow == wide else (wide / narrow if narrow > 0 else float("inf"))
            row = {"layer": layer, "step": t, "ratio": ratio}
            row.update({"from": dataclasses.asdict(a), "to": dataclasses.asdict(b)})
            if abs(np.log(ratio)) > abs(np.log(worst["ratio"])):
                worst = row
            if not 1 / TOLERANCE <= ratio <= TOLERANCE:
                failures.append(row)
    return {"pass": not failures, "failures": len(failures), "worst": worst}


def write_results(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """``coord_check.json`` and one plot per parametrization and depth; returns the paths written."""
    from lmx.scaling.plot_coord import plot_coord_check

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "coord_check.json"
    path.write_text(json.dumps(results, indent=1))
    written = [path]
    for p in results["verdicts"]:
        for depth in results["depths"]:
            means = {k: v for k, v in seed_means(results["runs"], p).items() if k[0].depth == depth}
            written.append(
                plot_coord_check(means, p, depth, results["verdicts"][p], out / f"coord_check_{p}_L{depth}.png")
            )
    return written
