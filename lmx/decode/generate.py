"""Text generation with a KV cache: prefill the prompts once, then decode one token per step.

Shapes are static, so the compiled functions are reused: one decoding step per (batch size, cache
length), one prefill per (batch size, prompt bucket, cache length), prompt buckets being powers of
two. Prompts of different lengths share a batch by left-padding: every row then writes the same
cache slot at each step, while RoPE positions count each row's own tokens from 0. The cache is
sharded by the model's logical axes (batch over the data axes, kv heads over tensor), like the
activations of training.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx.config import ModelConfig
from lmx.data.chat import Message, jsonl_records, parse_messages, text_field
from lmx.data.tokenizer import Tokenizer
from lmx.decode.sampling import GREEDY, Sampling, sample
from lmx.errors import DataError
from lmx.model import Transformer, unstack_layers
from lmx.model.layers import KVCache
from lmx.parallel.rules import Rules, activation_rules, mesh_axes_for, shardings_from_boxed

Array = jax.Array
MIN_PREFILL = 16


@dataclasses.dataclass(frozen=True)
class Generation:
    tokens: list[int]  # the new tokens, without the EOS that ended them
    finish_reason: str  # "eos" or "length"


def check_prompts(
    prompts: Sequence[Sequence[int]], max_new_tokens: int, max_len: int, names: Sequence[str] | None = None
) -> None:
    """Raises DataError for an empty prompt or one that leaves no room for `max_new_tokens` within
    `max_len` tokens (the model's context), naming the prompt (``names[i]``, e.g. ``file:line``)."""
    if max_new_tokens < 1:
        raise DataError(f"max_new_tokens={max_new_tokens}: must be at least 1")
    for i, prompt in enumerate(prompts):
        name = names[i] if names else f"prompt {i}"
        if len(prompt) == 0:
            raise DataError(f"{name}: empty prompt (it must hold at least one token)")
        if len(prompt) + max_new_tokens > max_len:
            raise DataError(
                f"{name}: {len(prompt)} prompt tokens + max_new_tokens {max_new_tokens} exceed the model's "
                f"context of {max_len} tokens"
            )


def prefill_width(longest: int, max_new_tokens: int, max_len: int) -> int:
    """The padded prompt length: a power of two (at least MIN_PREFILL) that still leaves room."""
    bucket = max(MIN_PREFILL, 1 << (longest - 1).bit_length())
    return max(longest, min(bucket, max_len - max_new_tokens + 1))


def left_pad(prompts: Sequence[Sequence[int]], rows: int, width: int, pad_id: int) -> dict[str, np.ndarray]:
    """``tokens, segment_ids, positions`` ``[rows, width]``: prompts right-aligned, padding marked 0.
    Rows beyond the prompts hold a single padding token (outputs discarded)."""
    tokens = np.full((rows, width), pad_id, np.int32)
    segment_ids = np.zeros((rows, width), np.int32)
    positions = np.zeros((rows, width), np.int32)
    for r in range(rows):
        prompt = prompts[r] if r < len(prompts) else [pad_id]
        n = len(prompt)
        tokens[r, width - n :] = prompt
        segment_ids[r, width - n :] = 1
        positions[r, width - n :] = np.arange(n)
    return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions}


