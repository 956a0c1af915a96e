"""lmx as a library: a research loss plugged into lmx's pmap-style step, model, data and trainer.

The loss here is label-smoothed next-token cross-entropy (Szegedy et al., 2016, "Rethinking the
Inception Architecture", section 7): the target distribution puts 1 - eps on the true token and
eps spread uniformly over the vocabulary. Per token that is

    (1 - eps) * (logZ - z_target) + eps * (logZ - mean_v z_v)

A loss for lmx is a pure function ``(params, batch) -> (loss_sum, stats_sums)``: sums, not means,
with ``stats["weight"]`` the number of tokens the sum covers. The step divides by the weight summed
over every device and micro-batch, so the loss means the same on 1 device and on any mesh. Every
other stat is logged as a mean beside the loss (here the plain cross-entropy, to compare with
ordinary runs).

Run it:  python docs/examples/custom_loss.py configs/tiny.py runs/tiny-smoothed --set train.steps=100
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lmx.config import load_config
from lmx.objectives.base import LossFn
from lmx.objectives.losses import target_logits
from lmx.parallel.mapping import Batch
from lmx.train.loop import RunResult, train
from lmx.train.setup import TrainSetup


def label_smoothed_loss(setup: TrainSetup, smoothing: float) -> LossFn:
    """Label-smoothed cross-entropy over lmx's transformer; batches as lmx's pretraining pipeline."""

    def loss_fn(params: Any, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits_BxLxV = setup.model.apply(
            {"params": params}, batch["inputs"], batch["segment_ids"], batch["positions"]
        ).astype(jnp.float32)
        weights_BxL = batch["loss_mask"]
        log_z_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
        ce_BxL = log_z_BxL - target_logits(logits_BxLxV, batch["targets"])
        uniform_BxL = log_z_BxL - jnp.mean(logits_BxLxV, axis=-1)
        loss_BxL = (1.0 - smoothing) * ce_BxL + smoothing * uniform_BxL
        stats = {"ce": jnp.sum(ce_BxL * weights_BxL), "weight": jnp.sum(weights_BxL)}
        return jnp.sum(loss_BxL * weights_BxL), stats

    return loss_fn


def main(argv: Sequence[str] | None = None) -> RunResult:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("run_dir")
    parser.add_argument("--smoothing", type=float, default=0.1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    return train(cfg, args.run_dir, make_loss=lambda setup: label_smoothed_loss(setup, args.smoothing))


if __name__ == "__main__":
    result = main()
    print(f"{result.status} at step {result.step}")
