"""Online RL from feedback: the policy samples G completions per prompt, rewards score them, and the
clipped policy-gradient loss of the chosen algorithm updates it (`lmx.objectives.rl_losses` holds
the formulas, `lmx.objectives.rl_task` the rollouts).

Algorithms are named combinations of an advantage estimator, a loss aggregation and a KL penalty;
every part is also a config field of its own, which overrides the algorithm's default:

=========  ==========  ==============  =====  ======  ========  =========
algorithm  advantage   aggregation     beta   KL est  KL in     eps_high
=========  ==========  ==============  =====  ======  ========  =========
grpo       grpo        sequence_mean   0.04   k3      loss      eps_low
dr_grpo    dr_grpo     constant        0      k3      loss      eps_low
dapo       grpo        token_mean      0      k3      loss      0.28
rloo       rloo        constant        0.05   k1      reward    eps_low
ppo        gae         token_mean      0.02   k1      reward    eps_low
=========  ==========  ==============  =====  ======  ========  =========

GRPO: Shao et al. 2024 (DeepSeekMath, section 4.1 and 4.2: beta 0.04, eps 0.2, k3 in the loss).
Dr. GRPO: Liu et al. 2025 (no std, no length normalisation: token sums over a constant; no KL).
DAPO: Yu et al. 2025 (clip-higher eps_high 0.28, token-level mean, no KL; the soft overlong
penalty is ``overlong_cache``). RLOO: Ahmadian et al. 2024 (leave-one-out baseline, REINFORCE of
the sequence log-prob, i.e. token sums, here over the constant max length; the KL as a
sequence-level penalty in the reward; its beta 0.05 is TRL's RLOO default, the paper sweeps it).
PPO: Ouyang et al. 2022 (InstructGPT; beta 0.02, appendix C) after Ziegler et al. 2019: a value head
on the policy's layers (`lmx.model.PolicyWithValue`) trained with a clipped value loss, per-token
rewards -beta x KL with the score added at the last token, GAE (gamma 1, lambda 0.95) and whitened
advantages; ``samples`` may be 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from lmx.config import Config
from lmx.config.sections import DATACLASS, fail
from lmx.model import PolicyWithValue
from lmx.objectives.base import Array, LossFn, Objective, Prepare, Reference, language_model
from lmx.objectives.chat import ChatObjectiveConfig
from lmx.objectives.losses import target_logits
from lmx.objectives.registry import register
from lmx.objectives.rewards import parse_reward_specs
from lmx.objectives.rl_losses import (
    aggregate_sums,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    group_advantages,
    kl_estimate,
    ppo_token_rewards,
    whiten,
)
from lmx.objectives.rl_task import RLTask
from lmx.parallel.mapping import Batch, sharded_rows

Algorithm = Literal["grpo", "dr_grpo", "dapo", "rloo", "ppo"]

# algorithm -> (advantage estimator, aggregation, beta, KL estimator, KL placement, eps_high or None
# for eps_low): the table of the module docstring.
ALGORITHMS: dict[str, tuple[str, str, float, str, str, float | None]] = {
    "grpo": ("grpo", "sequence_mean", 0.04, "k3", "loss", None),
    "dr_grpo": ("dr_grpo", "constant", 0.0, "k3", "loss", None),
    "dapo": ("grpo", "token_mean", 0.0, "k3", "loss", 0.28),
    "rloo": ("rloo", "constant", 0.05, "k1", "reward", None),
    "ppo": ("gae", "token_mean", 0.02, "k1", "reward", None),
}


@dataclasses.dataclass(**DATACLASS)
class RLConfig(ChatObjectiveConfig):
    """Online RL on prompt files (lmx.data.prompts); None fields take the algorithm's default."""

    KIND: ClassVar[str] = "rl"
    algorithm: Algorithm = "grpo"
    rewards: str = "exact_match"  # comma-separated NAME or NAME=WEIGHT; NAME may be path/to/file.py:function
    samples: int = 8  # G, completions per prompt: train.batch_size = prompts per step x G
    max_new_tokens: int = 16
    temperature: float = 1.0  # the policy optimised is softmax(logits / temperature), the one sampled
    top_p: float = 1.0
    updates: int = 1  # mu, optimizer updates per rollout batch (old log-probs kept for the ratio)
    eps_low: float = 0.2
    eps_high: float | None = None
    beta: float | None = None  # KL(pi || pi_ref) coefficient; the reference is kept only when > 0
    kl_estimator: Literal["k1", "k3"] | None = None
    kl_in: Literal["loss", "reward"] | None = None
    aggregation: Literal["sequence_mean", "token_mean", "constant"] | None = None
    overlong_cache: int = 0  # DAPO's soft overlong penalty over the last N tokens (0: off)
    gamma: float = 1.0  # ppo: GAE discount
    lam: float = 0.95  # ppo: GAE lambda
    value_clip: float = 0.2  # ppo: the value loss's clip range around the old values
    value_coef: float = 0.1  # ppo: the value loss's weight in the loss (TRL's PPO default)
    eval_samples: int = 0  # also sample this many completions per held-out prompt (pass@k); 0: greedy only

    def __post_init__(self) -> None:
        ChatObjectiveConfig.__post_init__(self)
        if self.samples < 1 or (self.samples < 2 and self.advantage == "rloo"):
            fail("objective", "samples", self.samples, "must be >= 1 (>= 2 for rloo)")
        if self.max_new_tokens < 1:
            fail("objective", "max_new_tokens", self.max_new_tokens, "must be >= 1")
        if not self.temperature > 0:
            fail("objective", "temperature", self.temperature, "must be > 0 (the policy is sampled)")
        if not 0 < self.top_p <= 1:
            fail("objective", "top_p", self.top_p, "must be in (0, 1]")
        if self.updates < 1:
            fail("objective", "updates", self.updates, "must be >= 1")
        if not 0 <= self.eps_low < 1:
            fail("objective", "eps_low", self.eps_low, "must be in [0, 1)")
        if self.eps_high is not None and self.eps_high < 0:
            fail("objective", "eps_high", self.eps_high, "must be >= 0")
        if self.beta is not None and self.beta < 0:
            fail("objective", "beta", self.beta, "must be >= 0")
        if not 0 <= self.overlong_cache < self.max_new_tokens:
            fail("objective", "overlong_cache", self.overlong_cache, "must be in [0, max_new_tokens)")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            fail(
                "objective",
                "gamma" if not 0 <= self.gamma <= 1 else "lam",
                (self.gamma, self.lam),
                "must lie in [0, 1]",
            )
        if self.value_clip <= 0 or self.value_coef < 0:
            fail("objective", "value_clip", (self.value_clip, self.value_coef), "value_clip > 0, value_coef >= 0")
        if self.eval_samples < 0:
            fail("objective", "eval_samples", self.eval_samples, "must be >= 0")
        parse_reward_specs(self.rewards)  # a malformed list fails at load time
        if self.hyper().beta > 0 and not self.init_from:
            fail("objective", "init_from", self.init_from, "beta > 0 needs a reference model: the initial policy")

    @property
    def advantage(self) -> str:
        return ALGORITHMS[self.algorithm][0]

    def hyper(self) -> RLHyper:
        advantage, aggregation, beta, kl_estimator, kl_in, eps_high = ALGORITHMS[self.algorithm]
        pick = lambda value, default: default if value is None else value
        return RLHyper(
            advantage=advantage,
            aggregation=pick(self.aggregation, aggregation),
            beta=pick(self.beta, beta),
            kl_estimator=pick(self.kl_estimator, kl_estimator),
            kl_in=pick(self.kl_in, kl_in),
            eps_low=self.eps_low,
            eps_high=pick(self.eps_high, pick(eps_high, self.eps_low)),
            samples=self.samples,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            updates=self.updates,
            gamma=self.gamma,
            lam=self.lam,
            value_clip=self.value_clip,
            value_coef=self.value_coef,
        )