def _unrolled(model: Transformer, mesh: Mesh, rules: Rules) -> tuple[Transformer, Callable[[Any], Any]]:
    """The same model with its layers unrolled, and the compiled function that unstacks a scanned
    model's parameters to match (a copy, placed by the unrolled model's logical axes).

    Decoding is memory-bound: a step reads every weight once. In a scanned stack each step also
    copies every layer's weights out of the stacked arrays before using them; unrolled, the
    matmuls read them where they lie (BENCHMARKS.md, generation).
    """
    unrolled = type(model)(dataclasses.replace(model.cfg, scan_layers=False))
    boxed = jax.eval_shape(unrolled.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
    unstack = functools.partial(unstack_layers, n_layers=model.cfg.n_layers)
    return unrolled, jax.jit(unstack, out_shardings=shardings_from_boxed(boxed, mesh, rules))


class Generator:
    """Batched generation for one model and its parameters.

    `batch_size` rows are decoded together (more prompts go in several batches; fewer are padded
    with dummy rows), in a cache of `max_len` slots (by default the model's context).
    ``traces`` counts how often each function was traced, i.e. compiled. A model with scanned
    layers decodes with them unrolled, from its own unstacked copy of the layers' parameters.
    """

    def __init__(
        self,
        model: Transformer,
        params: Any,
        mesh: Mesh,
        rules: Rules,
        batch_size: int,
        eos_id: int,
        pad_id: int = 0,
        max_len: int | None = None,
    ) -> None:
        self._layout: Callable[[Any], Any] | None = None  # scanned parameters -> the decoding model's
        if model.cfg.scan_layers:
            model, self._layout = _unrolled(model, mesh, rules)
        self.model, self.mesh, self.rules = model, mesh, rules
        self.load(params)
        self.batch_size, self.eos_id, self.pad_id = batch_size, eos_id, pad_id
        self.max_len = max_len or model.cfg.max_seq_len
        self.traces: collections.Counter[str] = collections.Counter()

        def named(names: Sequence[str | None], shape: Sequence[int]) -> NamedSharding:
            return NamedSharding(mesh, mesh_axes_for(names, shape, mesh, rules))

        shapes = jax.eval_shape(lambda: KVCache.zeros(model.cfg, batch_size, self.max_len))
        layer_sharding = named(KVCache.AXES, shapes.k[0].shape)
        cache_shardings = KVCache(
            k=(layer_sharding,) * len(shapes.k),
            v=(layer_sharding,) * len(shapes.v),
            segment_ids=named(("batch", "length"), shapes.segment_ids.shape),
            index=NamedSharding(mesh, PartitionSpec()),
        )
        rows = named(("batch",), (batch_size,))
        self._rows = named(("batch", "length"), (batch_size, 1))  # any width: the length is unsplit
        self._cache_shardings, self._batch_rows = cache_shardings, rows
        self._new_cache = jax.jit(
            lambda: KVCache.zeros(model.cfg, batch_size, self.max_len), out_shardings=cache_shardings
        )
        out = (rows, cache_shardings)
        self._prefill = jax.jit(self._prefill_fn, out_shardings=out, donate_argnames="cache")
        self._step = jax.jit(self._step_fn, out_shardings=out, donate_argnames="cache")

    def load(self, params: Any) -> None:
        """Decodes with `params` from now on (the trained model's layout; online RL's new policy)."""
        self.params = self._layout(params) if self._layout else params

    def _traced(self, name: str, fn: Callable[[], Any]) -> Any:
        self.traces[name] += 1
        with activation_rules(self.rules), jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
            return fn()

    def _prefill_fn(self, params, cache, tokens, segment_ids, positions, seed, sampling):
        def run():
            logits, new_cache = self.model.apply(
                {"params": params}, tokens, segment_ids, positions, cache, method=Transformer.decode
            )
            return sample(logits, jax.random.fold_in(jax.random.key(seed), 0), **sampling), new_cache

        return self._traced("prefill", run)

    def _step_fn(self, params, cache, tokens_B, lengths_B, seed, t, sampling):
        """Feeds the tokens sampled at step ``t - 1`` (RoPE positions ``lengths + t - 1``) and
        samples step ``t``'s. Positions are computed here rather than on the host: every array op
        outside the step is one more dispatch per token."""

        def run():
            positions_B = lengths_B + t - 1
            logits, new_cache = self.model.apply(
                {"params": params},
                tokens_B[:, None],
                jnp.ones_like(tokens_B)[:, None],
                positions_B[:, None],
                cache,
                method=Transformer.decode,
            )
            return sample(logits, jax.random.fold_in(jax.random.key(seed), t), **sampling), new_cache

        return self._traced("step", run)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sampling: Sampling = GREEDY,
        on_token: Callable[[int, int], None] | None = None,
        names: Sequence[str] | None = None,
    ) -> list[Generation]:
        """One `Generation` per prompt (token ids). Each row stops at EOS or after `max_new_tokens`.

        ``on_token(prompt_index, token)`` is called for each new token as soon as it is known
        (streaming). A fixed ``sampling.seed`` reproduces the samples for the same prompts and batch.
        """
        check_prompts(prompts, max_new_tokens, self.max_len, names)
        results: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            notify = None if on_token is None else (lambda r, tok, s=start: on_token(s + r, tok))
            results += self._generate_batch(chunk, max_new_tokens, sampling, notify, start)
        return results

    def _generate_batch(self, prompts, max_new_tokens, sampling, on_token, batch_index) -> list[Generation]:
        width = prefill_width(max(len(p) for p in prompts), max_new_tokens, self.max_len)
        host = left_pad(prompts, self.batch_size, width, self.pad_id)
        batch = {k: jax.device_put(v, self._rows) for k, v in host.items()}
        settings = sampling.arrays()
        seed = jnp.int32((sampling.seed * 1_000_003 + batch_index) % 2**31)
        lengths = jnp.asarray([len(p) for p in prompts] + [1] * (self.batch_size - len(prompts)), jnp.int32)
        next_tokens, cache = self._prefill(
            self.params, self._new_cache(), batch["tokens"], batch["segment_ids"], batch["positions"], seed, settings
        )
        outputs: list[list[int]] = [[] for _ in prompts]
        reasons = ["length"] * len(prompts)
        active = set(range(len(prompts)))
        for t in range(max_new_tokens):
            tokens = next_tokens
            if t + 1 < max_new_tokens:
                # Dispatch the next step before reading this one's tokens: the device works while
                # the host handles them.
                next_tokens, cache = self._step(self.params, cache, tokens, lengths, seed, np.int32(t + 1), settings)
            values = np.asarray(tokens)
            for r in sorted(active):
                token = int(values[r])
                if token == self.eos_id:
                    reasons[r] = "eos"
                    active.discard(r)
                    continue
                outputs[r].append(token)
                if on_token is not None:
                    on_token(r, token)
            if not active:
                break
        return [Generation(tokens, reason) for tokens, reason in zip(outputs, reasons, strict=True)]


