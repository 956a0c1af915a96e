"""What the Hugging Face interop tests (tests/test_hf_*.py) share: random lmx runs and transformers
models, and the logits of both.

Models are random and small (built here: no hub), with norm scales perturbed away from 1 and a wide
initialisation (logits of standard deviation ~0.9), so that a transposed or misplaced weight shows.
"""

import json
import shutil
import sysconfig
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx.config import Config, DataConfig, ModelConfig
from lmx.data.corpus import Corpus
from lmx.hf.importer import write_params_checkpoint
from lmx.model.transformer import Transformer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 1024  # the conftest tokenizer's
SEQ = 520  # "at least 512 tokens"
EMAIL_MESSAGE = Path(sysconfig.get_paths()["stdlib"]) / "email" / "message.py"

# The model fields that define the function a model computes (init_std, layouts and dtypes do not).
FUNCTION_KEYS = (
    "vocab_size",
    "d_model",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "d_ff",
    "max_seq_len",
    "rope_theta",
    "norm_eps",
    "qk_norm",
    "mlp",
    "tie_embeddings",
    "rope_scaling",
    "rope_scaling_factor",
    "rope_low_freq_factor",
    "rope_high_freq_factor",
    "rope_original_max_len",
)


def perturbed(params, seed: int):
    """Norm scales away from 1 (a norm applied to the wrong tensor, or not at all, then shows)."""
    rng = np.random.default_rng(seed)

    def scale(path, x):
        x = np.asarray(x)
        if "scale" in jax.tree_util.keystr(path):
            return x * (1 + 0.5 * rng.standard_normal(x.shape)).astype(np.float32)
        return x

    return jax.tree_util.tree_map_with_path(scale, params)


def random_run(directory: Path, tokenizer, vocab_size: int = VOCAB, **model) -> tuple[Path, Config, dict]:
    """An lmx run directory holding a random model at step 0 (its parameters only)."""
    shapes = dict(vocab_size=vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, max_seq_len=1024)
    model_cfg = ModelConfig(**{**shapes, "init_std": 0.1, **model})
    cfg = Config(model=model_cfg, data=DataConfig(seq_len=64))
    init = jax.jit(Transformer(model_cfg).init)(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"]
    params = perturbed(nn.unbox(init), seed=0)
    directory.mkdir(parents=True)
    write_params_checkpoint(cfg, params, directory)
    (directory / "config.json").write_text(cfg.to_json())
    shutil.copyfile(tokenizer.path, directory / "tokenizer.model")
    return directory, cfg, params


def hf_logits(hf_dir: Path, ids: list[int]) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.numpy()[0]


def lmx_logits(model_cfg: ModelConfig, params, ids: list[int]) -> np.ndarray:
    apply = jax.jit(lambda p, x: Transformer(model_cfg).apply({"params": p}, x))
    return np.asarray(apply(params, jnp.asarray([ids])))[0]


@pytest.fixture(scope="module")
def text_ids(tokenizer) -> list[int]:
    ids = tokenizer.encode(EMAIL_MESSAGE.read_text())
    assert len(ids) >= SEQ
    return ids[:SEQ]


@pytest.fixture(scope="module")
def exported_tokenizer(tokenizer, tmp_path_factory) -> Path:
    """The conftest's SentencePiece model as transformers' tokenizer files."""
    from lmx.hf.tokenizer_files import write_tokenizer_files

    out = tmp_path_factory.mktemp("hf_tokenizer")
    write_tokenizer_files(tokenizer, out, max_length=1024)
    return out


def transformers_model(
    kind: str, directory: Path, exported_tokenizer: Path, seed: int = 0, dtype=None, **overrides
) -> Path:
    """A random transformers model saved with `save_pretrained`, with lmx's exported tokenizer."""
    torch.manual_seed(seed)
    shapes = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.1,
    )
    config_class = {
        "llama": transformers.LlamaConfig,
        "qwen3": transformers.Qwen3Config,
        "mistral": transformers.MistralConfig,
    }
    config = config_class[kind](**{**shapes, **overrides})
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.mul_(1 + 0.5 * torch.randn_like(parameter))
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(exported_tokenizer / name, directory / name)
    return directory


def byte_level_tokenizer(directory: Path) -> Path:
    """A byte-level BPE tokenizer.json like Llama 3's or Qwen's (no BOS, chat roles as special
    tokens), trained here with `tokenizers` on the built-in corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    texts = [d.text for d in Corpus.parse("stdlib").documents("train")][:200]
    backend.train_from_iterator(texts, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    backend.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory
