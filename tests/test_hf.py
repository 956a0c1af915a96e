"""Hugging Face interop against `transformers` itself: exported lmx models and imported transformers
models compute the same logits, tokenizers give the same ids, and runs go both ways.

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

from lmx.cli import main
from lmx.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lmx.data.chat import ChatTemplate, Message
from lmx.data.corpus import Corpus
from lmx.data.hf_tokenizer import HFTokenizer
from lmx.data.tokenizer import load_tokenizer
from lmx.errors import ConfigError
from lmx.hf import export_hf, import_hf
from lmx.hf.importer import write_checkpoint
from lmx.infer.generate import Generator
from lmx.infer.runs import load_run
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


def random_run(directory: Path, tokenizer, **model) -> tuple[Path, Config, dict]:
    """An lmx run directory holding a random model (as `lmx train` writes one, at step 0)."""
    shapes = dict(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, max_seq_len=1024)
    model_cfg = ModelConfig(**{**shapes, "init_std": 0.1, **model})
    cfg = Config(model=model_cfg, data=DataConfig(seq_len=64))
    init = jax.jit(Transformer(model_cfg).init)(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"]
    params = perturbed(nn.unbox(init), seed=0)
    directory.mkdir(parents=True)
    write_checkpoint(cfg, params, directory)
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


EXPORTS = {
    "gqa-tied-scanned": {},
    "mha-untied-unrolled-llama3rope": dict(
        n_kv_heads=4, tie_embeddings=False, scan_layers=False, rope_scaling="llama3", rope_original_max_len=64
    ),
    "mqa-qknorm-tied": dict(n_kv_heads=1, qk_norm=True),
    "gqa-qknorm-untied-unrolled-head32": dict(qk_norm=True, head_size=32, tie_embeddings=False, scan_layers=False),
}


@pytest.mark.parametrize("variant", EXPORTS)
def test_exported_model_gives_lmx_logits_and_greedy_tokens_in_transformers(variant, tokenizer, text_ids, tmp_path):
    run_dir, cfg, params = random_run(tmp_path / "run", tokenizer, **EXPORTS[variant])
    out = export_hf(run_dir, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM" if cfg.model.qk_norm else "LlamaForCausalLM"]
    assert ("lm_head.weight" in _tensor_names(out)) == (not cfg.model.tie_embeddings)

    ours = lmx_logits(cfg.model, params, text_ids)
    theirs = hf_logits(out, text_ids)
    print(f"{variant}: max |logit difference| {np.abs(ours - theirs).max():.2e} over {len(text_ids)} tokens")
    assert ours.std() > 0.5  # logits that say something
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)

    # Greedy decoding, 32 tokens: lmx's KV-cache generator against transformers' generate.
    prompt = text_ids[:40]
    run = load_run(run_dir, devices=jax.devices()[:1])
    generator = Generator(run.model, run.params, run.mesh, run.cfg.mesh.rules, 1, tokenizer.eos_id, 0)
    (ours_gen,) = generator.generate([prompt], 32)
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        theirs_gen = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt) :]
    assert len(ours_gen.tokens) == 32 and list(ours_gen.tokens) == theirs_gen.tolist()


def _tensor_names(hf_dir: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(hf_dir / "model.safetensors"), "np") as f:
        assert f.metadata() == {"format": "pt"}
        return set(f.keys())


def test_bfloat16_export_is_the_float32_one_rounded(tokenizer, text_ids, tmp_path):
    run_dir, cfg, params = random_run(tmp_path / "run", tokenizer)
    out = export_hf(run_dir, tmp_path / "hf", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    from safetensors.numpy import load_file

    saved = load_file(str(out / "model.safetensors"))
    embedding = np.asarray(params["embed"]["embedding"])
    assert saved["model.embed_tokens.weight"].dtype.name == "bfloat16"
    np.testing.assert_array_equal(
        saved["model.embed_tokens.weight"], embedding.astype(saved["model.embed_tokens.weight"].dtype)
    )
    theirs = hf_logits(out, text_ids[:64])
    assert np.abs(theirs - lmx_logits(cfg.model, params, text_ids[:64])).max() < 0.1


def test_import_of_an_export_gives_bit_identical_parameters(tokenizer, tmp_path):
    run_dir, cfg, _ = random_run(
        tmp_path / "run", tokenizer, n_kv_heads=1, qk_norm=True, tie_embeddings=False, rope_scaling="llama3"
    )
    back = import_hf(export_hf(run_dir, tmp_path / "hf"), tmp_path / "back")
    before = load_run(run_dir, devices=jax.devices()[:1])
    after = load_run(back, devices=jax.devices()[:1])
    for key in FUNCTION_KEYS:
        assert getattr(after.cfg.model, key) == getattr(cfg.model, key), key
    for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(before.params) == jax.tree.structure(after.params)


# ---- tokenizers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_tokenizer(tokenizer, tmp_path_factory) -> Path:
    from lmx.hf.tokenizer_files import write_tokenizer_files

    out = tmp_path_factory.mktemp("hf_tokenizer")
    write_tokenizer_files(tokenizer, out, max_length=1024)
    return out


def test_auto_tokenizer_gives_lmx_ids_on_the_held_out_corpus(tokenizer, exported_tokenizer):
    """Every held-out document of the built-in corpus (long indentation runs, non-ASCII text), and
    text it lacks (tab-indented code, characters outside the vocabulary): transformers' ids are
    lmx's, and decode gives the text back."""
    hf = transformers.AutoTokenizer.from_pretrained(exported_tokenizer)
    documents = [d.text for d in Corpus.parse("stdlib").documents("validation")]
    assert any(" " * 16 in d for d in documents) and any(any(ord(c) > 127 for c in d) for d in documents)
    documents += [
        "class A:\n\tdef f(self):\n\t\treturn {'tab':\t1}\n\n\n",
        "x = 1" + " " * 37 + "# far\r\n  \t  trailing   \n",
        "naïve café — 数字 🙂 ünïcode",  # byte fallback for what the vocabulary lacks
    ]
    specials = ("<s>", "</s>", "<pad>", "<unk>")
    for text in documents:
        ids = tokenizer.encode(text)
        # Hugging Face tokenizers read a special token's spelling in text as that token; lmx reads it as
        # text. With split_special_tokens they agree everywhere (docs/USER_GUIDE.md, Hugging Face).
        assert hf(text, split_special_tokens=True)["input_ids"] == ids
        if not any(s in text for s in specials):
            assert hf(text)["input_ids"] == ids
        assert hf.decode(ids) == text
    assert hf.bos_token_id == tokenizer.bos_id and hf.eos_token_id == tokenizer.eos_id
    assert hf.pad_token_id == tokenizer.pad_id