@functools.lru_cache(maxsize=8)
def _full_forward(cfg: ModelConfig) -> Callable[..., Array]:
    """The jitted full forward of a model config, kept so that repeated calls compile once."""
    model = Transformer(cfg)
    return jax.jit(lambda params, tokens, segment_ids: model.apply({"params": params}, tokens, segment_ids))


def greedy_without_cache(
    model: Transformer, params: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, max_len: int
) -> list[list[int]]:
    """Greedy decoding that recomputes the whole forward pass for every new token (no cache).

    The reference that cached decoding must match, and the baseline of benchmarks/generate.py.
    Rows are right-padded to `max_len` so that one compiled forward serves every step; EOS is not
    treated specially.
    """
    check_prompts(prompts, max_new_tokens, max_len)
    rows = len(prompts)
    tokens = np.zeros((rows, max_len), np.int32)
    for r, prompt in enumerate(prompts):
        tokens[r, : len(prompt)] = prompt
    lengths = np.array([len(p) for p in prompts])
    forward = _full_forward(model.cfg)
    outputs: list[list[int]] = [[] for _ in prompts]
    for t in range(max_new_tokens):
        segment_ids = (np.arange(max_len)[None, :] < (lengths + t)[:, None]).astype(np.int32)
        logits = np.asarray(forward(params, tokens, segment_ids))
        for r in range(rows):
            token = int(np.argmax(logits[r, lengths[r] + t - 1]))
            outputs[r].append(token)
            tokens[r, lengths[r] + t] = token
    return outputs


def read_prompts(path: str | Path) -> tuple[list[str], list[str]]:
    """``(prompts, names)`` from a text file (one prompt per line) or JSONL (``{"prompt": ...}`` per
    line); each name is the prompt's ``file:line``."""
    if str(path).endswith(".jsonl"):
        records = list(jsonl_records(str(path)))
        texts, names = [text_field(record, "prompt", where) for where, record in records], [w for w, _ in records]
    else:
        try:
            texts = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror})") from None
        names = [f"{path}:{lineno}" for lineno in range(1, len(texts) + 1)]
    if not texts:
        raise DataError(f"{path}: no prompts")
    return texts, names


def read_chat_prompts(path: str | Path) -> tuple[list[list[Message]], list[str]]:
    """``(conversations, names)`` for chat mode (`lmx generate --chat`): each line of a text file
    is one user message; each JSONL record a chat prompt as lmx.data.chat reads them (``prompt``
    with an optional ``system``, or ``messages``). A trailing assistant message is an SFT record's
    reference answer and is left out, as `lmx eval --responses` does; its ``response`` is ignored."""
    if not str(path).endswith(".jsonl"):
        texts, names = read_prompts(path)
        conversations = [[Message("user", text)] for text in texts]
    else:
        conversations, names = [], []
        for where, record in jsonl_records(str(path)):
            messages = parse_messages(record, where)
            if messages[-1].role == "assistant":
                messages = messages[:-1]
            conversations.append(messages)
            names.append(where)
        if not conversations:
            raise DataError(f"{path}: no prompts")
    check_chat_prompts(conversations, names)
    return conversations, names


def check_chat_prompts(conversations: Sequence[Sequence[Message]], names: Sequence[str]) -> None:
    """Raises DataError naming the first conversation with nothing to answer. The template's own
    tokens would make any prompt non-empty, so an empty one is caught here rather than by
    `check_prompts`."""
    for messages, name in zip(conversations, names, strict=True):
        if not any(m.content for m in messages):
            raise DataError(f"{name}: empty prompt (no message to answer)")


class TextStream:
    """Prints generated text as tokens arrive; a character split over byte tokens waits until whole."""

    def __init__(self, tokenizer: Tokenizer, prompt: str) -> None:
        self.tokenizer, self.tokens, self.printed = tokenizer, [], ""
        print(prompt, end="", flush=True)

    def add(self, token: int) -> None:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens)
        if not text.endswith("\ufffd"):
            print(text[len(self.printed) :], end="", flush=True)
            self.printed = text

    def finish(self, reason: str) -> None:
        text = self.tokenizer.decode(self.tokens)
        print(text[len(self.printed) :])
        print(f"[{len(self.tokens)} tokens, stopped by {reason}]", file=sys.stderr)