@dataclasses.dataclass(frozen=True)
class RLHyper:
    """The resolved settings of an RL run's step (`RLConfig.hyper`)."""

    advantage: str
    aggregation: str
    beta: float
    kl_estimator: str
    kl_in: str
    eps_low: float
    eps_high: float
    samples: int
    max_new_tokens: int
    temperature: float
    updates: int
    gamma: float = 1.0
    lam: float = 0.95
    value_clip: float = 0.2
    value_coef: float = 0.1


def policy_logps(model: nn.Module, params: Any, batch: Batch, temperature: float) -> tuple[Array, Array, Array | None]:
    """Log-probabilities of the batch's targets under softmax(logits / temperature), the entropy
    of that distribution at every position, and PPO's values (None for a model without a value
    head): ``[B, L]`` each."""
    args = (batch["inputs"], batch["segment_ids"], batch["positions"])
    values_BxL = None
    if isinstance(model, PolicyWithValue):
        logits_BxLxV, values_BxL = model.apply({"params": params}, *args, method=PolicyWithValue.logits_and_values)
    else:
        logits_BxLxV = model.apply({"params": params}, *args)
    logp_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32) / temperature, axis=-1)
    logp_BxL = target_logits(logp_BxLxV, batch["targets"])  # not take_along_axis: a sharded vocabulary
    entropy_BxL = -jnp.sum(jnp.exp(logp_BxLxV) * logp_BxLxV, axis=-1)
    return logp_BxL, entropy_BxL, values_BxL


