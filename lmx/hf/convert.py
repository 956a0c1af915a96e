"""lmx's decoder and Hugging Face's Llama / Qwen3 causal LMs: configs and weights, both ways.

The two compute the same function (checked against `transformers`' logits in tests/test_hf.py):
pre-norm blocks with RMSNorm ``w * x * rsqrt(mean(x^2) + eps)`` in float32, SwiGLU
``down(silu(gate(x)) * up(x))``, attention scaled by ``head_dim ** -0.5``, and RoPE pairing element
i with i + head_dim / 2 (transformers' ``rotate_half``; `lmx.model.layers.rope` splits the same
halves), with frequencies ``theta ** (-2i / head_dim)``. Qwen3 adds per-head RMSNorm of queries and
keys before RoPE, which is lmx's ``model.qk_norm``. So the weights map one to one, transposed from
torch's ``[out, in]`` Linear layout and split into heads; no permutation.

Weights here are NumPy arrays keyed by transformers' names (``model.layers.0.self_attn.q_proj.weight``)
on one side and lmx's unrolled parameter tree (``layer_0``, ...) on the other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmx.config import ModelConfig
from lmx.errors import ConfigError
from lmx.model.parametrization import forward_multipliers

# The transformers architectures lmx's model computes exactly (anything else is refused by name).
SUPPORTED_TYPES = ("llama", "mistral", "qwen3")


def hf_config(cfg: ModelConfig, bos_id: int, eos_id: int, pad_id: int, dtype: str) -> dict[str, Any]:
    """The ``config.json`` of `cfg` as a transformers model: Qwen3 with QK-norm, Llama without."""
    check_exportable(cfg)
    qwen = cfg.qk_norm
    config: dict[str, Any] = {
        "architectures": ["Qwen3ForCausalLM" if qwen else "LlamaForCausalLM"],
        "model_type": "qwen3" if qwen else "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        # Both spellings: transformers v5 reads rope_parameters, earlier versions rope_theta and
        # rope_scaling.
        "rope_theta": cfg.rope_theta,
        "rope_parameters": _rope_parameters(cfg),
        "rope_scaling": None if cfg.rope_scaling == "none" else _rope_parameters(cfg),
        "bos_token_id": bos_id if bos_id >= 0 else None,
        "eos_token_id": eos_id if eos_id >= 0 else None,
        "pad_token_id": pad_id if pad_id >= 0 else None,
        "dtype": dtype,
        "torch_dtype": dtype,
        "use_cache": True,
    }
    if qwen:
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
    else:
        config.update(mlp_bias=False, pretraining_tp=1)
    return config


def check_exportable(cfg: ModelConfig) -> None:
    """Refuses, naming the field, a model neither Llama nor Qwen3 computes exactly."""
    multipliers = forward_multipliers(cfg)
    if (multipliers.query, multipliers.readout, multipliers.residual) != (1.0, 1.0, 1.0):
        raise ConfigError(
            f"model.parametrization={cfg.parametrization!r} away from its base shape multiplies queries, residual "
            "branches or logits by constants that Llama and Qwen3 do not have"
        )
    if cfg.mlp != "swiglu":
        raise ConfigError(
            f"model.mlp={cfg.mlp!r}: Llama and Qwen3 use a SwiGLU MLP; a {cfg.mlp} model has no exact Hugging Face "
            "counterpart"
        )


def _rope_fields(hf: dict[str, Any], where: str) -> dict[str, Any]:
    """ModelConfig's RoPE fields from transformers v5's ``rope_parameters`` or the older ``rope_theta``
    and ``rope_scaling``: unscaled, or Llama 3's scaling; any other scaling is refused by name."""
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or rope  # transformers, too, reads rope_scaling first
    key = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
    kind = scaling.get("rope_type", scaling.get("type")) or "default"
    fields: dict[str, Any] = {"rope_theta": float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))}
    if kind == "default":
        return fields
    if kind != "llama3":
        raise ConfigError(f"{where}: {key}.rope_type={kind!r}: lmx implements unscaled RoPE and Llama 3's scaling")
    if scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError(f"{where}: {key}.partial_rotary_factor: lmx rotates whole heads")
    names = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [name for name in names if name not in scaling]
    if missing:
        raise ConfigError(f"{where}: {key} of rope_type 'llama3' lacks {', '.join(missing)}")
    return {
        **fields,
        "rope_scaling": "llama3",
        "rope_scaling_factor": float(scaling["factor"]),
        "rope_low_freq_factor": float(scaling["low_freq_factor"]),
        "rope_high_freq_factor": float(scaling["high_freq_factor"]),
        "rope_original_max_len": int(scaling["original_max_position_embeddings"]),
    }


