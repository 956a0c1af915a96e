"""A custom objective registered from outside lmx: pretraining plus an unlikelihood term.

Token-level unlikelihood (Welleck et al. 2019, "Neural Text Generation with Unlikelihood
Training", eq. 4) lowers the probability of negative candidates C_t beside the usual likelihood:

    loss_t = -log p(x_t | x_<t) - alpha * sum_{c in C_t} log(1 - p(c | x_<t))

Here C_t holds one candidate, the token just read (x_{t-1}), unless it is the true next token:
the term discourages the immediate repetition that small language models love.

An objective is one `lmx.objectives.Objective` record: its config section (a dataclass with its own
fields and a KIND), its pure loss (sums plus ``stats["weight"]``), its data and evaluation (here
pretraining's task: the prepared corpus, bits per byte), registered with `register`. After the
import, ``objective.kind="unlikelihood"`` parses in configs, overrides and config.json like a
built-in kind. Anything that reads such a run back (``lmx eval RUN``) needs this module imported
too: its config names a kind only this module registers.

Run it:  python docs/examples/unlikelihood.py configs/tiny.py runs/tiny-ul --alpha 0.5 --set train.steps=100
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.config import Config, ObjectiveConfig, load_config
from lmx.errors import ConfigError
from lmx.objectives import LossFn, Objective, register
from lmx.objectives.losses import cross_entropy_sums, target_logits
from lmx.objectives.pretrain import PretrainTask, describe_lm_metrics
from lmx.parallel.mapping import Batch
from lmx.train.loop import RunResult, train


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class UnlikelihoodConfig(ObjectiveConfig):
    KIND: ClassVar[str] = "unlikelihood"
    alpha: float = 0.5  # weight of the unlikelihood term; 0 is plain pretraining

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ConfigError(f"objective.alpha={self.alpha!r}: must be >= 0")


def unlikelihood_loss(model: nn.Module, alpha: float) -> LossFn:
    """Cross-entropy plus alpha x the unlikelihood of repeating the token just read. Stats: the
    plain cross-entropy (``ce``) and the unlikelihood term (``unlikelihood``), both as sums."""

    def loss_fn(params: Any, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits_BxLxV = model.apply(
            {"params": params}, batch["inputs"], batch["segment_ids"], batch["positions"]
        ).astype(jnp.float32)
        weights_BxL = (batch["segment_ids"] > 0).astype(jnp.float32)
        ce, stats = cross_entropy_sums(logits_BxLxV, batch["targets"], weights_BxL)
        log_z_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
        logp_repeat_BxL = target_logits(logits_BxLxV, batch["inputs"]) - log_z_BxL
        # log(1 - p) with p = exp(logp) < 1; -expm1 keeps it accurate near p = 1.
        ul_BxL = -jnp.log(jnp.maximum(-jnp.expm1(logp_repeat_BxL), 1e-6))
        negative_BxL = weights_BxL * (batch["inputs"] != batch["targets"])
        ul = jnp.sum(ul_BxL * negative_BxL)
        return ce + alpha * ul, {"ce": ce, "unlikelihood": ul, "weight": stats["weight"]}

    return loss_fn


UNLIKELIHOOD = register(
    Objective(
        config_class=UnlikelihoodConfig,
        make_loss=lambda model, cfg: unlikelihood_loss(model, cfg.objective.alpha),
        make_task=lambda cfg, mesh, model, reference, log: PretrainTask(cfg, mesh, model, log),
        describe=describe_lm_metrics,
    )
)


def main(argv: Sequence[str] | None = None) -> RunResult:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a pretraining config file")
    parser.add_argument("run_dir")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg: Config = load_config(args.config, ["objective.kind=unlikelihood", f"objective.alpha={args.alpha}", *args.set])
    return train(cfg, args.run_dir)


if __name__ == "__main__":
    result = main()
    print(f"{result.status} at step {result.step}")