def rl_loss(model: nn.Module, hyper: RLHyper) -> LossFn:
    """The clipped policy-gradient loss (plus beta x KL per token when the KL is in the loss; plus
    value_coef x the clipped value loss for PPO), aggregated by ``hyper.aggregation`` over the
    completion tokens (``loss_mask``).

    With one update per batch the old log-probs are the current ones, stopped: the ratio is exactly
    1 and the gradient is the plain policy gradient. Otherwise they are the batch's ``old_logps``
    (`rl_prepare`). Stats (token means, whatever the aggregation): clip_fraction, and value_loss.
    """

    def loss_fn(params: Any, batch: Batch) -> tuple[Array, dict[str, Array]]:
        logp_BxL, _, values_BxL = policy_logps(model, params, batch, hyper.temperature)
        mask_BxL = batch["loss_mask"].astype(jnp.float32)
        old_BxL = jax.lax.stop_gradient(logp_BxL) if hyper.updates == 1 else batch["old_logps"]
        per_token_BxL, _, clipped_BxL = clipped_policy_loss(
            logp_BxL, old_BxL, batch["advantages"], hyper.eps_low, hyper.eps_high
        )
        if hyper.beta > 0 and hyper.kl_in == "loss":
            per_token_BxL = per_token_BxL + hyper.beta * kl_estimate(logp_BxL, batch["ref_logps"], hyper.kl_estimator)
        # The step divides every stat by the global weight; token_scale (global weight / global
        # completion tokens, the same in every row) turns a token sum into a token mean.
        scaled_BxL = mask_BxL * batch["token_scale"][:, None]
        stats = {"clip_fraction": jnp.sum(clipped_BxL * scaled_BxL)}
        if values_BxL is not None:
            value_loss_BxL = clipped_value_loss(values_BxL, batch["old_values"], batch["returns"], hyper.value_clip)
            per_token_BxL = per_token_BxL + hyper.value_coef * value_loss_BxL
            stats["value_loss"] = jnp.sum(value_loss_BxL * scaled_BxL)
        loss, stats["weight"] = aggregate_sums(per_token_BxL, mask_BxL, hyper.aggregation, hyper.max_new_tokens)
        return loss, stats

    return loss_fn