def _rope_parameters(cfg: ModelConfig) -> dict[str, Any]:
    if cfg.rope_scaling == "none":
        return {"rope_type": "default", "rope_theta": cfg.rope_theta}
    return {
        "rope_type": "llama3",
        "rope_theta": cfg.rope_theta,
        "factor": cfg.rope_scaling_factor,
        "low_freq_factor": cfg.rope_low_freq_factor,
        "high_freq_factor": cfg.rope_high_freq_factor,
        "original_max_position_embeddings": cfg.rope_original_max_len,
    }


def model_config_from_hf(hf: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """The ModelConfig that computes a transformers Llama, Mistral or Qwen3 model exactly (`hf` is its
    config.json; a Mistral's missing sliding_window means transformers' default window).

    Anything lmx's model cannot express fails with the key named: another architecture, biases,
    sliding windows, scaled RoPE, another activation.
    """
    kind = hf.get("model_type")
    if kind not in SUPPORTED_TYPES:
        raise ConfigError(f"{where}: model_type={kind!r} is not supported (lmx imports {', '.join(SUPPORTED_TYPES)})")

    def refuse(key: str, why: str) -> None:
        raise ConfigError(f"{where}: {key}={hf.get(key)!r}: {why}")

    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            refuse(key, "lmx's projections have no biases")
    if hf.get("hidden_act", "silu") != "silu":
        refuse("hidden_act", "lmx's SwiGLU uses silu")
    # transformers' MistralConfig defaults to a 4096-token window when config.json names none.
    window = hf.get("sliding_window", 4096)
    if kind == "mistral" and window is not None:
        default = "" if "sliding_window" in hf else " (transformers' default: config.json names none)"
        raise ConfigError(f"{where}: sliding_window={window!r}{default}: lmx attends to the whole context")
    if kind == "qwen3":
        if hf.get("use_sliding_window"):
            refuse("use_sliding_window", "lmx attends to the whole context (no sliding window)")
        if any(t != "full_attention" for t in hf.get("layer_types") or []):
            refuse("layer_types", "lmx attends to the whole context in every layer")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [key for key in required if not isinstance(hf.get(key), int)]
    if missing:
        raise ConfigError(f"{where}: no integer {', '.join(missing)}")
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        head_size=0 if head_dim * heads == hf["hidden_size"] else head_dim,
        d_ff=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        **_rope_fields(hf, where),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        qk_norm=kind == "qwen3",
        mlp="swiglu",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        scan_layers=True,
    )


def _layer_names(i: int) -> dict[str, str]:
    layer = f"model.layers.{i}"
    return {
        "query": f"{layer}.self_attn.q_proj.weight",
        "key": f"{layer}.self_attn.k_proj.weight",
        "value": f"{layer}.self_attn.v_proj.weight",
        "out": f"{layer}.self_attn.o_proj.weight",
        "query_norm": f"{layer}.self_attn.q_norm.weight",
        "key_norm": f"{layer}.self_attn.k_norm.weight",
        "attn_norm": f"{layer}.input_layernorm.weight",
        "mlp_norm": f"{layer}.post_attention_layernorm.weight",
        "gate": f"{layer}.mlp.gate_proj.weight",
        "up": f"{layer}.mlp.up_proj.weight",
        "down": f"{layer}.mlp.down_proj.weight",
    }