def test_exported_chat_template_renders_lmx_prompts_and_responses(tokenizer, exported_tokenizer):
    hf = transformers.AutoTokenizer.from_pretrained(exported_tokenizer)
    template = ChatTemplate(tokenizer)
    messages = [Message("system", "be brief"), Message("user", "copy 3 1 4"), Message("assistant", "3 1 4")]
    as_dicts = [{"role": m.role, "content": m.content} for m in messages]
    prompt = hf.apply_chat_template(as_dicts[:2], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(prompt) == template.prompt_ids(messages[:2]).tolist()
    full = hf.apply_chat_template(as_dicts, tokenize=True, return_dict=False)
    expected = [*template.prompt_ids(messages[:2]).tolist(), *template.response_ids("3 1 4").tolist()]
    assert list(full) == expected
    # An earlier assistant turn inside a prompt is a closed message, as lmx renders it.
    longer = hf.apply_chat_template(
        [*as_dicts, as_dicts[1]], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert list(longer) == template.prompt_ids([*messages, messages[1]]).tolist()


def test_lmx_reads_the_exported_tokenizer_json_as_its_own(tokenizer, exported_tokenizer):
    """One interface: the tokenizer.json through `tokenizers` gives the SentencePiece model's ids,
    special ids and byte lengths (so bits per byte agree)."""
    as_json = load_tokenizer(exported_tokenizer / "tokenizer.json")
    assert isinstance(as_json, HFTokenizer)
    text = EMAIL_MESSAGE.read_text() + "\tnon-ASCII: naïve café — ünïcode\n"
    assert as_json.encode(text) == tokenizer.encode(text)
    assert as_json.decode(tokenizer.encode(text)) == text
    assert (as_json.bos_id, as_json.eos_id, as_json.pad_id) == (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    assert as_json.vocab_size == tokenizer.vocab_size
    np.testing.assert_array_equal(as_json.byte_lengths(), tokenizer.byte_lengths())
    assert as_json.piece_id("<|user|>") == tokenizer.piece_id("<|user|>")


# ---- import -------------------------------------------------------------------------------------


def transformers_model(kind: str, directory: Path, exported_tokenizer: Path, seed: int = 0, **overrides) -> Path:
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
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(exported_tokenizer / name, directory / name)
    return directory


IMPORTS = {
    "llama-gqa-untied-theta5e5": (
        "llama",
        dict(tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
    ),
    "qwen3-mqa-tied-head32": ("qwen3", dict(num_key_value_heads=1, head_dim=32, tie_word_embeddings=True)),
    "mistral-no-window": ("mistral", dict(sliding_window=None, tie_word_embeddings=False)),
    # Llama 3's scaled RoPE, its wavelengths split among the three regimes within 520 positions.
    "llama-llama3-rope": (
        "llama",
        dict(
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        ),
    ),
}


@pytest.mark.parametrize("variant", IMPORTS)
def test_imported_transformers_model_gives_its_logits_in_lmx(variant, exported_tokenizer, text_ids, tmp_path):
    kind, overrides = IMPORTS[variant]
    hf_dir = transformers_model(kind, tmp_path / "hf", exported_tokenizer, **overrides)
    run_dir = import_hf(hf_dir, tmp_path / "run", seq_len=64)
    run = load_run(run_dir, devices=jax.devices()[:1])
    assert run.step == 0 and isinstance(run.tokenizer, HFTokenizer)
    assert run.cfg.model.qk_norm == (kind == "qwen3")
    assert run.cfg.model.rope_scaling == ("llama3" if "llama3" in variant else "none")
    theirs = hf_logits(hf_dir, text_ids)
    ours = lmx_logits(run.cfg.model, run.params, text_ids)
    print(f"{variant}: max |logit difference| {np.abs(ours - theirs).max():.2e}, logit std {ours.std():.2f}")
    assert ours.std() > 0.5
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (dict(model_type="gpt2"), "model_type='gpt2'"),
        (dict(attention_bias=True), "attention_bias=True"),
        (dict(mlp_bias=True), "mlp_bias=True"),
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
        (dict(model_type="mistral", sliding_window=4096), "sliding_window=4096"),
        (dict(model_type="qwen3", use_sliding_window=True), "use_sliding_window=True"),
        (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}), "rope_type='yarn'"),
        (dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling.rope_type='linear'"),
        (dict(model_type="qwen3", layer_types=["full_attention", "sliding_attention"]), "layer_types="),
    ],
)
def test_import_refuses_what_lmx_cannot_compute_naming_the_key(overrides, named):
    from lmx.hf.convert import model_config_from_hf

    base = dict(
        model_type="llama",
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model_config_from_hf(base)  # the base itself imports
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace("[", r"\[")):
        model_config_from_hf({**base, **overrides})


def test_cli_refusals_are_one_line_and_leave_nothing(tokenizer, exported_tokenizer, tmp_path, capsys):
    gelu_run, _, _ = random_run(tmp_path / "gelu", tokenizer, mlp="gelu")
    assert main(["export", "hf", str(gelu_run), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.mlp='gelu'" in err and not (tmp_path / "out").exists()

    biased = transformers_model("llama", tmp_path / "biased", exported_tokenizer, attention_bias=True)
    capsys.readouterr()  # transformers' own progress bars
    assert main(["import", "hf", str(biased), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "attention_bias=True" in err and not (tmp_path / "run").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert main(["import", "hf", str(tmp_path / "hf-none"), str(taken)]) == 2
    assert "not empty" in capsys.readouterr().err and (taken / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


# ---- an imported model through lmx: SFT, eval, generate, export again ----------------------------


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


def test_byte_level_tokenizer_counts_bytes_exactly(tmp_path):
    tokenizer = load_tokenizer(byte_level_tokenizer(tmp_path) / "tokenizer.json")
    text = "def f(x):\n\treturn x  # naïve — 数字\n"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and tokenizer.bos_id == -1
    assert int(tokenizer.byte_lengths()[ids].sum()) == len(text.encode())
    assert tokenizer.byte_lengths()[tokenizer.eos_id] == 0


def test_imported_model_fine_tunes_with_sft_evaluates_generates_and_exports_again(tmp_path, capsys):
    from lmx.data.synth import write_synth_tasks
    from lmx.train.loop import train

    hf_dir = byte_level_tokenizer(tmp_path / "hf")
    vocab = load_tokenizer(hf_dir / "tokenizer.json").vocab_size
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.05,
        tie_word_embeddings=True,
    )
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(hf_dir)
    imported = tmp_path / "imported"
    assert main(["import", "hf", str(hf_dir), str(imported), "--seq-len", "64"]) == 0

    # The imported run is a run: evaluation and generation read it.
    assert main(["eval", str(imported), "--text", f"text:{EMAIL_MESSAGE}", "--batches", "2"]) == 0
    assert main(["generate", str(imported), "--prompt", "def ", "--max-new-tokens", "8", "--temperature", "0"]) == 0
    capsys.readouterr()

    synth = write_synth_tasks(tmp_path / "synth", train=64, heldout=16, tasks=("copy",))
    cfg = Config(
        name="sft-imported",
        model=load_run(imported, devices=jax.devices()[:1]).cfg.model,
        data=DataConfig(seq_len=64),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=1),
        train=TrainConfig(batch_size=8, steps=8),
    ).replace(
        **{
            "objective.kind": "sft",
            "objective.init_from": str(imported),
            "objective.train_files": str(synth["sft_train"]),
            "objective.eval_files": str(synth["sft_heldout"]),
            "mesh.data": 1,
            "mesh.fsdp": 1,
            "mesh.tensor": 1,
            "eval.every_steps": 0,
            "eval.final_batches": 1,
            "log.every_steps": 1,
            "log.progress": False,
        }
    )
    sft_dir = tmp_path / "sft"
    train(cfg, sft_dir, devices=jax.devices()[:1])
    losses = [
        json.loads(line)["loss"] for line in (sft_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line
    ]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert (sft_dir / "tokenizer.json").is_file() and (sft_dir / "tokenizer_config.json").is_file()

    out = tmp_path / "sft-hf"
    assert main(["export", "hf", str(sft_dir), str(out), "--dtype", "float32"]) == 0
    run = load_run(sft_dir, devices=jax.devices()[:1])
    ids = run.tokenizer.encode(EMAIL_MESSAGE.read_text())[:128]
    np.testing.assert_allclose(hf_logits(out, ids), lmx_logits(run.cfg.model, run.params, ids), atol=1e-4, rtol=0)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tokenizer(EMAIL_MESSAGE.read_text())["input_ids"] == run.tokenizer.encode(EMAIL_MESSAGE.read_text())