def rl_prepare(model: nn.Module, hyper: RLHyper, mesh: Mesh, rules: Any) -> Prepare:
    """Once per step, before the updates: the log-probs of the parameters that sampled (old), the
    reference's (when beta > 0), the advantages (of each group, or PPO's GAE from the old values),
    and the step's diagnostics: entropy, KL to the reference, the largest gap between the
    sampler's log-probs and this forward's (the same parameters: float error only) and, for PPO,
    the value head's explained variance."""
    forward = sharded_rows(lambda params, batch: policy_logps(model, params, batch, hyper.temperature), mesh, rules)

    def prepare(params: Any, batch: Batch, frozen: Any) -> tuple[dict[str, Array], dict[str, Array]]:
        mask_BxL = batch["loss_mask"].astype(jnp.float32)
        tokens = jnp.maximum(jnp.sum(mask_BxL), 1.0)
        old_BxL, entropy_BxL, values_BxL = jax.lax.stop_gradient(forward(params, batch))
        out = dict(batch, old_logps=old_BxL)
        metrics = {
            "entropy": jnp.sum(entropy_BxL * mask_BxL) / tokens,
            "sampler_logp_gap": jnp.max(jnp.abs(old_BxL - batch["sampler_logps"]) * mask_BxL),
        }
        rewards_B, kl_BxL = batch["rewards"], jnp.zeros_like(old_BxL)
        if frozen is not None:
            ref_BxL, _, _ = jax.lax.stop_gradient(forward(frozen, batch))
            kl_BxL = kl_estimate(old_BxL, ref_BxL, hyper.kl_estimator) * mask_BxL
            metrics["kl"] = jnp.sum(kl_BxL) / tokens
            out["ref_logps"] = ref_BxL
        in_reward = hyper.beta if hyper.kl_in == "reward" else 0.0
        rows = rewards_B.shape[0]
        if hyper.advantage == "gae":  # PPO: per-token rewards, the KL penalty on every token
            token_rewards_BxL = ppo_token_rewards(rewards_B, kl_BxL, mask_BxL, in_reward)
            advantages_BxL, returns_BxL = gae(token_rewards_BxL, values_BxL, mask_BxL, hyper.gamma, hyper.lam)
            out["advantages"] = whiten(advantages_BxL, mask_BxL)
            out["returns"], out["old_values"] = returns_BxL, values_BxL
            metrics["explained_variance"] = explained_variance(values_BxL, returns_BxL, mask_BxL)
            metrics["value_mean"] = jnp.sum(values_BxL * mask_BxL) / tokens
        else:  # a sequence-level KL penalty in the reward (RLOO), then group advantages
            rewards_B = rewards_B - in_reward * jnp.sum(kl_BxL, axis=1)
            advantages_PxG = group_advantages(rewards_B.reshape(rows // hyper.samples, hyper.samples), hyper.advantage)
            out["advantages"] = advantages_PxG.reshape(rows, 1) * mask_BxL
        weight = {"sequence_mean": rows, "token_mean": tokens, "constant": rows * hyper.max_new_tokens}
        out["token_scale"] = jnp.full((rows,), weight[hyper.aggregation] / tokens, jnp.float32)
        return out, metrics

    return prepare


def describe_rl_metrics(m: Mapping[str, float]) -> str:
    if not m:
        return "no held-out prompts (objective.eval_files)"
    parts = [f"held-out reward {m['reward']:.3f} (greedy)"]
    parts += [f"{k[len('reward/') :]} {v:.3f}" for k, v in sorted(m.items()) if k.startswith("reward/")]
    if "pass_at_k" in m:
        parts.append(f"pass@{int(m['samples'])} {m['pass_at_k']:.3f}")
    return ", ".join(parts) + f" over {int(m['prompts'])} prompts"


def rl_model(cfg: Config) -> nn.Module:
    """PPO's policy carries a value head; the other algorithms train the plain language model."""
    return PolicyWithValue(cfg.model) if cfg.objective.algorithm == "ppo" else language_model(cfg)


def rl_reference(cfg: Config) -> Reference:
    return "in_step" if cfg.objective.hyper().beta > 0 else "none"


RL = register(
    Objective(
        config_class=RLConfig,
        make_loss=lambda model, cfg: rl_loss(model, cfg.objective.hyper()),
        make_task=lambda cfg, mesh, model, reference, log: RLTask(cfg, mesh, model, RL, log),
        make_model=rl_model,
        describe=describe_rl_metrics,
        reference=rl_reference,
        online=True,
        make_prepare=lambda model, cfg, mesh: rl_prepare(model, cfg.objective.hyper(), mesh, cfg.mesh.rules),
        updates=lambda cfg: cfg.objective.updates,
    )
)