def to_hf_tensors(params: dict[str, Any], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """transformers' state dict of lmx parameters in the unrolled layout (``layer_0``, ...)."""
    d = cfg.d_model
    out = {
        "model.embed_tokens.weight": params["embed"]["embedding"],
        "model.norm.weight": params["final_norm"]["scale"],
    }
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = params["unembed"]["kernel"].T
    for i in range(cfg.n_layers):
        layer, names = params[f"layer_{i}"], _layer_names(i)
        attn, mlp = layer["attn"], layer["mlp"]
        for proj in ("query", "key", "value"):  # [D, heads, E] -> [heads * E, D]
            out[names[proj]] = attn[proj]["kernel"].reshape(d, -1).T
        out[names["out"]] = attn["out"]["kernel"].reshape(-1, d).T  # [H, E, D] -> [D, H * E]
        if cfg.qk_norm:
            out[names["query_norm"]] = attn["query_norm"]["scale"]
            out[names["key_norm"]] = attn["key_norm"]["scale"]
        out[names["attn_norm"]] = layer["attn_norm"]["scale"]
        out[names["mlp_norm"]] = layer["mlp_norm"]["scale"]
        for proj in ("gate", "up", "down"):
            out[names[proj]] = mlp[proj]["kernel"].T
    return {name: np.ascontiguousarray(array) for name, array in out.items()}


def from_hf_tensors(tensors: dict[str, np.ndarray], cfg: ModelConfig, where: str) -> dict[str, Any]:
    """lmx parameters (unrolled layout) from transformers' state dict. Every tensor lmx's model has
    must be there with its shape; tensors left over (other than rotary caches) are refused by name."""
    used: set[str] = set()
    d, e = cfg.d_model, cfg.head_dim

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise ConfigError(f"{where}: no tensor {name!r} (expected for this config)")
        array = tensors[name]
        if tuple(array.shape) != shape:
            raise ConfigError(f"{where}: tensor {name!r} has shape {tuple(array.shape)}, expected {shape}")
        used.add(name)
        return array

    h, k, f, v = cfg.n_heads, cfg.n_kv_heads, cfg.d_ff, cfg.vocab_size
    params: dict[str, Any] = {
        "embed": {"embedding": take("model.embed_tokens.weight", (v, d))},
        "final_norm": {"scale": take("model.norm.weight", (d,))},
    }
    if not cfg.tie_embeddings:
        params["unembed"] = {"kernel": take("lm_head.weight", (v, d)).T}
    for i in range(cfg.n_layers):
        names = _layer_names(i)
        attn = {
            "query": {"kernel": take(names["query"], (h * e, d)).T.reshape(d, h, e)},
            "key": {"kernel": take(names["key"], (k * e, d)).T.reshape(d, k, e)},
            "value": {"kernel": take(names["value"], (k * e, d)).T.reshape(d, k, e)},
            "out": {"kernel": take(names["out"], (d, h * e)).T.reshape(h, e, d)},
        }
        if cfg.qk_norm:
            attn["query_norm"] = {"scale": take(names["query_norm"], (e,))}
            attn["key_norm"] = {"scale": take(names["key_norm"], (e,))}
        params[f"layer_{i}"] = {
            "attn": attn,
            "attn_norm": {"scale": take(names["attn_norm"], (d,))},
            "mlp_norm": {"scale": take(names["mlp_norm"], (d,))},
            "mlp": {
                "gate": {"kernel": take(names["gate"], (f, d)).T},
                "up": {"kernel": take(names["up"], (f, d)).T},
                "down": {"kernel": take(names["down"], (d, f)).T},
            },
        }
    # A tied checkpoint may still carry lm_head (a copy of the embedding); rotary caches are buffers.
    extra = sorted(n for n in tensors if n not in used and n != "lm_head.weight" and "rotary_emb" not in n)
    if extra:
        shown = ", ".join(extra[:3]) + (" ..." if len(extra) > 3 else "")
        raise ConfigError(f"{where}: tensors lmx's model has no place for: {shown} (another architecture?)")
    return params


def stack_layers(params: dict[str, Any], n_layers: int) -> dict[str, Any]:
    """The scanned layout (``layers``, stacked on axis 0) of unrolled parameters."""
    import jax

    layers = [params[f"layer_{i}"] for i in range(n_layers)]
    out = {k: v for k, v in params.items() if not k.startswith("layer_")}
    out["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
    return out
